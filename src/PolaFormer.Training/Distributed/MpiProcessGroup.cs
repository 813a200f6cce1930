using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>
/// Collectives with Open MPI on CPU tensors: <c>MPI_Allreduce</c> in place, <c>MPI_Bcast</c> on the raw bytes,
/// <c>MPI_Barrier</c>, all on <c>MPI_COMM_WORLD</c> with <c>MPI_ERRORS_RETURN</c> so failures become exceptions.
/// Rank and world size come from MPI itself (so <c>srun --mpi=pmix</c> works too); the launch variables, when
/// present, must agree. MPI can be initialised once per process, so there is at most one such group per process.
/// </summary>
internal sealed unsafe class MpiProcessGroup : ProcessGroup
{
    private const int ChunkElements = 1 << 30; // MPI counts are ints

    private static readonly object InitGate = new();
    private static bool _initialised; // MPI_Init may run once per process, and MPI_Finalize ends MPI for good

    private readonly MpiLibrary _mpi;

    private MpiProcessGroup(MpiLibrary mpi, int rank, int world, int localRank, TimeSpan timeout)
        : base(rank, world, localRank, timeout) => _mpi = mpi;

    public override DistributedBackend Backend => DistributedBackend.Mpi;

    public override Device Device => CPU;

    /// <summary>The library in use.</summary>
    internal string LibraryPath => _mpi.Path;

    public static MpiProcessGroup Create(LaunchEnvironment env, TimeSpan timeout, IReadOnlyList<string>? libraryNames = null)
    {
        var mpi = MpiLibrary.Load(libraryNames);
        lock (InitGate)
        {
            if (_initialised)
                throw new DistributedException(env.Rank, "MPI_Init", "MPI was already initialised in this process; create one mpi process group per process and keep it.");
            int provided = 0, already = 0;
            Check(mpi, mpi.Initialized(&already), env.Rank, "MPI_Initialized");
            if (already == 0) Check(mpi, mpi.InitThread(null, null, MpiLibrary.ThreadMultiple, &provided), env.Rank, "MPI_Init_thread");
            _initialised = true;
        }

        Check(mpi, mpi.CommSetErrhandler(mpi.CommWorld, mpi.ErrorsReturn), env.Rank, "MPI_Comm_set_errhandler");
        int rank = 0, world = 0;
        Check(mpi, mpi.CommRank(mpi.CommWorld, &rank), env.Rank, "MPI_Comm_rank");
        Check(mpi, mpi.CommSize(mpi.CommWorld, &world), env.Rank, "MPI_Comm_size");
        if (env.Source != "none" && (env.Rank != rank || env.WorldSize != world))
            throw new DistributedException(rank, "MPI_Init",
                $"rank {rank} of {world} (mpi): the launch variables ({env.Source}) say rank {env.Rank} of {env.WorldSize}; "
                + "the mpi backend needs its processes started by mpirun (or srun --mpi=pmix) — for torchrun-style launches use DistributedBackend.Nccl.");

        int localRank = env.Source == "none" ? NodeRank(mpi, rank) : env.LocalRank;
        return new MpiProcessGroup(mpi, rank, world, localRank, timeout);
    }

    private static int NodeRank(MpiLibrary mpi, int rank)
    {
        const int CommTypeShared = 0; // MPI_COMM_TYPE_SHARED: the processes sharing this machine's memory
        IntPtr node = IntPtr.Zero;
        if (mpi.CommSplitType(mpi.CommWorld, CommTypeShared, rank, mpi.InfoNull, &node) != MpiLibrary.Success) return 0;
        int local = 0;
        if (mpi.CommRank(node, &local) != MpiLibrary.Success) local = 0;
        mpi.CommFree(&node);
        return local;
    }

    private protected override void AllReduceCore(Tensor contiguous, ReduceOperation operation, string what)
    {
        var type = _mpi.Datatype(contiguous.dtype);
        if (type == IntPtr.Zero)
            throw new ArgumentException($"{Where}: {what}: MPI cannot reduce {contiguous.dtype} tensors; convert to float32 first.", "tensor");
        var op = operation == ReduceOperation.Max ? _mpi.OpMax : _mpi.OpSum;
        long count = contiguous.numel(), elementSize = contiguous.ElementSize;
        var address = TensorMemory.Address(contiguous);
        for (long done = 0; done < count; done += ChunkElements)
        {
            int n = (int)Math.Min(ChunkElements, count - done);
            Check(_mpi.Allreduce(MpiLibrary.InPlace, address + (nint)(done * elementSize), n, type, op, _mpi.CommWorld), what);
        }
        GC.KeepAlive(contiguous);
    }

    private protected override void BroadcastCore(Tensor contiguous, int root, string what)
    {
        long bytes = contiguous.numel() * contiguous.ElementSize;
        var address = TensorMemory.Address(contiguous);
        for (long done = 0; done < bytes; done += ChunkElements)
        {
            int n = (int)Math.Min(ChunkElements, bytes - done);
            Check(_mpi.Bcast(address + (nint)done, n, _mpi.Byte, root, _mpi.CommWorld), what);
        }
        GC.KeepAlive(contiguous);
    }

    private protected override void BarrierCore(string what) => Check(_mpi.Barrier(_mpi.CommWorld), what);

    private protected override void AbortCore(int exitCode) => _mpi.Abort(_mpi.CommWorld, exitCode);

    private protected override void ShutdownCore()
    {
        int finalized = 0;
        if (_mpi.Finalized(&finalized) == MpiLibrary.Success && finalized == 0) Check(_mpi.Finalize(), "MPI_Finalize");
    }

    private void Check(int code, string what)
    {
        if (code != MpiLibrary.Success) throw Failure(what, _mpi.Describe(code));
    }

    private static void Check(MpiLibrary mpi, int code, int rank, string what)
    {
        if (code != MpiLibrary.Success)
            throw new DistributedException(rank, what, $"rank {rank} (mpi): {what} failed: {mpi.Describe(code)}");
    }
}
