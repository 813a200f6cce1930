using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

/// <summary>How <see cref="PolarityAttention.Compute"/> evaluates the polarity-aware attention.</summary>
public enum PolarityImplementation
{
    /// <summary>
    /// One power per tensor, both streams' key–value products and both normalisers from a single matmul of
    /// the same-signed query. Same numbers as <see cref="Reference"/> within float rounding; the default.
    /// </summary>
    Fast = 0,

    /// <summary>The literal op sequence of the official PyTorch code, kept as the reference.</summary>
    Reference = 1,
}

/// <summary>Precision of the polarity core when the model runs in float16 or bfloat16.</summary>
public enum PolarityPrecision
{
    /// <summary>
    /// The default, and the mixed-precision mode: projections, convolutions and everything else run in the model's
    /// dtype, while the feature maps, the power, the key–value sums and the normalisers run in float32 (inputs are
    /// upcast, the result is cast back). Sums over tokens of <c>|x|^p</c> with p up to 5 overflow float16 quickly —
    /// the linear attention this method builds on is known to produce NaN there.
    /// </summary>
    Float32Core = 0,

    /// <summary>Everything in the inputs' dtype (for comparison; float16 overflows easily).</summary>
    InputDtype = 1,
}

/// <summary>
/// The maths of polarity-aware linear attention (PolaFormer, ICLR 2025) on already-projected, head-split tensors.
/// Every module in this library that uses polarity attention calls <see cref="Compute"/>; this is the one place
/// the formula lives.
/// </summary>
/// <remarks>
/// With <c>φ(x) = relu(x)^p</c>, <c>Q = [φ(q), φ(−q)]</c>, <c>Q̃ = [φ(−q), φ(q)]</c> and <c>K = [φ(k), φ(−k)]</c>
/// (each 2d wide), and v split into halves v₁, v₂:
/// <code>
///   same-signed  x₁ = Q (Kᵀ v₁ / n) / (Q · mean(K) + eps)
///   opposite     x₂ = Q̃ (Kᵀ v₂ / n) / (Q̃ · mean(K) + eps)
///   output       [x₁, x₂]   per head, d wide
/// </code>
/// The opposite-signed query Q̃ is Q with its two halves swapped, so <c>Q̃ M = Q swap(M)</c> where swap exchanges
/// the top and bottom d rows of M. The fast path uses that to get both streams and both normalisers out of one
/// matmul of Q with a small (2d × (d + 2)) right-hand side.
/// </remarks>
public static class PolarityAttention
{
    /// <summary>The epsilon the official code adds to the normaliser.</summary>
    public const double DefaultEpsilon = 1e-6;

    /// <summary>
    /// Polarity-aware attention of already-projected queries, keys and values.
    /// </summary>
    /// <param name="q">Queries, (B, heads, N, d). Already divided by the learnable scale.</param>
    /// <param name="k">Keys, (B, heads, n, d).</param>
    /// <param name="v">Values, (B, heads, n, d); d must be even (each stream takes one half).</param>
    /// <param name="power">The exponent of the feature map, broadcastable to (1, heads, 1, d); in the modules it is
    /// <c>1 + alpha * sigmoid(p)</c>.</param>
    /// <param name="epsilon">Added to the normaliser.</param>
    /// <param name="implementation">Which formulation to evaluate.</param>
    /// <param name="keyMask">Optional (B, n) mask of the keys that take part: 1 for a real token, 0 for padding.
    /// Padding keys contribute nothing and the means run over the real keys only. Without it every key counts.</param>
    /// <param name="precision">For float16/bfloat16 inputs: compute the core in float32 (default) or in the
    /// inputs' dtype. Float32 and float64 inputs are computed as they are.</param>
    /// <returns>(B, heads, N, d) in the dtype of q: the same-signed stream in the first d/2 channels of each head,
    /// the opposite-signed stream in the last d/2.</returns>
    public static Tensor Compute(Tensor q, Tensor k, Tensor v, Tensor power,
        double epsilon = DefaultEpsilon, PolarityImplementation implementation = PolarityImplementation.Fast,
        Tensor? keyMask = null, PolarityPrecision precision = PolarityPrecision.Float32Core)
    {
        Validate(q, k, v, power, keyMask);
        if (precision == PolarityPrecision.Float32Core && q.dtype is ScalarType.Float16 or ScalarType.BFloat16)
        {
            using var scope = NewDisposeScope();
            var lowered = q.dtype;
            var result = Compute(q.to(float32), k.to(float32), v.to(float32), power.to(float32), epsilon, implementation, keyMask);
            return result.to(lowered).MoveToOuterDisposeScope();
        }
        return implementation switch
        {
            PolarityImplementation.Fast => ComputeFast(q, k, v, power, epsilon, keyMask),
            PolarityImplementation.Reference => ComputeReference(q, k, v, power, epsilon, keyMask),
            _ => throw new ArgumentOutOfRangeException(nameof(implementation), implementation,
                "Expected PolarityImplementation.Fast or PolarityImplementation.Reference."),
        };
    }

