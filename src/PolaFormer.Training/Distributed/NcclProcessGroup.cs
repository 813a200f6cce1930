using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>
/// Collectives with NVIDIA NCCL on this rank's GPU (<c>cuda:LOCAL_RANK</c>). Rank 0 creates the NCCL unique id and
/// hands it to the others over a <see cref="TcpRendezvous"/> at <c>MASTER_ADDR</c> (port: see
/// <see cref="LaunchEnvironment.RendezvousPort"/>), which also carries
/// the barriers. Collectives go on the legacy default stream (handle 0), the one LibTorch uses unless told
/// otherwise, so they run after the backward pass that produced the gradients and before the optimiser reads
/// them; the calling thread then polls the stream (and NCCL's asynchronous error) so the watchdog can see a hang.
/// </summary>
internal sealed unsafe class NcclProcessGroup : ProcessGroup
{
    private readonly NcclLibrary _nccl;
    private readonly CudaDriver _cuda;
    private readonly IntPtr _context;
    private readonly TcpRendezvous _rendezvous;
    private IntPtr _comm;

    private NcclProcessGroup(NcclLibrary nccl, CudaDriver cuda, IntPtr context, TcpRendezvous rendezvous, LaunchEnvironment env, TimeSpan timeout)
        : base(env.Rank, env.WorldSize, env.LocalRank, timeout)
    {
        _nccl = nccl;
        _cuda = cuda;
        _context = context;
        _rendezvous = rendezvous;
    }

    public override DistributedBackend Backend => DistributedBackend.Nccl;

    public override Device Device => new(DeviceType.CUDA, LocalRank);

    /// <summary>Joins the job: checks for NCCL, the GPU and the launch variables, meets the other ranks and creates
    /// the communicator.</summary>
    public static NcclProcessGroup Create(LaunchEnvironment env, TimeSpan timeout, IReadOnlyList<string>? libraryNames = null)
    {
        var nccl = NcclLibrary.Load(libraryNames);
        string where = $"rank {env.Rank} of {env.WorldSize} (nccl)";
        if (env.WorldSize > 1 && (env.MasterAddress is null || env.RendezvousPort is null))
            throw new ArgumentException(
                $"{where}: MASTER_ADDR and MASTER_PORT must name rank 0's host and a free port (torchrun sets them; with mpirun pass -x MASTER_ADDR=<host> -x MASTER_PORT=<port>).",
                env.MasterAddress is null ? "MASTER_ADDR" : "MASTER_PORT");
        if (!cuda.is_available())
            throw new DistributedException(env.Rank, "selecting the GPU",
                $"{where}: the nccl backend needs CUDA, but LibTorch sees no GPU; reference TorchSharp's CUDA build (TorchSharp-cuda-linux) and check the driver.");
        int gpus = cuda.device_count();
        if (env.LocalRank >= gpus)
            throw new DistributedException(env.Rank, "selecting the GPU",
                $"{where}: LOCAL_RANK is {env.LocalRank} but this machine shows {gpus} GPU(s); start at most one rank per GPU (two ranks must never share one).");

        var driver = CudaDriver.Load();
        int code = driver.PrimaryContext(env.LocalRank, out var context);
        if (code == CudaDriver.Success) code = driver.CtxSetCurrent(context);
        if (code != CudaDriver.Success)
            throw new DistributedException(env.Rank, "selecting the GPU", $"{where}: cannot make GPU {env.LocalRank} current: {driver.Describe(code)}");

        var rendezvous = TcpRendezvous.Join(env.MasterAddress ?? "127.0.0.1", env.RendezvousPort ?? 29500, env.Rank, env.WorldSize, timeout);
        NcclProcessGroup? group = null;
        try
        {
            var id = new NcclUniqueId();
            var bytes = new byte[NcclUniqueId.Length];
            if (env.Rank == 0)
            {
                code = nccl.GetUniqueId(&id);
                if (code != NcclLibrary.Success)
                    throw new DistributedException(0, "ncclGetUniqueId", $"{where}: ncclGetUniqueId failed: {nccl.Describe(code)}");
                new ReadOnlySpan<byte>(id.Bytes, NcclUniqueId.Length).CopyTo(bytes);
            }
            bytes = rendezvous.Broadcast(env.Rank == 0 ? bytes : null, "sharing the NCCL unique id");
            if (bytes.Length != NcclUniqueId.Length)
                throw new DistributedException(env.Rank, "sharing the NCCL unique id", $"{where}: received {bytes.Length} bytes for the NCCL unique id, expected {NcclUniqueId.Length}.");
            bytes.CopyTo(new Span<byte>(id.Bytes, NcclUniqueId.Length));

            group = new NcclProcessGroup(nccl, driver, context, rendezvous, env, timeout);
            group.InitCommunicator(id);
            return group;
        }
        catch
        {
            if (group is null) rendezvous.Dispose();
            throw;
        }
    }

