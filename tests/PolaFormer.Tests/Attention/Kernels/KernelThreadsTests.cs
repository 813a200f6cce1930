using System.Collections.Concurrent;
using FluentAssertions;
using PolaFormer.Attention.Kernels;
using PolaFormer.Tests.Infrastructure;
using Xunit;

namespace PolaFormer.Tests.Attention.Kernels;

/// <summary>The parallel loop of the C# kernels, on LibTorch's OpenMP team or the thread pool.</summary>
public sealed class KernelThreadsTests : TorchTest
{
    [Fact]
    public void Runs_on_libtorchs_openmp_threads_on_linux()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("POLAFORMER_KERNEL_THREADS") is { Length: > 0 })
            return;   // other platforms may have no GNU-ABI OpenMP runtime: the thread pool is the expected result there
        KernelThreads.Backend.Should().StartWith("OpenMP (libgomp");
    }

    [Theory]
    [InlineData(1, 4, false)]
    [InlineData(1000, 2, false)]
    [InlineData(3, 8, false)]
    [InlineData(57, 1, false)]
    [InlineData(1000, 2, true)]
    [InlineData(3, 8, true)]
    public void Calls_the_body_once_for_every_index(int count, int threads, bool threadPool)
    {
        var calls = new int[count];
        var workers = new ConcurrentDictionary<int, bool>();
        Action<int, int, Action<int>> loop = threadPool ? KernelThreads.ForOnThreadPool : KernelThreads.For;
        loop(count, threads, i =>
        {
            Interlocked.Increment(ref calls[i]);
            workers[Environment.CurrentManagedThreadId] = true;
        });
        calls.Should().OnlyContain(c => c == 1);
        workers.Count.Should().BeInRange(1, Math.Min(count, threads));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Rethrows_the_first_exception_of_a_block_on_the_calling_thread(bool threadPool)
    {
        int ran = 0;
        Action<int, int, Action<int>> loop = threadPool ? KernelThreads.ForOnThreadPool : KernelThreads.For;
        // Every other block takes a millisecond, so the blocks still in flight when block 10 fails are a handful; with
        // empty blocks the other thread could finish all of them while the exception is being thrown.
        var act = () => loop(1_000, 2, i =>
        {
            Interlocked.Increment(ref ran);
            if (i == 10) throw new InvalidDataException($"block {i}");
            Thread.Sleep(1);
        });
        act.Should().Throw<InvalidDataException>().WithMessage("block 10");
        ran.Should().BeLessThan(1_000, "no further blocks are handed out after a failure");

        // The team is usable again afterwards.
        int after = 0;
        loop(100, 2, _ => Interlocked.Increment(ref after));
        after.Should().Be(100);
    }
}