    /// <summary>The literal op sequence of the official code (models/pola_swin.py, models/pola_pvt.py).</summary>
    internal static Tensor ComputeReference(Tensor q, Tensor k, Tensor v, Tensor power, double epsilon, Tensor? keyMask = null)
    {
        using var scope = NewDisposeScope();
        long n = k.shape[^2];
        Tensor invSqrtN = tensor(Math.Pow(n, -0.5), dtype: q.dtype, device: q.device);
        Tensor meanScale = tensor(1.0, dtype: q.dtype, device: q.device);
        Tensor? keep = null;
        if (keyMask is not null)
        {
            // Padding keys drop out and the 1/n factors count the real keys only.
            keep = keyMask.to_type(q.dtype).unsqueeze(1).unsqueeze(-1);                    // (B, 1, n, 1)
            var real = keep.sum([-2], keepdim: true).clamp_min(ScalarArithmetic.One);       // (B, 1, 1, 1)
            invSqrtN = real.rsqrt();
            meanScale = real.reciprocal().Times(n);
        }

        var qPos = nn.functional.relu(q).pow(power);
        var qNeg = nn.functional.relu(-q).pow(power);
        var kPos = nn.functional.relu(k).pow(power);
        var kNeg = nn.functional.relu(-k).pow(power);

        var qSim = cat([qPos, qNeg], -1);
        var qOpp = cat([qNeg, qPos], -1);
        var kk = cat([kPos, kNeg], -1);
        if (keep is not null) kk = kk * keep;

        var halves = v.chunk(2, -1);
        var (v1, v2) = (halves[0], halves[1]);
        var kMeanT = (kk.mean([-2], keepdim: true) * meanScale).transpose(-2, -1);
        var kT = kk.transpose(-2, -1) * invSqrtN;

        var z = qSim.matmul(kMeanT).Plus(epsilon).reciprocal();
        var kv = kT.matmul(v1 * invSqrtN);
        var xSim = qSim.matmul(kv) * z;
        z = qOpp.matmul(kMeanT).Plus(epsilon).reciprocal();
        kv = kT.matmul(v2 * invSqrtN);
        var xOpp = qOpp.matmul(kv) * z;

        return cat([xSim, xOpp], -1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="Compute"/> followed by the rest of a polarity layer's tail: the heads merged into channels, the
    /// depthwise convolution's term added and the output gate applied, <c>(attention + local) · gate</c>. The layers
    /// call this; on float32 CPU tensors with the fast formulation the readout and the tail are one C# kernel
    /// (<see cref="Kernels.GatedReadout"/>), on float32 CUDA tensors one CUDA kernel where available
    /// (<see cref="Kernels.Cuda.CudaGatedReadout"/>), elsewhere LibTorch operators compute the same expression.
    /// </summary>
    /// <param name="q">Queries, (B, heads, N, d), already divided by the learnable scale.</param>
    /// <param name="k">Keys, (B, heads, n, d).</param>
    /// <param name="v">Values, (B, heads, n, d).</param>
    /// <param name="power">The exponent of the feature map, broadcastable to (1, heads, 1, d).</param>
    /// <param name="local">The depthwise convolution's term per head, (B, heads, N, d).</param>
    /// <param name="gate">The output gate, (B, N, heads·d).</param>
    /// <param name="epsilon">Added to the normaliser.</param>
    /// <param name="implementation">Which formulation to evaluate.</param>
    /// <param name="keyMask">Optional (B, n) mask of the real keys (see <see cref="Compute"/>).</param>
    /// <param name="precision">Precision of the core for float16/bfloat16 inputs.</param>
    /// <returns>(B, N, heads·d) in the dtype of q.</returns>
    internal static Tensor ComputeGated(Tensor q, Tensor k, Tensor v, Tensor power, Tensor local, Tensor gate,
        double epsilon, PolarityImplementation implementation, Tensor? keyMask, PolarityPrecision precision)
    {
        using var scope = NewDisposeScope();
        if (implementation == PolarityImplementation.Fast && q.dtype == ScalarType.Float32
            && Kernels.GatedReadout.Supported(q, local, gate))
        {
            Validate(q, k, v, power, keyMask);
            var products = FastProducts(q, k, v, power, keyMask);
            return Kernels.GatedReadout.Apply(products, local, gate, epsilon).MoveToOuterDisposeScope();
        }
        if (implementation == PolarityImplementation.Fast && q.dtype == ScalarType.Float32
            && Kernels.Cuda.CudaGatedReadout.TryGetLauncher(q, local, gate, out var launcher))
        {
            Validate(q, k, v, power, keyMask);
            var products = FastProducts(q, k, v, power, keyMask);
            return Kernels.Cuda.CudaGatedReadout.Apply(products, local, gate, epsilon, launcher).MoveToOuterDisposeScope();
        }
        var attended = Compute(q, k, v, power, epsilon, implementation, keyMask, precision);
        long batch = q.shape[0], tokens = q.shape[2], channels = q.shape[1] * q.shape[3];
        return (attended.Plus(local).transpose(1, 2).reshape(batch, tokens, channels) * gate).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The fast formulation: |x|^p once per tensor (instead of four broadcast powers), split by sign; one matmul
    /// for Kᵀv over the full head dimension and the key sums; both streams and both normalisers from one matmul of
    /// the same-signed query, read back through a view instead of concatenations.
    /// </summary>
    internal static Tensor ComputeFast(Tensor q, Tensor k, Tensor v, Tensor power, double epsilon, Tensor? keyMask = null)
    {
        using var scope = NewDisposeScope();
        long half = q.shape[^1] / 2;
        var y = FastProducts(q, k, v, power, keyMask);
        y = y.unflatten(y.dim() - 1, 2, half + 1);
        var numerator = y[.., .., .., .., ..(int)half];
        var normaliser = y[.., .., .., .., (int)half..].Plus(epsilon);
        return numerator.div(normaliser).flatten(-2).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Both streams' numerators and normalisers from one matmul: (B, h, N, d + 2), per head the same-signed stream's
    /// d/2 numerators and its normaliser, then the opposite-signed stream's (the epsilon not yet added).
    /// </summary>
    private static Tensor FastProducts(Tensor q, Tensor k, Tensor v, Tensor power, Tensor? keyMask)
    {
        using var scope = NewDisposeScope();
        long d = q.shape[^1];
        long half = d / 2;

        var qFeatures = SignSplitFeatures(q, power);            // (B, h, N, 2d) = [φ(q), φ(−q)]
        var kFeatures = SignSplitFeatures(k, power);            // (B, h, n, 2d) = [φ(k), φ(−k)]
        Tensor keyCount = tensor((double)k.shape[^2], dtype: q.dtype, device: q.device);
        if (keyMask is not null)
        {
            var keep = keyMask.to_type(q.dtype).unsqueeze(1).unsqueeze(-1);                // (B, 1, n, 1)
            kFeatures = kFeatures * keep;
            keyCount = keep.sum([-2], keepdim: true).clamp_min(ScalarArithmetic.One);     // (B, 1, 1, 1)
        }

        // One matmul gives both Kᵀv and the key sums: v widened to [v₁, 1, v₂, 1] makes each stream's d/2 + 1
        // columns of Kᵀ[v₁, 1, v₂, 1] / n read [Kᵀv_s / n, mean K], the layout of the right-hand side below.
        var one = ones(1, 1, 1, 1, dtype: v.dtype, device: v.device).expand(v.shape[0], v.shape[1], v.shape[2], 1);
        var widened = cat([v[.., .., .., ..(int)half], one, v[.., .., .., (int)half..], one], -1);
        var products = kFeatures.transpose(-2, -1).matmul(widened).div_(keyCount);   // (B, h, 2d, d + 2)

        // Right-hand side, 2d × (d + 2): [Kᵀv₁/n, mean K, swap(Kᵀv₂/n), swap(mean K)].
        var sameSigned = products[.., .., .., ..(int)(half + 1)];
        var opposite = products[.., .., .., (int)(half + 1)..];
        opposite = cat([opposite[.., .., (int)d.., ..], opposite[.., .., ..(int)d, ..]], -2);
        var rhs = cat([sameSigned, opposite], -1);
        return qFeatures.matmul(rhs).MoveToOuterDisposeScope();
    }

    /// <summary>[relu(x)^p, relu(−x)^p]: the fused C# kernel for float32 on the CPU, the fused CUDA kernel for float32
    /// on a GPU where it is available (<see cref="Kernels.Cuda.CudaKernels.Status"/>), else a single power |x|^p masked
    /// by sign.</summary>
    internal static Tensor SignSplitFeatures(Tensor x, Tensor power)
    {
        if (Kernels.PolarityFeatureMap.Supported(x, power)) return Kernels.PolarityFeatureMap.Apply(x, power);
        if (Kernels.Cuda.CudaFeatureMap.TryGetLauncher(x, power, out var launcher)) return Kernels.Cuda.CudaFeatureMap.Apply(x, power, launcher);
        return SignSplitFeaturesFromOperators(x, power);
    }

    /// <summary>[relu(x)^p, relu(−x)^p] from LibTorch operators (any dtype and device).</summary>
    internal static Tensor SignSplitFeaturesFromOperators(Tensor x, Tensor power)
    {
        var magnitude = x.abs().pow(power);
        var positive = x.gt(ScalarArithmetic.Zero).to_type(x.dtype);
        var negative = x.lt(ScalarArithmetic.Zero).to_type(x.dtype);
        return cat([magnitude.mul(positive), magnitude.mul(negative)], -1);
    }

    private static void Validate(Tensor q, Tensor k, Tensor v, Tensor power, Tensor? keyMask)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(power);
        Check.Rank(q, 4, nameof(q), "(B, heads, N, d)");
        Check.Rank(k, 4, nameof(k), "(B, heads, n, d)");
        Check.Rank(v, 4, nameof(v), "(B, heads, n, d)");
        long b = q.shape[0], h = q.shape[1], d = q.shape[3];
        if (d % 2 != 0)
            throw new ArgumentException(
                $"The head dimension of q is {d}; it must be even because the two polarity streams each take half of v.", nameof(q));
        if (k.shape[0] != b || k.shape[1] != h || k.shape[3] != d)
            throw new ArgumentException(
                $"k has shape {Check.Format(k.shape)}; expected (B={b}, heads={h}, n, d={d}) to match q {Check.Format(q.shape)}.", nameof(k));
        if (!v.shape.SequenceEqual(k.shape))
            throw new ArgumentException(
                $"v has shape {Check.Format(v.shape)}; expected the shape of k, {Check.Format(k.shape)}.", nameof(v));
        if (power.dim() > 4 || !Check.BroadcastsTo(power.shape, [1, h, 1, d]))
            throw new ArgumentException(
                $"power has shape {Check.Format(power.shape)}; expected a shape broadcastable to (1, heads={h}, 1, d={d}).", nameof(power));
        if (keyMask is not null && (keyMask.dim() != 2 || keyMask.shape[0] != b || keyMask.shape[1] != k.shape[2]))
            throw new ArgumentException(
                $"keyMask has shape {Check.Format(keyMask.shape)}; expected (B={b}, n={k.shape[2]}).", nameof(keyMask));
        foreach (var (t, name) in new[] { (k, nameof(k)), (v, nameof(v)), (power, nameof(power)) })
        {
            if (t.dtype != q.dtype)
                throw new ArgumentException($"{name} has dtype {t.dtype}; expected the dtype of q, {q.dtype}.", name);
            if (t.device_type != q.device_type || t.device_index != q.device_index)
                throw new ArgumentException($"{name} is on {t.device}; expected the device of q, {q.device}.", name);
        }
    }
}
