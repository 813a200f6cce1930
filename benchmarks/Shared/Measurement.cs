using System.Diagnostics;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks.Shared;

// Compiled into both benchmarks/PolaFormer.Benchmarks and benchmarks/PolaFormer.GpuCheck (linked source): the CPU
// benchmarks and the GPU check time their steps and read memory with this one implementation.

/// <summary>How long to warm up and how many iterations to time.</summary>
/// <param name="Warmup">Warm-up iterations (the first LibTorch iterations are several times slower: allocator, BLAS or
/// cuBLAS handles, kernel loading); warm-up stops early once it has taken <paramref name="MaxWarmupSeconds"/>, after at
/// least one iteration.</param>
/// <param name="MinIterations">Timed iterations at least (unless <paramref name="MaxSeconds"/> runs out first).</param>
/// <param name="MinSeconds">Keep timing until this much time has passed (and MinIterations are done).</param>
/// <param name="MaxSeconds">Stop timing once this much time has passed, after at least one iteration: huge
/// configurations (softmax attention at 25,600 tokens takes tens of seconds per iteration) get fewer samples.</param>
/// <param name="MaxIterations">Never more timed iterations than this.</param>
/// <param name="MaxWarmupSeconds">Warm-up time budget.</param>
internal sealed partial record TimingOptions(int Warmup = 5, int MinIterations = 15, double MinSeconds = 3, double MaxSeconds = 60,
    int MaxIterations = 1000, double MaxWarmupSeconds = 3);

/// <summary>Times a step: warm-up first, then the median of enough iterations to be stable.</summary>
internal static class Timing
{
    /// <summary>One measurement.</summary>
    /// <param name="MedianMs">Median of the timed iterations (the figure the reports use).</param>
    /// <param name="MinMs">Fastest timed iteration.</param>
    /// <param name="MaxMs">Slowest timed iteration.</param>
    /// <param name="Iterations">Timed iterations.</param>
    /// <param name="WarmupIterations">Warm-up iterations run before them.</param>
    /// <param name="PeakRssBytes">Peak resident memory of the process after the last iteration (VmHWM; -1 where
    /// /proc is unavailable).</param>
    public sealed record Result(double MedianMs, double MinMs, double MaxMs, int Iterations, int WarmupIterations, long PeakRssBytes);

    /// <summary>Runs <paramref name="step"/> for warm-up, then times iterations until <paramref name="options"/> say
    /// enough.</summary>
    /// <param name="step">One iteration.</param>
    /// <param name="options">Warm-up and iteration counts (default: <see cref="TimingOptions"/>' defaults).</param>
    /// <param name="synchronize">Waits for the device's queued work (<c>torch.cuda.synchronize</c>): called after the
    /// warm-up and inside every timed iteration, so each sample includes the work the step queued. Null on the CPU,
    /// where operators return when they are done.</param>
    public static Result Measure(Action step, TimingOptions? options = null, Action? synchronize = null)
    {
        ArgumentNullException.ThrowIfNull(step);
        var o = options ?? new TimingOptions();
        var warm = Stopwatch.StartNew();
        int warmups = 0;
        while (warmups < o.Warmup && (warmups == 0 || warm.Elapsed.TotalSeconds < o.MaxWarmupSeconds))
        {
            step();
            warmups++;
        }
        synchronize?.Invoke();
        var samples = new List<double>();
        var total = Stopwatch.StartNew();
        while (samples.Count < Math.Max(1, o.MaxIterations))
        {
            double elapsed = total.Elapsed.TotalSeconds;
            bool enough = samples.Count >= o.MinIterations && elapsed >= o.MinSeconds;
            bool outOfTime = samples.Count >= 1 && elapsed >= o.MaxSeconds;
            if (enough || outOfTime) break;
            var sw = Stopwatch.StartNew();
            step();
            synchronize?.Invoke();
            samples.Add(sw.Elapsed.TotalMilliseconds);
        }
        return new Result(Median(samples), samples.Min(), samples.Max(), samples.Count, warmups, ProcessMemory.PeakRss());
    }

    /// <summary>The median (the mean of the middle two for an even count).</summary>
    public static double Median(IReadOnlyCollection<double> values)
    {
        if (values.Count == 0) throw new ArgumentException("values is empty.", nameof(values));
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1
            ? sorted[sorted.Length / 2]
            : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}

/// <summary>
/// The used memory of the current CUDA device. TorchSharp 0.107 has no CUDA memory statistics, so this calls
/// <c>cudaMemGetInfo</c> (P/Invoke into the libcudart that libtorch_cuda already loaded, found by its soname).
/// LibTorch's caching allocator never returns memory to the driver during a run (TorchSharp has no
/// <c>empty_cache</c>), so in a fresh process "used now − used after CUDA initialisation" is the peak the allocator
/// reserved plus cuBLAS/cuDNN workspaces. The Python scripts report the same quantity (torch.cuda.mem_get_info)
/// beside max_memory_allocated/max_memory_reserved. Each configuration runs in its own process for this reason.
/// </summary>
internal static unsafe class DeviceMemory
{
    // Looked up on first use after CUDA is initialised (before that no libcudart is loaded); retried until found.
    private static delegate* unmanaged<nuint*, nuint*, int> _memGetInfo;

