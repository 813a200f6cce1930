using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>The engine a <see cref="ProcessGroup"/> runs its collectives on.</summary>
public enum DistributedBackend
{
    /// <summary>No communication: a job of one process.</summary>
    None,

    /// <summary>Open MPI (<c>libmpi.so.40</c>) on CPU tensors; launched with <c>mpirun</c> (or <c>srun --mpi=pmix</c>).</summary>
    Mpi,

    /// <summary>NVIDIA NCCL (<c>libnccl.so.2</c>) on CUDA tensors, one GPU per process; launched like torchrun (the
    /// <c>RANK</c>/<c>WORLD_SIZE</c>/<c>LOCAL_RANK</c>/<c>MASTER_ADDR</c>/<c>MASTER_PORT</c> variables).</summary>
    Nccl,
}

/// <summary>How <see cref="ProcessGroup.AllReduce"/> combines the ranks' tensors.</summary>
public enum ReduceOperation
{
    /// <summary>Element-wise sum.</summary>
    Sum,

    /// <summary>Element-wise mean over the ranks (sum, then division by the world size; floating point only).</summary>
    Average,

    /// <summary>Element-wise maximum.</summary>
    Max,
}

/// <summary>
/// The processes of a data-parallel job and the collectives between them: all-reduce, broadcast, barrier on
/// tensors, in the same order on every rank (as with <c>torch.distributed</c>). Create one per process with
/// <see cref="Create"/>, which reads the launcher's variables (see <see cref="LaunchEnvironment"/>).
/// <para>Timeouts: every collective is watched by a thread; one that has not completed after <see cref="Timeout"/>
/// (a peer died, hung, or runs different code) prints which rank waited on which operation and aborts the whole job,
/// so no rank waits forever. Failures the backend reports are thrown as <see cref="DistributedException"/>.</para>
/// <para>Not thread-safe: call the collectives from one thread at a time.</para>
/// </summary>
public abstract class ProcessGroup : IDisposable
{
    /// <summary>The default <see cref="Timeout"/>: 10 minutes (PyTorch's for NCCL).</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(10);

    /// <summary>Exit code of a job aborted because a collective timed out.</summary>
    public const int TimeoutExitCode = 124;

    private readonly object _gate = new();
    private Thread? _watchdog;
    private string? _operation;
    private long _startedAt;
    private bool _stopping, _disposed;

