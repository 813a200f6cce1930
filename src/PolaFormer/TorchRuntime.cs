using System.Runtime.InteropServices;
using TorchSharp;

namespace PolaFormer;

/// <summary>Checks that TorchSharp's native libraries load, and says what to install when they do not; tunes the
/// native CPU runtime on request.</summary>
public static partial class TorchRuntime
{
    /// <summary>
    /// Applies process-wide settings of the native CPU runtime (see <see cref="CpuRuntimeOptions"/>). Call it at the
    /// very start of a program, before the first tensor: the OpenMP wait policy is read once, when LibTorch loads.
    /// </summary>
    /// <param name="options">What to apply (default: retain freed memory; OpenMP threads that sleep when idle, as many as
    /// the process may use; the CPU convolution verified).</param>
    /// <returns>One line saying what was applied, for the program's log.</returns>
    /// <exception cref="InvalidOperationException">A wait policy was asked for after LibTorch was loaded.</exception>
    /// <exception cref="ArgumentException"><see cref="CpuRuntimeOptions.Threads"/> is below 1.</exception>
    public static string ConfigureCpu(CpuRuntimeOptions? options = null)
    {
        options ??= new CpuRuntimeOptions();
        var applied = new List<string>();
        var policy = options.WaitPolicy ?? (LibTorchLoaded() ? OpenMpWaitPolicy.Default : OpenMpWaitPolicy.Passive);
        if (options.WaitPolicy is null && policy == OpenMpWaitPolicy.Default)
            applied.Add("OpenMP wait policy left as it is (LibTorch was loaded before ConfigureCpu)");
        if (policy != OpenMpWaitPolicy.Default)
        {
            string value = policy == OpenMpWaitPolicy.Passive ? "PASSIVE" : "ACTIVE";
            if (Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is { Length: > 0 } existing)
                applied.Add($"OMP_WAIT_POLICY={existing} (already in the environment; kept)");
            else if (LibTorchLoaded())
                throw new InvalidOperationException(
                    $"CpuRuntimeOptions.WaitPolicy = {policy} needs TorchRuntime.ConfigureCpu to run before LibTorch is " +
                    "loaded (before the first tensor is created), because OpenMP reads it only once; LibTorch is already loaded. " +
                    "Call ConfigureCpu first thing in Main, or leave WaitPolicy null.");
            else
            {
                SetEnvironment("OMP_WAIT_POLICY", value);
                applied.Add($"OMP_WAIT_POLICY={value}");
            }
        }
        if (options.RetainFreedMemory)
            applied.Add(RetainFreedMemory() ? "freed native memory kept for reuse (glibc malloc: no mmap, no trim)"
                : "freed native memory: left to the allocator (not glibc)");
        if (options.Threads is < 1)
            throw new ArgumentException($"CpuRuntimeOptions.Threads is {options.Threads}; expected at least 1, or null for the automatic choice.", nameof(options));
        EnsureLoaded();
        int threads = options.Threads ?? AutomaticThreads(torch.get_num_threads(), Environment.ProcessorCount);
        torch.set_num_threads(threads);
        string count = threads == 1 ? "1 thread" : $"{threads} threads";
        applied.Add(options.Threads is null ? $"{count} (LibTorch's choice within {Environment.ProcessorCount} usable processors)" : count);
        if (options.VerifyConvolution) applied.Add(VerifyCpuConvolution().ToString());
        return applied.Count == 0 ? "CPU runtime: defaults" : "CPU runtime: " + string.Join("; ", applied);
    }

    /// <summary>LibTorch's default thread count, capped at the processors the process may use.</summary>
    internal static int AutomaticThreads(int libTorchDefault, int usableProcessors) =>
        Math.Max(1, Math.Min(libTorchDefault, usableProcessors));

    private static bool LibTorchLoaded()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            return File.ReadLines("/proc/self/maps").Any(line =>
                line.Contains("/libgomp", StringComparison.Ordinal) || line.Contains("/libtorch_cpu", StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static void SetEnvironment(string name, string value)
    {
        // .NET keeps its own copy of the environment on Unix; native code (OpenMP) reads the C library's.
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) _ = setenv(name, value, 1);
        Environment.SetEnvironmentVariable(name, value);
    }

    private static bool RetainFreedMemory()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            // M_MMAP_MAX = 0: every block comes from the heap; M_TRIM_THRESHOLD = 2 GiB: the heap is shrunk only when
            // more than that lies free at its top.
            const int M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4;
            return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, int.MaxValue) == 1;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false;   // musl and other C libraries without mallopt
        }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int parameter, int value);

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int setenv(string name, string value, int overwrite);

    /// <summary>
    /// Loads LibTorch through TorchSharp, or throws <see cref="PlatformNotSupportedException"/> naming the cause and
    /// the fix (instead of the bare <see cref="TypeInitializationException"/> TorchSharp throws).
    /// </summary>
    public static void EnsureLoaded()
    {
        try
        {
            using var probe = torch.ones(1);
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or NotSupportedException)
        {
            throw new PlatformNotSupportedException(Explain(e), e);
        }
    }

    private static string Explain(Exception e)
    {
        var detail = string.Join(" | ", Chain(e).Select(x => x.Message).Distinct());
        var hint = detail.Contains("GLIBCXX", StringComparison.Ordinal) || OperatingSystem.IsLinux()
            ? "On Linux, TorchSharp 0.107's libLibTorchSharp.so needs GLIBCXX_3.4.32 (libstdc++ from GCC 13 or newer). " +
              "Debian 12 ships GCC 12's: install a newer libstdc++6 (e.g. Debian 13's, pinned at low priority; " +
              "the PolaFormer source repository's eng/prerequisites.sh does exactly that). "
            : "";
        return "TorchSharp could not load its native libraries. " + hint +
               "Also make sure the application references a LibTorch backend package: TorchSharp-cpu for the CPU, or " +
               "TorchSharp-cuda-linux / TorchSharp-cuda-windows for CUDA. " +
               $"Runtime: {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture}. Cause: {detail}";
    }

    private static IEnumerable<Exception> Chain(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException) yield return x;
    }
}