    /// <summary>NCCL's version, for logs.</summary>
    internal string LibraryVersion => _nccl.Version();

    private void InitCommunicator(NcclUniqueId id)
    {
        const string What = "ncclCommInitRank";
        using (Watch(What))
        {
            IntPtr comm = IntPtr.Zero;
            Check(_nccl.CommInitRank(&comm, WorldSize, id, Rank), What);
            _comm = comm;
        }
    }

    private protected override void AllReduceCore(Tensor contiguous, ReduceOperation operation, string what) =>
        AllReduceManyCore([contiguous], operation, what);

    private protected override void AllReduceManyCore(IReadOnlyList<Tensor> tensors, ReduceOperation operation, string what)
    {
        MakeCurrent(what);
        int op = operation == ReduceOperation.Max ? NcclLibrary.OpMax : NcclLibrary.OpSum;
        Check(_nccl.GroupStart(), what);
        try
        {
            foreach (var t in tensors)
            {
                int type = NcclLibrary.Datatype(t.dtype);
                if (type < 0) throw new ArgumentException($"{Where}: {what}: NCCL cannot reduce {t.dtype} tensors.", nameof(tensors));
                var address = TensorMemory.Address(t);
                Check(_nccl.AllReduce(address, address, (nuint)t.numel(), type, op, _comm, IntPtr.Zero), what);
            }
        }
        finally
        {
            Check(_nccl.GroupEnd(), what);
        }
        WaitForStream(what);
        GC.KeepAlive(tensors);
    }

    private protected override void BroadcastCore(Tensor contiguous, int root, string what)
    {
        MakeCurrent(what);
        var address = TensorMemory.Address(contiguous);
        Check(_nccl.Broadcast(address, address, (nuint)(contiguous.numel() * contiguous.ElementSize), NcclLibrary.Datatype(ScalarType.Byte), root, _comm, IntPtr.Zero), what);
        WaitForStream(what);
        GC.KeepAlive(contiguous);
    }

    private protected override void BarrierCore(string what) => _rendezvous.Barrier(what);

    private protected override void AbortCore(int exitCode)
    {
        if (_comm != IntPtr.Zero) _nccl.CommAbort(_comm);
    }

    private protected override void ShutdownCore()
    {
        try
        {
            if (_comm != IntPtr.Zero)
            {
                MakeCurrent("shutdown");
                WaitForStream("shutdown");
                Check(_nccl.CommDestroy(_comm), "ncclCommDestroy");
                _comm = IntPtr.Zero;
            }
        }
        finally
        {
            _rendezvous.Dispose();
        }
    }

    /// <summary>The calling thread may not be the one that created the group: make this rank's GPU current, as
    /// PyTorch's device guard does before every NCCL call.</summary>
    private void MakeCurrent(string what)
    {
        int code = _cuda.CtxSetCurrent(_context);
        if (code != CudaDriver.Success) throw Failure(what, _cuda.Describe(code));
    }

    private void WaitForStream(string what)
    {
        var spin = new SpinWait();
        while (true)
        {
            int state = _cuda.StreamQuery(IntPtr.Zero);
            if (state == CudaDriver.Success) return;
            if (state != CudaDriver.NotReady) throw Failure(what, _cuda.Describe(state));
            int error = NcclLibrary.Success;
            if (_nccl.CommGetAsyncError(_comm, &error) == NcclLibrary.Success && error != NcclLibrary.Success && error != NcclLibrary.InProgress)
                throw Failure(what, _nccl.Describe(error) + " (a peer has probably failed)");
            spin.SpinOnce(sleep1Threshold: 64);
        }
    }

    private void Check(int code, string what)
    {
        if (code != NcclLibrary.Success) throw Failure(what, _nccl.Describe(code));
    }
}
