using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using PolaFormer.Attention.Kernels.Cuda;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention.Kernels.Cuda;

/// <summary>
/// Runs the CUDA kernels' own source on the CPU: the exact strings the library hands to NVRTC, compiled by the host
/// C++ compiler after a prelude that defines <c>__global__</c>, <c>threadIdx</c>, <c>blockIdx</c>, <c>blockDim</c> and
/// <c>gridDim</c>, plus a dispatcher that runs every thread of a launch one after another. The kernels share nothing
/// between threads (no shared memory, no atomics, no barriers), so a sequential schedule is one of the schedules a
/// GPU may pick, and any index or bounds mistake shows up here as it would there. The dispatcher also checks the
/// number of arguments against the kernel's signature.
/// </summary>
internal sealed unsafe class HostEmulator
{
    private static readonly Lazy<(HostEmulator? Emulator, string Failure)> Shared = new(Build);

    private readonly delegate* unmanaged<byte*, uint, uint, void**, int, int, int> _emulate;

    private HostEmulator(nint library)
    {
        _emulate = (delegate* unmanaged<byte*, uint, uint, void**, int, int, int>)NativeLibrary.GetExport(library, "polaformer_emulate");
    }

    public static string? Compiler => new[] { "/usr/bin/g++", "/usr/bin/c++", "/usr/bin/clang++" }.FirstOrDefault(File.Exists);

    /// <summary>The compiled emulator, shared by the tests (built once per test run).</summary>
    public static HostEmulator Instance => Shared.Value.Emulator ?? throw new InvalidOperationException(Shared.Value.Failure);

    /// <summary>A launcher that runs the kernels here. <paramref name="reverse"/> runs the threads last to first;
    /// <paramref name="blocks"/> overrides the grid size (a small grid makes every thread take several items of the
    /// grid-stride loop).</summary>
    public KernelLauncher Launcher(bool reverse = false, uint? blocks = null) => new Emulated(this, reverse, blocks);

    private sealed class Emulated(HostEmulator emulator, bool reverse, uint? blocks) : KernelLauncher
    {
        // Outputs start as NaN: an element no thread writes stays NaN and fails the comparison.
        public override void PrepareOutput(Tensor output) => output.fill_(double.NaN);

        protected override void LaunchCore(string kernel, uint gridBlocks, uint threadsPerBlock, void** parameters, int count)
        {
            var name = Encoding.ASCII.GetBytes(kernel + "\0");
            int result;
            fixed (byte* n = name) result = emulator._emulate(n, blocks ?? gridBlocks, threadsPerBlock, parameters, count, reverse ? 1 : 0);
            if (result == 1) throw new InvalidOperationException($"the emulator has no kernel {kernel}");
            if (result == 2) throw new InvalidOperationException($"{kernel} was launched with {count} arguments; its signature has a different number");
            if (result != 0) throw new InvalidOperationException($"the emulator returned {result} for {kernel}");
        }
    }

    /// <summary>The C++ translation unit: prelude, every kernel source verbatim, the dispatcher.</summary>
    internal static string TranslationUnit()
    {
        var code = new StringBuilder("""
            #include <math.h>
            #include <string.h>
            #include <utility>
            struct EmulatedDim3 { unsigned x, y, z; };
            static thread_local EmulatedDim3 threadIdx, blockIdx, blockDim, gridDim;
            #define __global__
            #define __device__

            """);
        var kernels = new List<string>();
        foreach (var source in CudaSources.All)
        {
            code.AppendLine($"// ---- {source.FileName} ----").AppendLine(source.Code);
            var declared = Regex.Matches(source.Code, @"extern\s+""C""\s+__global__\s+void\s+(\w+)").Select(m => m.Groups[1].Value).ToList();
            Assert.Equal(source.Kernels.Order(), declared.Order());   // the names the runtime looks up are the ones defined
            kernels.AddRange(declared);
        }
        code.AppendLine("""
            template <typename... A, size_t... I>
            static void emulated_call(void (*kernel)(A...), void** p, std::index_sequence<I...>)
            {
                kernel(*static_cast<A*>(p[I])...);
            }

            template <typename... A>
            static int emulated_run(void (*kernel)(A...), unsigned blocks, unsigned threads, void** p, int count, int reverse)
            {
                if (count != (int)sizeof...(A)) return 2;
                gridDim = {blocks, 1, 1};
                blockDim = {threads, 1, 1};
                const long long total = (long long)blocks * threads;
                for (long long n = 0; n < total; ++n)
                {
                    const long long i = reverse ? total - 1 - n : n;
                    blockIdx = {(unsigned)(i / threads), 0, 0};
                    threadIdx = {(unsigned)(i % threads), 0, 0};
                    emulated_call(kernel, p, std::index_sequence_for<A...>{});
                }
                return 0;
            }

            extern "C" int polaformer_emulate(const char* name, unsigned blocks, unsigned threads, void** p, int count, int reverse)
            {
            """);
        foreach (var k in kernels)
            code.AppendLine($"    if (strcmp(name, \"{k}\") == 0) return emulated_run({k}, blocks, threads, p, count, reverse);");
        code.AppendLine("    return 1;\n}");
        return code.ToString();
    }

    private static (HostEmulator?, string) Build()
    {
        if (Compiler is not { } compiler) return (null, "no host C++ compiler (g++, c++ or clang++)");
        var folder = Path.Combine(Path.GetTempPath(), "polaformer-cuda-emulator-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        var source = Path.Combine(folder, "emulator.cpp");
        var library = Path.Combine(folder, "libpolaformer-emulator.so");
        File.WriteAllText(source, TranslationUnit());
        var start = new ProcessStartInfo(compiler, ["-std=c++14", "-O1", "-Wall", "-Werror", "-Wno-unused-function", "-shared", "-fPIC", "-o", library, source])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        using var process = Process.Start(start)!;
        string errors = process.StandardError.ReadToEnd() + process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) return (null, $"{compiler} failed on {source}: {errors}");
        return (new HostEmulator(NativeLibrary.Load(library)), "");
    }
}

/// <summary>A fact that needs a host C++ compiler for <see cref="HostEmulator"/>; skipped without one.</summary>
public sealed class HostCompilerFactAttribute : FactAttribute
{
    public HostCompilerFactAttribute()
    {
        if (HostEmulator.Compiler is null) Skip = "No host C++ compiler (g++): the CUDA kernels cannot be emulated on the CPU. Install g++ to run this test.";
    }
}

/// <summary>The theory form of <see cref="HostCompilerFactAttribute"/>.</summary>
public sealed class HostCompilerTheoryAttribute : TheoryAttribute
{
    public HostCompilerTheoryAttribute()
    {
        if (HostEmulator.Compiler is null) Skip = "No host C++ compiler (g++): the CUDA kernels cannot be emulated on the CPU. Install g++ to run this test.";
    }
}