    private protected ProcessGroup(int rank, int worldSize, int localRank, TimeSpan timeout)
    {
        if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "worldSize must be at least 1.");
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {worldSize}).");
        if (timeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "timeout must be positive.");
        Rank = rank;
        WorldSize = worldSize;
        LocalRank = localRank;
        Timeout = timeout;
    }

    /// <summary>The backend.</summary>
    public abstract DistributedBackend Backend { get; }

    /// <summary>This process's rank, in [0, <see cref="WorldSize"/>).</summary>
    public int Rank { get; }

    /// <summary>Number of processes.</summary>
    public int WorldSize { get; }

    /// <summary>Rank among the processes on this machine (with NCCL: the CUDA device this process uses).</summary>
    public int LocalRank { get; }

    /// <summary>Whether this is rank 0, the one that logs and writes files.</summary>
    public bool IsMain => Rank == 0;

    /// <summary>How long a collective may take before the job is aborted.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>The device the collectives' tensors must be on: the CPU for MPI, this rank's GPU for NCCL.</summary>
    public abstract Device Device { get; }

    /// <summary>A job of one process (every collective is a no-op).</summary>
    public static ProcessGroup Single() => new SingleProcessGroup();

    /// <summary>"none", "mpi" or "nccl" (any case) → the backend, with a clear error for anything else.</summary>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    public static DistributedBackend ParseBackend(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Trim().ToLowerInvariant() switch
        {
            "none" or "" => DistributedBackend.None,
            "mpi" => DistributedBackend.Mpi,
            "nccl" => DistributedBackend.Nccl,
            _ => throw new ArgumentException($"Distributed backend '{text}' is not known; expected none, mpi (CPU, launched with mpirun) or nccl (GPU).", nameof(text)),
        };
    }

    /// <summary>
    /// Joins the job this process was launched into. With <see cref="DistributedBackend.None"/>, a group of one — and
    /// an error if the launcher says there are several processes, so N copies never train side by side unknowingly.
    /// </summary>
    /// <param name="backend">The engine.</param>
    /// <param name="timeout">Collective timeout (default <see cref="DefaultTimeout"/>); the NCCL rendezvous waits
    /// as long for the other ranks to appear.</param>
    /// <param name="environment">Rank and world (default: <see cref="LaunchEnvironment.FromProcess"/>).</param>
    /// <exception cref="DistributedException">The backend's library is missing, or joining failed.</exception>
    /// <exception cref="ArgumentException">The launch variables are inconsistent.</exception>
    public static ProcessGroup Create(DistributedBackend backend, TimeSpan? timeout = null, LaunchEnvironment? environment = null)
    {
        var env = environment ?? LaunchEnvironment.FromProcess();
        var wait = timeout ?? DefaultTimeout;
        return backend switch
        {
            DistributedBackend.None => env.WorldSize == 1 ? new SingleProcessGroup(wait) : throw new ArgumentException(
                $"This process was launched as rank {env.Rank} of {env.WorldSize} ({env.Source} variables) but no distributed backend was chosen; "
                + "choose DistributedBackend.Mpi (CPU, under mpirun) or DistributedBackend.Nccl (GPU), or launch a single process.", nameof(backend)),
            DistributedBackend.Mpi => MpiProcessGroup.Create(env, wait),
            DistributedBackend.Nccl => NcclProcessGroup.Create(env, wait),
            _ => throw new ArgumentOutOfRangeException(nameof(backend), backend, "Unknown backend."),
        };
    }

    /// <summary>
    /// Combines <paramref name="tensor"/> across the ranks in place: afterwards every rank holds the same result.
    /// </summary>
    /// <param name="tensor">On <see cref="Device"/>; any layout (a non-contiguous tensor goes through a contiguous copy).</param>
    /// <param name="operation">How to combine.</param>
    /// <param name="label">What the tensor is, for error messages (e.g. "gradient bucket 2/3").</param>
    public void AllReduce(Tensor tensor, ReduceOperation operation = ReduceOperation.Sum, string? label = null)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (operation == ReduceOperation.Average && !tensor.is_floating_point())
            throw new ArgumentException($"tensor has dtype {tensor.dtype}; averaging needs a floating-point tensor (sum it instead).", nameof(tensor));
        string what = Describe("all-reduce", operation.ToString().ToLowerInvariant(), tensor, label);
        if (SkipsCollectives) return;
        CheckDevice(tensor, what);
        using var noGrad = no_grad();
        InPlace(tensor, t =>
        {
            using (Watch(what)) AllReduceCore(t, operation == ReduceOperation.Max ? ReduceOperation.Max : ReduceOperation.Sum, what);
            if (operation != ReduceOperation.Average) return;
            using var ranks = WorldSize.ToScalar();
            t.div_(ranks);
        });
    }

    /// <summary>
    /// <see cref="AllReduce"/> of several tensors as one operation (NCCL launches them as one group; MPI runs them in
    /// order): what gradient buckets use.
    /// </summary>
    /// <param name="tensors">Contiguous tensors on <see cref="Device"/>.</param>
    /// <param name="operation">How to combine.</param>
    /// <param name="label">What the tensors are, for error messages.</param>
    public void AllReduceCoalesced(IReadOnlyList<Tensor> tensors, ReduceOperation operation = ReduceOperation.Sum, string? label = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        if (tensors.Count == 0 || SkipsCollectives) return;
        long values = 0;
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i] ?? throw new ArgumentNullException(nameof(tensors), $"tensors[{i}] is null.");
            if (!t.is_contiguous()) throw new ArgumentException($"tensors[{i}] is not contiguous; coalesced all-reduce works on contiguous tensors.", nameof(tensors));
            if (operation == ReduceOperation.Average && !t.is_floating_point())
                throw new ArgumentException($"tensors[{i}] has dtype {t.dtype}; averaging needs floating-point tensors.", nameof(tensors));
            values += t.numel();
        }
        string what = string.Create(CultureInfo.InvariantCulture,
            $"all-reduce ({operation.ToString().ToLowerInvariant()}) of {tensors.Count} tensor(s), {values:N0} values{(label is null ? "" : ": " + label)}");
        foreach (var t in tensors) CheckDevice(t, what);
        using var noGrad = no_grad();
        using (Watch(what)) AllReduceManyCore(tensors, operation == ReduceOperation.Max ? ReduceOperation.Max : ReduceOperation.Sum, what);
        if (operation != ReduceOperation.Average) return;
        using var ranks = WorldSize.ToScalar();
        foreach (var t in tensors) t.div_(ranks);
    }

    /// <summary>Copies <paramref name="tensor"/> of rank <paramref name="root"/> into every rank's
    /// <paramref name="tensor"/> (same shape and dtype on every rank).</summary>
    /// <param name="tensor">On <see cref="Device"/>.</param>
    /// <param name="root">The rank whose values win.</param>
    /// <param name="label">What the tensor is, for error messages.</param>
    public void Broadcast(Tensor tensor, int root = 0, string? label = null)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (root < 0 || root >= WorldSize) throw new ArgumentOutOfRangeException(nameof(root), root, $"root must be a rank in [0, {WorldSize}).");
        string what = Describe("broadcast", $"from rank {root}", tensor, label);
        if (SkipsCollectives) return;
        CheckDevice(tensor, what);
        using var noGrad = no_grad();
        InPlace(tensor, t =>
        {
            using (Watch(what)) BroadcastCore(t, root, what);
        });
    }

    /// <summary>
    /// Whether collectives return at once. A single rank has nothing to exchange, except with NCCL, where — as in
    /// PyTorch — they still run (a copy on one GPU), so that a one-GPU job exercises the same code path as a real one.
    /// </summary>
    public bool SkipsCollectives => WorldSize == 1 && Backend != DistributedBackend.Nccl;

    /// <summary>Returns when every rank has called it (with the same label).</summary>
    /// <param name="label">Where the barrier is, for error messages.</param>
    public void Barrier(string? label = null)
    {
        if (WorldSize == 1) return;
        string what = label is null ? "barrier" : $"barrier ({label})";
        using (Watch(what)) BarrierCore(what);
    }

    /// <summary>
    /// Ends the whole job now: writes "[rank r/W] <paramref name="message"/>" to standard error and terminates every
    /// rank (MPI_Abort; for NCCL the communicator is aborted and this process exits, which launchers turn into the
    /// end of the job). Use it when this rank cannot go on, so the others do not wait for the timeout.
    /// </summary>
    [DoesNotReturn]
    public void Abort(string message, int exitCode = 1)
    {
        Console.Out.Flush();
        Console.Error.WriteLine($"[rank {Rank}/{WorldSize}] {message}");
        Console.Error.Flush();
        AbortCore(exitCode);
        Environment.Exit(exitCode);
        throw new UnreachableException();
    }

    /// <summary>Leaves the job (a normal end: every rank should call it, after its last collective).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
        }
        try
        {
            if (WorldSize == 1)
                ShutdownCore();
            else
                using (Watch("shutdown")) ShutdownCore();
        }
        finally
        {
            lock (_gate)
            {
                _stopping = true;
                Monitor.PulseAll(_gate);
            }
            _watchdog?.Join();
        }
        GC.SuppressFinalize(this);
    }

    private protected abstract void AllReduceCore(Tensor contiguous, ReduceOperation operation, string what);

    private protected virtual void AllReduceManyCore(IReadOnlyList<Tensor> tensors, ReduceOperation operation, string what)
    {
        for (int i = 0; i < tensors.Count; i++) AllReduceCore(tensors[i], operation, $"{what} [tensor {i + 1}/{tensors.Count}]");
    }

    private protected abstract void BroadcastCore(Tensor contiguous, int root, string what);

    private protected abstract void BarrierCore(string what);

    /// <summary>Terminates every rank if the backend can; may return (then the process exits).</summary>
    private protected abstract void AbortCore(int exitCode);

    private protected abstract void ShutdownCore();

    private protected string Where => $"rank {Rank} of {WorldSize} ({Backend.ToString().ToLowerInvariant()})";

    private protected DistributedException Failure(string what, string reason, Exception? inner = null) =>
        new(Rank, what, $"{Where}: {what} failed: {reason}", inner);

    private void CheckDevice(Tensor tensor, string what)
    {
        var device = Device;
        if (tensor.device_type != device.type || (device.type != DeviceType.CPU && tensor.device_index != device.index))
            throw new ArgumentException($"{what}: the tensor is on {tensor.device}; the {Backend.ToString().ToLowerInvariant()} backend of this rank works on {device}.", "tensor");
    }

    private static void InPlace(Tensor tensor, Action<Tensor> action)
    {
        if (tensor.is_contiguous())
        {
            action(tensor);
            return;
        }
        using var work = tensor.contiguous();
        action(work);
        tensor.copy_(work);
    }

    private static string Describe(string kind, string detail, Tensor tensor, string? label) => string.Create(CultureInfo.InvariantCulture,
        $"{kind} ({detail}) of {tensor.numel():N0} {tensor.dtype.ToString().ToLowerInvariant()} values{(label is null ? "" : ": " + label)}");

    /// <summary>Marks <paramref name="what"/> as running until the returned scope ends; the watchdog aborts the job
    /// when it runs longer than <see cref="Timeout"/>.</summary>
    private protected WatchScope Watch(string what)
    {
        lock (_gate)
        {
            if (_watchdog is null && !_stopping)
            {
                _watchdog = new Thread(RunWatchdog) { IsBackground = true, Name = $"ProcessGroup watchdog (rank {Rank})" };
                _watchdog.Start();
            }
            _operation = what;
            _startedAt = Stopwatch.GetTimestamp();
        }
        return new WatchScope(this);
    }

    private protected readonly struct WatchScope(ProcessGroup group) : IDisposable
    {
        public void Dispose()
        {
            lock (group._gate) group._operation = null;
        }
    }

    private void RunWatchdog()
    {
        var poll = TimeSpan.FromMilliseconds(Math.Clamp(Timeout.TotalMilliseconds / 20, 10, 1000));
        while (true)
        {
            string? late = null;
            TimeSpan waited = default;
            lock (_gate)
            {
                if (_stopping) return;
                Monitor.Wait(_gate, poll);
                if (_stopping) return;
                if (_operation is not null)
                {
                    waited = Stopwatch.GetElapsedTime(_startedAt);
                    if (waited > Timeout) late = _operation;
                }
            }
            if (late is not null)
                Abort(string.Create(CultureInfo.InvariantCulture,
                    $"{Where}: {late} did not complete within the timeout of {Timeout.TotalSeconds:0.###} s (waited {waited.TotalSeconds:0.#} s). Another rank has probably died, hung, or is not running the same collective; aborting the job."),
                    TimeoutExitCode);
        }
    }
}
