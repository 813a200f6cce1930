using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.GpuCheck;

/// <summary>
/// The GPU check: <c>polaformer-gpucheck MODE [--device cuda|cpu] [--quick] [--expect-torch-dir DIR] ...</c> with MODE
/// one of info, conformance, train, bench-models, bench-attention, bench-steps, cuda-kernels, nccl, trainer. See docs/benchmarks-gpu.md.
/// </summary>
internal static class Program
{
    public static string RuntimeDescription =>
        $"TorchSharp {typeof(torch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]} " +
        $"(built for LibTorch {torch.__version__}), {RuntimeInformation.FrameworkDescription}";

    private static int Main(string[] argv)
    {
        Context ctx;
        try
        {
            ctx = new Context(new Arguments(argv));
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            Console.Error.WriteLine("usage: polaformer-gpucheck info|conformance|train|bench-models|bench-attention|bench-steps|cuda-kernels|nccl|trainer [--device cuda|cpu] [--quick] [--expect-torch-dir DIR] [--golden DIR] [options]");
            return 2;
        }

        if (!Initialise(ctx)) return 3;
        bool single = ctx.Args.Flag("single");
        if (!single)
        {
            PrintEnvironment(ctx);
            if (!CheckNativeLibraries(ctx)) return 4;
        }
        try
        {
            return ctx.Args.Mode switch
            {
                "info" => 0,
                "conformance" => Conformance.Run(ctx),
                "train" => TrainCheck.Run(ctx),
                "bench-models" => ModelBenchmark.Run(ctx),
                "bench-attention" => AttentionBenchmark.Run(ctx),
                "bench-steps" => StepBreakdown.Run(ctx),
                "cuda-kernels" => CudaKernelCheck.Run(ctx),
                "nccl" => NcclCheck.Run(ctx),
                "trainer" => TrainerCheck.Run(ctx),
                _ => throw new ArgumentException($"unknown mode '{ctx.Args.Mode}'; expected info, conformance, train, bench-models, bench-attention, bench-steps, cuda-kernels, nccl or trainer."),
            };
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 2;
        }
    }

    /// <summary>Loads LibTorch; for CUDA through <c>InitializeDeviceType</c>, which loads libtorch_cuda first (found
    /// through LD_LIBRARY_PATH: the Python install's) and throws with TorchSharp's whole load trace if it cannot.</summary>
    private static bool Initialise(Context ctx)
    {
        try
        {
            if (ctx.IsCuda)
            {
                torch.InitializeDeviceType(DeviceType.CUDA);
            }
            else
            {
                TorchRuntime.EnsureLoaded();
                torch.set_num_threads(ctx.Threads);
            }
            return true;
        }
        catch (Exception e)
        {
            Console.WriteLine($"FAIL LibTorch did not initialise for {ctx.DeviceName}: {e}");
            return false;
        }
    }

    private static void PrintEnvironment(Context ctx)
    {
        Console.WriteLine($"# polaformer-gpucheck {ctx.Args.Mode} on {ctx.DeviceName}{(ctx.Quick ? " (quick sizes)" : "")}; {RuntimeDescription}; {RuntimeInformation.OSDescription}");
        if (ctx.IsCuda)
        {
            var (used, total) = DeviceMemory.GpuUsed();
            Console.WriteLine($"# cuda: available={torch.cuda.is_available()}, cudnn={torch.cuda.is_cudnn_available()}, devices={torch.cuda.device_count()}, " +
                              $"memory used/total after init {used / 1048576.0:0} / {total / 1048576.0:0} MiB ({DeviceMemory.LibraryUsed}), TF32 default {ctx.Tf32State()}");
        }
        else
        {
            Console.WriteLine($"# cpu: {torch.get_num_threads()} threads");
        }
        foreach (var lib in MappedLibraries()) Console.WriteLine("# native: " + lib);
    }

    /// <summary>The shared objects of interest mapped into this process (what was really loaded).</summary>
    private static List<string> MappedLibraries()
    {
        var names = new[] { "libtorch", "libc10", "LibTorchSharp", "libcudart", "libcublas", "libcudnn", "libgomp", "libstdc++", "libnvrtc" };
        try
        {
            return File.ReadLines("/proc/self/maps")
                .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Where(p => p.Length >= 6 && p[5].StartsWith('/'))
                .Select(p => p[5])
                .Where(p => names.Any(n => Path.GetFileName(p).StartsWith(n, StringComparison.Ordinal)))
                .Distinct().Order(StringComparer.Ordinal).ToList();
        }
        catch (IOException)
        {
            return [];
        }
    }

    /// <summary>With <c>--expect-torch-dir DIR</c>: every mapped libtorch*/libc10* must come from DIR (the Python
    /// install's torch/lib on the GPU machine), never from NuGet or the program's folder; on CUDA libtorch_cuda must
    /// be among them.</summary>
    private static bool CheckNativeLibraries(Context ctx)
    {
        if (!ctx.Args.Has("expect-torch-dir")) return true;
        string expected = Path.GetFullPath(ctx.Args.Text("expect-torch-dir", ""));
        var torchLibs = MappedLibraries().Where(p => Path.GetFileName(p).StartsWith("libtorch", StringComparison.Ordinal)
                                                     || Path.GetFileName(p).StartsWith("libc10", StringComparison.Ordinal)).ToList();
        var foreign = torchLibs.Where(p => Path.GetDirectoryName(p) != expected.TrimEnd('/')).ToList();
        bool cudaLoaded = torchLibs.Any(p => Path.GetFileName(p) == "libtorch_cuda.so");
        bool ok = foreign.Count == 0 && torchLibs.Count > 0 && (!ctx.IsCuda || cudaLoaded);
        Console.WriteLine(ok
            ? $"# native check: OK, {torchLibs.Count} libtorch/libc10 libraries, all from {expected}{(ctx.IsCuda ? ", libtorch_cuda.so among them" : "")}"
            : $"FAIL native check: expected every libtorch/libc10 from {expected}{(ctx.IsCuda ? " including libtorch_cuda.so" : "")}; " +
              $"loaded: {string.Join(", ", torchLibs)}; foreign: {string.Join(", ", foreign)}");
        return ok;
    }
}
