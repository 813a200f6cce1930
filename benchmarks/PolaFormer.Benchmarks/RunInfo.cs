using System.Text.Json;
using System.Text.Json.Serialization;

namespace PolaFormer.Benchmarks;

/// <summary>What the reports say about the run: versions, the CPU runtime settings, the BLAS in use, the JSON format.
/// Timing and memory are the shared <see cref="Timing"/> and <see cref="MemoryProbe"/> (benchmarks/Shared).</summary>
internal static class RunInfo
{
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
