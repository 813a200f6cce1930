using PolaFormer.Training.Distributed;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Distributed;

/// <summary>
/// A process group whose "ranks" are threads of this process, for testing what sits on top of the collectives
/// (DDP, sharded evaluation) without launching processes. Every rank sums the posted tensors in rank order, so all
/// ranks get the same bits, as with MPI.
/// </summary>
internal sealed class ThreadProcessGroup : ProcessGroup
{
    private readonly Hub _hub;

    private ThreadProcessGroup(Hub hub, int rank) : base(rank, hub.Slots.Length, rank, TimeSpan.FromSeconds(60)) => _hub = hub;

    /// <summary>Runs <paramref name="body"/> on <paramref name="world"/> threads, one rank each, and returns their results.</summary>
    public static T[] Run<T>(int world, Func<ProcessGroup, T> body)
    {
        var hub = new Hub(world);
        var results = new T[world];
        var errors = new Exception?[world];
        var threads = Enumerable.Range(0, world).Select(rank => new Thread(() =>
        {
            try
            {
                using var group = new ThreadProcessGroup(hub, rank);
                results[rank] = body(group);
            }
            catch (Exception e)
            {
                errors[rank] = e;
                hub.Barrier.Dispose(); // release the others rather than leave them waiting
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (errors.FirstOrDefault(e => e is not null and not ObjectDisposedException) is { } error) throw new AggregateException(error);
        return results;
    }

    public override DistributedBackend Backend => DistributedBackend.Mpi;

    public override Device Device => CPU;

    private protected override void AllReduceCore(Tensor contiguous, ReduceOperation operation, string what)
    {
        _hub.Slots[Rank] = contiguous.clone();
        _hub.Barrier.SignalAndWait();
        using (var result = _hub.Slots[0]!.clone())
        {
            for (int r = 1; r < _hub.Slots.Length; r++)
                if (operation == ReduceOperation.Max) result.copy_(result.maximum(_hub.Slots[r]!));
                else result.add_(_hub.Slots[r]!);
            _hub.Barrier.SignalAndWait();
            contiguous.copy_(result);
        }
        _hub.Slots[Rank]!.Dispose();
    }

    private protected override void BroadcastCore(Tensor contiguous, int root, string what)
    {
        _hub.Slots[Rank] = contiguous.clone();
        _hub.Barrier.SignalAndWait();
        contiguous.copy_(_hub.Slots[root]!);
        _hub.Barrier.SignalAndWait();
        _hub.Slots[Rank]!.Dispose();
    }

    private protected override void BarrierCore(string what) => _hub.Barrier.SignalAndWait();

    private protected override void AbortCore(int exitCode) => throw new InvalidOperationException($"abort {exitCode}");

    private protected override void ShutdownCore() { }

    private sealed class Hub(int world)
    {
        public Barrier Barrier { get; } = new(world);
        public Tensor?[] Slots { get; } = new Tensor?[world];
    }
}
