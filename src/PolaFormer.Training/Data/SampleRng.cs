namespace PolaFormer.Training.Data;

/// <summary>The random streams the pipeline draws from; each (seed, epoch, index) triple gets one per stream so that
/// shuffling, per-sample augmentation and per-batch mixing never share numbers.</summary>
internal enum RngStream : ulong
{
    Sample = 1,
    Shuffle = 2,
    Mixup = 3,
}

/// <summary>
/// A small deterministic generator (xoshiro256**, seeded by SplitMix64 of the key) for the data pipeline.
/// <para>Why not <see cref="Random"/>: its seeded algorithm is an implementation detail of the runtime, and
/// <see cref="HashCode"/> is randomised per process. Here the numbers for sample <c>i</c> of epoch <c>e</c> depend only
/// on (seed, e, i), on every runtime and whatever thread draws them.</para>
/// <para>The distributions mirror the Python calls timm/torchvision make: <see cref="Uniform"/> is
/// <c>random.uniform</c>, <see cref="Integer"/> is <c>random.randint</c> (both ends inclusive).</para>
/// </summary>
public sealed class SampleRng
{
    private ulong _s0, _s1, _s2, _s3;
    private double? _spareNormal;

    /// <summary>A generator whose whole sequence is fixed by <paramref name="key"/>.</summary>
    public SampleRng(ulong key)
    {
        ulong x = key;
        _s0 = SplitMix64(ref x);
        _s1 = SplitMix64(ref x);
        _s2 = SplitMix64(ref x);
        _s3 = SplitMix64(ref x);
    }

    /// <summary>The generator for one (seed, epoch, index) in one stream.</summary>
    internal static SampleRng For(long seed, long epoch, long index, RngStream stream) => new(Key(seed, epoch, index, stream));

    internal static ulong Key(long seed, long epoch, long index, RngStream stream)
    {
        ulong h = Mix((ulong)seed);
        h = Mix(h ^ (ulong)epoch);
        h = Mix(h ^ (ulong)index);
        return Mix(h ^ (ulong)stream);
    }

    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong SplitMix64(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The next 64 random bits (xoshiro256**).</summary>
    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [a, b], as Python's <c>random.uniform(a, b)</c>.</summary>
    public double Uniform(double a, double b) => a + (b - a) * NextDouble();

    /// <summary>True with probability <paramref name="p"/> (the torchvision idiom <c>torch.rand(1) &lt; p</c>).</summary>
    public bool Chance(double p) => NextDouble() < p;

    /// <summary>Uniform integer in [min, max], both inclusive, as Python's <c>random.randint</c>; unbiased.</summary>
    public int Integer(int min, int max)
    {
        if (max < min) throw new ArgumentOutOfRangeException(nameof(max), max, $"max must be at least min = {min}.");
        ulong range = (ulong)((long)max - min) + 1;
        // Lemire's multiply-shift with rejection of the biased low band.
        ulong threshold = (0UL - range) % range;
        while (true)
        {
            ulong r = NextUInt64();
            UInt128 m = (UInt128)r * range;
            if ((ulong)m >= threshold) return (int)(min + (long)(ulong)(m >> 64));
        }
    }

    /// <summary>Standard normal (Box–Muller, both values of each pair used).</summary>
    public double Normal()
    {
        if (_spareNormal is { } spare)
        {
            _spareNormal = null;
            return spare;
        }
        double u1 = 1.0 - NextDouble(); // (0, 1]: keeps the log finite
        double u2 = NextDouble();
        double radius = Math.Sqrt(-2.0 * Math.Log(u1));
        _spareNormal = radius * Math.Sin(2 * Math.PI * u2);
        return radius * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>Normal with the given mean and standard deviation, as Python's <c>random.gauss</c>.</summary>
    public double Gauss(double mean, double std) => mean + std * Normal();

    /// <summary>Gamma(shape, 1) by Marsaglia–Tsang, with the shape &lt; 1 boost.</summary>
    public double Gamma(double shape)
    {
        if (!(shape > 0)) throw new ArgumentOutOfRangeException(nameof(shape), shape, "shape must be positive.");
        if (shape < 1)
        {
            double u = 1.0 - NextDouble();
            return Gamma(shape + 1) * Math.Pow(u, 1.0 / shape);
        }
        double d = shape - 1.0 / 3.0, c = 1.0 / Math.Sqrt(9 * d);
        while (true)
        {
            double x, v;
            do
            {
                x = Normal();
                v = 1 + c * x;
            } while (v <= 0);
            v = v * v * v;
            double u = 1.0 - NextDouble();
            if (u < 1 - 0.0331 * x * x * x * x || Math.Log(u) < 0.5 * x * x + d * (1 - v + Math.Log(v)))
                return d * v;
        }
    }

    /// <summary>Beta(a, b) as the ratio of two gammas (<c>np.random.beta</c>).</summary>
    public double Beta(double a, double b)
    {
        double x = Gamma(a), y = Gamma(b);
        return x / (x + y);
    }

    /// <summary>A uniformly random permutation of 0..n-1 (Fisher–Yates).</summary>
    public int[] Permutation(int n)
    {
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--)
        {
            int j = Integer(0, i);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }
}
