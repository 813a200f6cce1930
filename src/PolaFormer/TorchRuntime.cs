using System.Runtime.InteropServices;
using TorchSharp;

namespace PolaFormer;

/// <summary>Checks that TorchSharp's native libraries load, and says what to install when they do not.</summary>
public static class TorchRuntime
{
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
