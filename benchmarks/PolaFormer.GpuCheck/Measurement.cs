using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace PolaFormer.GpuCheck;

/// <summary>Times a step: warm-up first (first LibTorch/CUDA iterations are several times slower: allocator,
/// cuBLAS handles, kernel loading), then the median of enough iterations, each followed by a device synchronise.</summary>
internal static class Timing
{
    public sealed record Result(double MedianMs, double MinMs, double MaxMs, int Iterations);

    public static Result Measure(Context ctx, Action step, int warmup = 5, int minIterations = 15, double minSeconds = 1, double maxSeconds = 20)
    {
        if (ctx.Quick) (warmup, minIterations, minSeconds) = (1, 3, 0);
        for (int i = 0; i < warmup; i++) step();
        ctx.Synchronize();
        var samples = new List<double>();
        var total = Stopwatch.StartNew();
        while (samples.Count < minIterations || total.Elapsed.TotalSeconds < minSeconds)
        {
            if (samples.Count > 0 && total.Elapsed.TotalSeconds > maxSeconds) break;
            var sw = Stopwatch.StartNew();
            step();
            ctx.Synchronize();
            samples.Add(sw.Elapsed.TotalMilliseconds);
        }
        samples.Sort();
        double median = samples.Count % 2 == 1 ? samples[samples.Count / 2] : (samples[samples.Count / 2 - 1] + samples[samples.Count / 2]) / 2;
        return new Result(median, samples[0], samples[^1], samples.Count);
    }
}

/// <summary>
/// Memory figures. TorchSharp 0.107 has no CUDA memory statistics, so on the GPU this reads the device's used memory
/// with <c>cudaMemGetInfo</c> (P/Invoke into the libcudart that libtorch_cuda already loaded, found by its soname).
/// LibTorch's caching allocator never returns memory to the driver during a run (TorchSharp has no
/// <c>empty_cache</c>), so in a fresh process "used now − used after CUDA initialisation" is the peak the allocator
/// reserved plus cuBLAS/cuDNN workspaces. The Python script reports the same quantity (torch.cuda.mem_get_info) beside
/// max_memory_allocated/max_memory_reserved. Each configuration runs in its own process for this reason.
/// On the CPU: peak resident set size (VmHWM) minus the resident size before the configuration.
/// </summary>
internal static unsafe class Memory
{
    // Looked up on first use after CUDA is initialised (before that no libcudart is loaded); retried until found.
    private static delegate* unmanaged<nuint*, nuint*, int> _memGetInfo;

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

    public static long PeakRss() => PolaFormer.Benchmarks.Shared.ProcessMemory.PeakRss();
    public static long CurrentRss() => PolaFormer.Benchmarks.Shared.ProcessMemory.CurrentRss();

}

/// <summary>A memory probe for one configuration: GPU used-memory delta on CUDA, RSS on the CPU.</summary>
internal sealed class MemoryProbe
{
    private readonly Context _ctx;
    private readonly long _baseline;

    public MemoryProbe(Context ctx)
    {
        _ctx = ctx;
        if (ctx.IsCuda)
        {
            // One small allocation first, so the CUDA context and the allocator's first block are in the baseline,
            // exactly as in the Python script (torch.zeros(1, device='cuda') before its baseline).
            using var warm = TorchSharp.torch.zeros(1, device: TorchSharp.torch.CUDA);
            ctx.Synchronize();
        }
        _baseline = ctx.IsCuda ? Memory.GpuUsed().Used : Memory.CurrentRss();
    }

    /// <summary>Fields for the JSON line.</summary>
    public Dictionary<string, object?> Report()
    {
        _ctx.Synchronize();
        if (_ctx.IsCuda)
        {
            var (used, total) = Memory.GpuUsed();
            return new()
            {
                ["gpu_used_delta_bytes"] = used < 0 || _baseline < 0 ? null : used - _baseline,
                ["gpu_used_bytes"] = used, ["gpu_baseline_bytes"] = _baseline, ["gpu_total_bytes"] = total,
                ["memory_method"] = "cudaMemGetInfo used-after minus used-after-CUDA-init, fresh process (" + Memory.LibraryUsed + ")",
            };
        }
        long peak = Memory.PeakRss();
        return new()
        {
            ["peak_rss_bytes"] = peak, ["baseline_rss_bytes"] = _baseline, ["peak_extra_bytes"] = peak - _baseline,
            ["memory_method"] = "VmHWM minus VmRSS before the configuration",
        };
    }
}

internal static class Json
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public static void WriteLine(Dictionary<string, object?> fields) => Console.WriteLine(JsonSerializer.Serialize(fields, Options));
}
