using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace PolaFormer.Attention.Kernels;

/// <summary>
/// Runs the blocks of the C# CPU kernels in parallel on LibTorch's own OpenMP threads, falling back to .NET's thread
/// pool where no OpenMP runtime with the GNU ABI is loaded.
/// </summary>
/// <remarks>
/// Why not simply <see cref="Parallel.For(int, int, Action{int})"/>: GNU OpenMP's workers spin for milliseconds
/// after every LibTorch operator. A thread-pool worker woken right after one lands on a core that a spinning OpenMP
/// thread holds: in a Pola-Swin-T stage-2 layer the feature map took 5.4 ms against 1.8–3.0 ms alone, and 3.5 ms with
/// OpenMP told not to spin (docs/benchmarks.md § 5). Handing the blocks to <c>GOMP_parallel</c> puts them on
/// the threads that are already awake, as LibTorch's own <c>at::parallel_for</c> does, and leaves those threads
/// spinning for the next operator. Results do not depend on which thread runs a block: callers write per-block
/// partial results and combine them in block order.
/// Setting the environment variable <c>POLAFORMER_KERNEL_THREADS=threadpool</c> before the first kernel call forces
/// the thread pool (for comparisons).
/// </remarks>
internal static unsafe class KernelThreads
{
    private static readonly delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void> GompParallel = Resolve();

    /// <summary>Where the blocks run: "OpenMP (library path)" or ".NET thread pool".</summary>
    public static string Backend { get; } = GompParallel is null ? ".NET thread pool" : $"OpenMP ({OpenMpLibrary})";

    private static string? OpenMpLibrary { get; set; }

    // Below this many elements a pass takes a few microseconds: waking the other threads would cost more.
    private const long ParallelThreshold = 1 << 16;

    /// <summary>Threads for a pass over <paramref name="elements"/> elements: LibTorch's thread count, or 1 for a
    /// pass too small to share.</summary>
    public static int ThreadsFor(long elements) => elements < ParallelThreshold ? 1 : Math.Max(1, TorchSharp.torch.get_num_threads());

    /// <summary>Calls <paramref name="body"/> once for each index in [0, count), on up to <paramref name="threads"/>
    /// threads. The first exception a block throws is rethrown here, after the other threads have stopped.</summary>
    public static void For(int count, int threads, Action<int> body)
    {
        if (count <= 0) return;
        threads = Math.Min(threads, count);
        if (threads <= 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        if (GompParallel is null) ForOnThreadPool(count, threads, body);
        else ForOnOpenMp(count, threads, body);
    }

    /// <summary>The fallback, also reachable directly so the tests cover it where OpenMP is found. Like the OpenMP
    /// path it rethrows a block's exception itself, not wrapped in an <see cref="AggregateException"/>.</summary>
    internal static void ForOnThreadPool(int count, int threads, Action<int> body)
    {
        try
        {
            Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = threads }, body);
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
    }

    private static void ForOnOpenMp(int count, int threads, Action<int> body)
    {
        var work = new Work(count, body);
        var handle = GCHandle.Alloc(work);
        try
        {
            GompParallel(&RunTeamMember, GCHandle.ToIntPtr(handle), (uint)threads, 0);
        }
        finally
        {
            handle.Free();
        }
        if (work.Error is not null) ExceptionDispatchInfo.Throw(work.Error);
    }

    private sealed class Work(int count, Action<int> body)
    {
        public readonly int Count = count;
        public readonly Action<int> Body = body;
        public int Next;
        public Exception? Error;
    }

    /// <summary>What each thread of the OpenMP team runs: take the next block until none is left. Blocks are handed
    /// out one at a time, so a thread that starts late simply takes fewer.</summary>
    [UnmanagedCallersOnly]
    private static void RunTeamMember(nint state)
    {
        var work = (Work)GCHandle.FromIntPtr(state).Target!;
        try
        {
            int i;
            while ((i = Interlocked.Increment(ref work.Next) - 1) < work.Count) work.Body(i);
        }
        catch (Exception e)
        {
            // An exception must not cross back into native code: keep the first, stop handing out blocks.
            Interlocked.CompareExchange(ref work.Error, e, null);
            Volatile.Write(ref work.Next, work.Count);
        }
    }

    private static delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void> Resolve()
    {
        if (string.Equals(Environment.GetEnvironmentVariable("POLAFORMER_KERNEL_THREADS"), "threadpool", StringComparison.OrdinalIgnoreCase))
            return null;
        foreach (var path in LoadedOpenMpLibraries())
        {
            if (NativeLibrary.TryLoad(path, out var library) && NativeLibrary.TryGetExport(library, "GOMP_parallel", out var parallel))
            {
                OpenMpLibrary = Path.GetFileName(path);
                return (delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void>)parallel;
            }
        }
        return null;
    }

    /// <summary>OpenMP runtimes already loaded into the process (LibTorch's, normally): GNU libgomp first, then LLVM
    /// and Intel runtimes, which export the same GOMP entry points.</summary>
    private static IEnumerable<string> LoadedOpenMpLibraries()
    {
        var paths = new List<string>();
        try
        {
            if (OperatingSystem.IsLinux())
            {
                foreach (var line in File.ReadLines("/proc/self/maps"))
                {
                    int slash = line.IndexOf('/');
                    if (slash >= 0) paths.Add(line[slash..]);
                }
            }
            else
            {
                foreach (ProcessModule module in Process.GetCurrentProcess().Modules)
                    if (module.FileName is { } name) paths.Add(name);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or NotSupportedException)
        {
            return [];
        }
        static int Rank(string name) =>
            name.StartsWith("libgomp", StringComparison.Ordinal) ? 0
            : name.StartsWith("libomp", StringComparison.Ordinal) ? 1
            : name.StartsWith("libiomp", StringComparison.Ordinal) ? 2 : -1;
        return paths.Distinct()
            .Select(path => (Path: path, Rank: Rank(Path.GetFileName(path))))
            .Where(c => c.Rank >= 0)
            .OrderBy(c => c.Rank)
            .Select(c => c.Path)
            .ToList();
    }
}
