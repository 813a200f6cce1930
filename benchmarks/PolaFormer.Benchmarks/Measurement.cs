using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace PolaFormer.Benchmarks;

/// <summary>How long to warm up and how many iterations to time.</summary>
/// <param name="Warmup">Warm-up iterations (the first LibTorch iterations are several times slower); warm-up stops
/// early once it has taken <paramref name="MaxWarmupSeconds"/>, after at least one iteration.</param>
/// <param name="MinIterations">Timed iterations at least (unless <paramref name="MaxSeconds"/> runs out first).</param>
/// <param name="MinSeconds">Keep timing until this much time has passed (and MinIterations are done).</param>
/// <param name="MaxSeconds">Stop timing once this much time has passed, after at least one iteration: huge
/// configurations (softmax attention at 25,600 tokens takes tens of seconds per iteration) get fewer samples.</param>
/// <param name="MaxIterations">Never more timed iterations than this.</param>
/// <param name="MaxWarmupSeconds">Warm-up time budget.</param>
internal sealed record TimingOptions(int Warmup = 5, int MinIterations = 15, double MinSeconds = 3, double MaxSeconds = 60,
    int MaxIterations = 1000, double MaxWarmupSeconds = 3)
{
    /// <summary>Reads <c>--warmup</c>, <c>--iterations</c>, <c>--min-seconds</c>, <c>--max-seconds</c>,
    /// <c>--max-iterations</c> over the given defaults.</summary>
    public static TimingOptions From(Arguments args, TimingOptions defaults) => defaults with
    {
        Warmup = (int)args.Int("warmup", defaults.Warmup),
        MinIterations = (int)args.Int("iterations", defaults.MinIterations),
        MinSeconds = args.Double("min-seconds", defaults.MinSeconds),
        MaxSeconds = args.Double("max-seconds", defaults.MaxSeconds),
        MaxIterations = (int)args.Int("max-iterations", defaults.MaxIterations),
    };
}

/// <summary>Times an action: warm-up first, then the median of enough iterations to be stable.</summary>
internal static class Measurement
{
    public sealed record Result(double MedianMs, double MinMs, double MaxMs, int Iterations, int WarmupIterations, long PeakRssBytes);

    public static Result Time(Action action, TimingOptions? options = null)
    {
        var o = options ?? new TimingOptions();
        var warm = Stopwatch.StartNew();
        int warmups = 0;
        while (warmups < o.Warmup && (warmups == 0 || warm.Elapsed.TotalSeconds < o.MaxWarmupSeconds))
        {
            action();
            warmups++;
        }
        var samples = new List<double>();
        var total = Stopwatch.StartNew();
        while (samples.Count < Math.Max(1, o.MaxIterations))
        {
            double elapsed = total.Elapsed.TotalSeconds;
            bool enough = samples.Count >= o.MinIterations && elapsed >= o.MinSeconds;
            bool outOfTime = samples.Count >= 1 && elapsed >= o.MaxSeconds;
            if (enough || outOfTime) break;
            var sw = Stopwatch.StartNew();
            action();
            samples.Add(sw.Elapsed.TotalMilliseconds);
        }
        return new Result(Median(samples), samples.Min(), samples.Max(), samples.Count, warmups, PeakRss());
    }

    public static double Median(IReadOnlyCollection<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1
            ? sorted[sorted.Length / 2]
            : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>Peak resident set size of this process (VmHWM), in bytes; -1 where /proc is unavailable.</summary>
    public static long PeakRss() => PolaFormer.Benchmarks.Shared.ProcessMemory.PeakRss();

    /// <summary>Resident set size now (VmRSS), in bytes.</summary>
    public static long CurrentRss() => PolaFormer.Benchmarks.Shared.ProcessMemory.CurrentRss();


    /// <summary>The BLAS/MKL shared objects mapped into this process (what LibTorch actually calls), or null.</summary>
    public static string? BlasLibraries()
    {
        try
        {
            var hits = File.ReadLines("/proc/self/maps")
                .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Where(fields => fields.Length >= 6 && fields[5].StartsWith('/'))
                .Select(fields => fields[5])
                .Where(path => Path.GetFileName(path) is var f && (f.Contains("mkl", StringComparison.Ordinal) || f.Contains("blas", StringComparison.Ordinal) || f.Contains("gomp", StringComparison.Ordinal) || f.Contains("iomp", StringComparison.Ordinal)))
                .Select(Path.GetFileName)
                .Distinct()
                .Order(StringComparer.Ordinal)
                .ToArray();
            return hits.Length > 0 ? string.Join(", ", hits) : "none mapped (MKL linked statically into libtorch_cpu)";
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>What <c>--cpu-runtime</c> applied (set once by Program before any tensor).</summary>
    public static string CpuRuntime { get; set; } = "CPU runtime: defaults";

    /// <summary>Where the library's C# kernels run their blocks: LibTorch's OpenMP threads or .NET's thread pool.</summary>
    public static string KernelThreads => PolaFormer.Attention.Kernels.KernelThreads.Backend;

    public static string TorchSharpVersion => "TorchSharp " + typeof(TorchSharp.torch).Assembly.GetName().Version;

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };
}
