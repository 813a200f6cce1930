using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>A job of one process: collectives return at once and change nothing.</summary>
internal sealed class SingleProcessGroup(TimeSpan? timeout = null) : ProcessGroup(0, 1, 0, timeout ?? DefaultTimeout)
{
    public override DistributedBackend Backend => DistributedBackend.None;

    public override Device Device => CPU;

    private protected override void AllReduceCore(Tensor contiguous, ReduceOperation operation, string what) { }

    private protected override void BroadcastCore(Tensor contiguous, int root, string what) { }

    private protected override void BarrierCore(string what) { }

    private protected override void AbortCore(int exitCode) { }

    private protected override void ShutdownCore() { }
}