    /// <summary>The library and function used ("none" until one is found).</summary>
    public static string LibraryUsed { get; private set; } = "none";

    private static delegate* unmanaged<nuint*, nuint*, int> FindCudaMemGetInfo(out string library)
    {
        // Already loaded by libtorch_cuda (dlopen of a soname returns the loaded object), newest CUDA first.
        foreach (var name in new[] { "libcudart.so.13", "libcudart.so.12", "libcudart.so" })
        {
            if (NativeLibrary.TryLoad(name, out var handle) && NativeLibrary.TryGetExport(handle, "cudaMemGetInfo", out var f))
            {
                library = name + ":cudaMemGetInfo";
                return (delegate* unmanaged<nuint*, nuint*, int>)f;
            }
        }
        // The driver API works too once the runtime has made its primary context current on this thread.
        if (NativeLibrary.TryLoad("libcuda.so.1", out var driver) && NativeLibrary.TryGetExport(driver, "cuMemGetInfo_v2", out var g))
        {
            library = "libcuda.so.1:cuMemGetInfo_v2";
            return (delegate* unmanaged<nuint*, nuint*, int>)g;
        }
        library = "none";
        return null;
    }

    /// <summary>(used, total) bytes of the current CUDA device, or (-1, -1) when no CUDA runtime is loaded.</summary>
    public static (long Used, long Total) GpuUsed()
    {
        if (_memGetInfo == null)
        {
            _memGetInfo = FindCudaMemGetInfo(out var library);
            LibraryUsed = library;
        }
        if (_memGetInfo == null) return (-1, -1);
        nuint free, total;
        int status = _memGetInfo(&free, &total);
        return status == 0 ? ((long)(total - free), (long)total) : (-1, -1);
    }
}

/// <summary>The memory one configuration needs: created before the configuration is built, read after it ran. On
/// CUDA the device's used-memory growth (<see cref="DeviceMemory"/>); on the CPU the process's peak resident set
/// (VmHWM) above its resident set at creation (VmRSS).</summary>
internal sealed class MemoryProbe
{
    private readonly bool _cuda;
    private readonly Action? _synchronize;

    /// <param name="cuda">Measure the current CUDA device instead of the process's resident memory.</param>
    /// <param name="synchronize">Waits for the device's queued work before each reading (CUDA).</param>
    public MemoryProbe(bool cuda = false, Action? synchronize = null)
    {
        _cuda = cuda;
        _synchronize = synchronize;
        if (cuda)
        {
            // One small allocation first, so the CUDA context and the allocator's first block are in the baseline,
            // exactly as in the Python scripts (torch.zeros(1, device='cuda') before their baseline).
            using var warm = zeros(1, device: CUDA);
            synchronize?.Invoke();
        }
        Baseline = cuda ? DeviceMemory.GpuUsed().Used : ProcessMemory.CurrentRss();
    }

    /// <summary>Bytes at creation: device memory used (CUDA) or resident set size (CPU); -1 where unreadable.</summary>
    public long Baseline { get; }

    /// <summary>The JSON fields: <c>gpu_used_delta_bytes</c>, <c>gpu_used_bytes</c>, <c>gpu_baseline_bytes</c>,
    /// <c>gpu_total_bytes</c> on CUDA; <c>peak_rss_bytes</c>, <c>baseline_rss_bytes</c>, <c>peak_extra_bytes</c> on
    /// the CPU; and <c>memory_method</c>.</summary>
    public Dictionary<string, object?> Report()
    {
        _synchronize?.Invoke();
        if (_cuda)
        {
            var (used, total) = DeviceMemory.GpuUsed();
            return new()
            {
                ["gpu_used_delta_bytes"] = used < 0 || Baseline < 0 ? null : used - Baseline,
                ["gpu_used_bytes"] = used, ["gpu_baseline_bytes"] = Baseline, ["gpu_total_bytes"] = total,
                ["memory_method"] = "cudaMemGetInfo used-after minus used-after-CUDA-init, fresh process (" + DeviceMemory.LibraryUsed + ")",
            };
        }
        long peak = ProcessMemory.PeakRss();
        return new()
        {
            ["peak_rss_bytes"] = peak, ["baseline_rss_bytes"] = Baseline, ["peak_extra_bytes"] = peak - Baseline,
            ["memory_method"] = "VmHWM minus VmRSS before the configuration",
        };
    }
}
