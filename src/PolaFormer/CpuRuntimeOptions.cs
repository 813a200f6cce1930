namespace PolaFormer;

/// <summary>How LibTorch's OpenMP worker threads wait between parallel regions (the <c>OMP_WAIT_POLICY</c>
/// environment variable).</summary>
public enum OpenMpWaitPolicy
{
    /// <summary>Leave the OpenMP runtime's default (GNU OpenMP: spin for a while, then sleep).</summary>
    Default = 0,

    /// <summary>Sleep at once. Best when other threads share the cores between LibTorch's operators: .NET code of
    /// your own, a data loader. (This library's C# kernels run on the OpenMP threads themselves where LibTorch uses
    /// GNU OpenMP, so they do not need it.)</summary>
    Passive = 1,

    /// <summary>Keep spinning: lowest latency for back-to-back LibTorch operators on otherwise idle cores.</summary>
    Active = 2,
}

/// <summary>
/// Process-wide settings of the native CPU runtime under LibTorch, for <see cref="TorchRuntime.ConfigureCpu"/>.
/// They change how the whole process allocates memory and how its OpenMP threads wait, so they are opt-in and meant
/// for the application's entry point (a training or inference program), not for a library.
/// </summary>
/// <remarks>
/// Why they matter here (measured in docs/benchmarks.md): activations of tens of MiB are allocated and freed on every
/// forward pass. glibc serves blocks above 32 MiB with fresh <c>mmap</c> pages and returns them on free, so every
/// pass pays a page fault per 4 KiB touched (a GELU over a 51 MiB activation took 4× longer than over a reused
/// block). And GNU OpenMP's worker threads spin after each LibTorch operator, taking the cores from any other
/// thread that wants to run next (a data loader, .NET code of your own).
/// </remarks>
public sealed record CpuRuntimeOptions
{
    /// <summary>
    /// Keep native memory that has been freed inside the process for reuse instead of returning it to the operating
    /// system (glibc: no <c>mmap</c> for large blocks, no trimming of the heap). The resident size then stays near its
    /// peak. Default: true. Linux with glibc only; ignored elsewhere.
    /// </summary>
    /// <remarks>The cost: every block now comes from one heap, so a freed block can serve only requests it can hold,
    /// and the peak of a single huge pass grows. Measured (docs/benchmarks.md): Pola-PVT-T's largest batch-1 input
    /// within 8 GiB falls from 4,320 to 3,360 pixels square, and softmax attention over 25,600 tokens (15 GB of
    /// score matrices) no longer fits a 20 GiB address-space cap. Leave it off for maximum-resolution inference.</remarks>
    public bool RetainFreedMemory { get; init; } = true;

    /// <summary>
    /// OpenMP wait policy. Null (default): <see cref="OpenMpWaitPolicy.Passive"/> when
    /// <see cref="TorchRuntime.ConfigureCpu"/> runs before LibTorch is loaded, else left as it is (and said so in the
    /// returned line). Passive because spinning collapses when other processes share the cores: Pola-PVT-T's training
    /// step on a 2-core machine ran at 43 and 28 images/s beside one and two busy processes with spinning threads,
    /// against 68 and 77 with passive ones, while on the idle machine the two were within the run-to-run noise
    /// (docs/performance.md, "Shared machines", 2026-12-04). A value set here takes effect only before LibTorch is
    /// loaded (OpenMP reads it once; later it is refused); an <c>OMP_WAIT_POLICY</c> already in the environment wins.
    /// </summary>
    public OpenMpWaitPolicy? WaitPolicy { get; init; }

    /// <summary>
    /// LibTorch's intra-op threads. Null (default): LibTorch's own choice, capped at the processors this process may
    /// use (<see cref="Environment.ProcessorCount"/>, which honours the CPU affinity mask and a container's CPU
    /// quota; LibTorch's OpenMP honours the affinity mask but not the quota, and more threads than the quota allows
    /// stall each other at every barrier).
    /// </summary>
    public int? Threads { get; init; }

    /// <summary>
    /// Check LibTorch's float32 CPU convolution against float64 and switch oneDNN off where it is wrong
    /// (<see cref="TorchRuntime.VerifyCpuConvolution"/>; about a millisecond, loads LibTorch). Default: true.
    /// </summary>
    public bool VerifyConvolution { get; init; } = true;
}
