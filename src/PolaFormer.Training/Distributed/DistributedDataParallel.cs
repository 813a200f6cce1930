using System.Globalization;
using TorchSharp;
using PolaFormer.Training.Optimization;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>
/// PyTorch's DistributedDataParallel rules for a module trained by one process per rank: call
/// <see cref="SynchronizeParameters"/> once (rank 0's parameters and buffers go to every rank), then after each
/// <c>loss.backward()</c> call <see cref="AverageGradients"/> (every rank ends with the mean of the ranks'
/// gradients), then clip and step as usual — clipping after the average, as with DDP.
/// <para>Gradients travel in buckets of about <see cref="DefaultBucketBytes"/>, filled in reverse parameter order
/// (the order backward produces them), one flat buffer and one collective per bucket, all buckets launched together.
/// TorchSharp has no gradient hooks, so the buckets are reduced after backward instead of overlapping with it.</para>
/// <para>A parameter whose gradient is missing on a rank (unused in its forward) counts as zero there; one with no
/// gradient on any rank keeps none, so the optimiser skips it as it would in a single process.</para>
/// </summary>
public sealed class DistributedDataParallel : IDisposable
{
    /// <summary>PyTorch's default bucket size: 25 MiB.</summary>
    public const long DefaultBucketBytes = 25L << 20;

    private readonly Bucket[] _buckets;
    private readonly List<(string Name, Tensor Tensor)> _state;
    private readonly FlatParameters? _flat;
    private readonly (Tensor Slice, string[] Names)[] _flatBuckets = [];

    /// <summary>Wraps <paramref name="module"/>'s parameters for <paramref name="group"/>.</summary>
    /// <param name="module">The model (already on <see cref="ProcessGroup.Device"/>, with the same architecture on
    /// every rank).</param>
    /// <param name="group">The ranks.</param>
    /// <param name="bucketBytes">Bucket capacity in bytes; a parameter larger than it gets a bucket of its own.</param>
    public DistributedDataParallel(nn.Module module, ProcessGroup group, long bucketBytes = DefaultBucketBytes)
        : this(module, group, bucketBytes, perTensorBuckets: true)
    {
    }

    private DistributedDataParallel(nn.Module module, ProcessGroup group, long bucketBytes, bool perTensorBuckets)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(group);
        if (bucketBytes <= 0) throw new ArgumentOutOfRangeException(nameof(bucketBytes), bucketBytes, "bucketBytes must be positive.");
        Module = module;
        Group = group;
        BucketBytes = bucketBytes;
        _state = [.. module.named_parameters().Select(p => (p.name, (Tensor)p.parameter)), .. module.named_buffers().Select(b => (b.name, b.buffer))];
        _buckets = perTensorBuckets ? Assign(module.named_parameters().Where(p => p.parameter.requires_grad).Reverse().ToList(), bucketBytes, !group.SkipsCollectives) : [];
    }

    /// <summary>
    /// Wraps a module whose parameters live in a flat training state (<see cref="FlatParameters"/>): the buckets are
    /// slices of the flat gradient buffer (reverse parameter order, about <paramref name="bucketBytes"/> each, cut at
    /// parameter boundaries), reduced in place — no packing, no unpacking — and averaged by one division. Every
    /// parameter has a gradient in a flat state (zero where unused), so there is no "missing gradient" case.
    /// </summary>
    /// <param name="module">The model whose parameters <paramref name="flat"/> holds.</param>
    /// <param name="group">The ranks.</param>
    /// <param name="flat">The model's flat parameters and gradients.</param>
    /// <param name="bucketBytes">Bucket capacity in bytes.</param>
    public DistributedDataParallel(nn.Module module, ProcessGroup group, FlatParameters flat, long bucketBytes = DefaultBucketBytes)
        : this(module, group, bucketBytes, perTensorBuckets: false)
    {
        ArgumentNullException.ThrowIfNull(flat);
        if (!flat.HasGradients) throw new ArgumentException("The flat parameters have no gradient buffer to reduce.", nameof(flat));
        _flat = flat;
        var buckets = new List<(Tensor, string[])>();
        long end = flat.Gradients.numel(), elementSize = flat.Gradients.ElementSize;
        var names = new List<string>();
        long start = end;
        // Walk backwards: the first bucket holds the last parameters, which backward finishes first.
        for (int i = flat.Entries.Count - 1; i >= 0; i--)
        {
            var e = flat.Entries[i];
            start = e.Offset;
            names.Add(e.Name);
            if ((end - start) * elementSize >= bucketBytes || i == 0)
            {
                if (i == 0) start = 0;
                buckets.Add((flat.Gradients.narrow(0, start, end - start).DetachFromDisposeScope(), [.. names]));
                names.Clear();
                end = start;
            }
        }
        _flatBuckets = [.. buckets];
    }

    /// <summary>The wrapped module.</summary>
    public nn.Module Module { get; }

    /// <summary>The ranks.</summary>
    public ProcessGroup Group { get; }

    /// <summary>Bucket capacity in bytes.</summary>
    public long BucketBytes { get; }

    /// <summary>The parameters of each bucket, in reduction order (the first bucket holds the last parameters).</summary>
    public IReadOnlyList<IReadOnlyList<string>> Buckets => _flat is not null
        ? _flatBuckets.Select(b => (IReadOnlyList<string>)b.Names).ToList()
        : _buckets.Select(b => (IReadOnlyList<string>)b.Entries.Select(e => e.Name).ToList()).ToList();

    /// <summary>
    /// Copies rank 0's parameters and buffers to every rank (call once, before training, on every rank), after
    /// checking that every rank has the same parameter names and shapes.
    /// </summary>
    /// <exception cref="DistributedException">The ranks' models differ.</exception>
    public void SynchronizeParameters()
    {
        if (Group.SkipsCollectives) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var signature = Signature();
        var theirs = signature.clone();
        Group.Broadcast(theirs, 0, "model signature (parameter count, size, names and shapes)");
        if (!theirs.eq(signature).all().item<bool>())
        {
            var (count, size) = (signature[0].item<long>(), signature[1].item<long>());
            throw new DistributedException(Group.Rank, "checking the model",
                string.Create(CultureInfo.InvariantCulture,
                    $"rank {Group.Rank}: the model differs from rank 0's ({count} tensors, {size:N0} values here; rank 0: {theirs[0].item<long>()} tensors, {theirs[1].item<long>():N0} values, or different names/shapes); every rank must build the same model."));
        }
        foreach (var (name, tensor) in _state)
        {
            var target = tensor.device_type == Group.Device.type ? tensor : tensor.to(Group.Device);
            Group.Broadcast(target, 0, $"'{name}' from rank 0");
            if (!ReferenceEquals(target, tensor)) tensor.copy_(target);
        }
    }

    /// <summary>Replaces every rank's gradients by their mean over the ranks (call after backward, before clipping
    /// and the optimiser step, on every rank).</summary>
    public void AverageGradients()
    {
        if (Group.SkipsCollectives) return;
        if (_flat is not null)
        {
            using var flatNoGrad = no_grad();
            Group.AllReduceCoalesced(_flatBuckets.Select(b => b.Slice).ToList(), ReduceOperation.Sum,
                string.Create(CultureInfo.InvariantCulture, $"{_flatBuckets.Length} flat gradient bucket(s)"));
            using var worldSize = Group.WorldSize.ToScalar();
            _flat.Gradients.div_(worldSize);
            return;
        }
        if (_buckets.Length == 0) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var bucket in _buckets) bucket.Pack();
        Group.AllReduceCoalesced(_buckets.Select(b => b.Flat).ToList(), ReduceOperation.Sum,
            string.Create(CultureInfo.InvariantCulture, $"{_buckets.Length} gradient bucket(s)"));
        foreach (var bucket in _buckets) bucket.Unpack(Group.WorldSize);
    }

    /// <summary>Frees the buckets' buffers.</summary>
    public void Dispose()
    {
        foreach (var bucket in _buckets) bucket.Dispose();
        foreach (var (slice, _) in _flatBuckets) slice.Dispose();
    }

    private Tensor Signature()
    {
        // FNV-1a over names and shapes: equal on every rank exactly when the models have the same layout.
        ulong hash = 14695981039346656037;
        long size = 0;
        void Mix(long value)
        {
            for (int i = 0; i < 8; i++, value >>= 8) hash = (hash ^ (byte)value) * 1099511628211;
        }
        foreach (var (name, tensor) in _state)
        {
            foreach (char c in name) Mix(c);
            foreach (var d in tensor.shape) Mix(d);
            Mix((long)tensor.dtype);
            size += tensor.numel();
        }
        return tensor(new[] { _state.Count, size, (long)(hash >> 1) }, device: Group.Device);
    }

    private static Bucket[] Assign(List<(string name, Parameter parameter)> parameters, long capacity, bool allocate)
    {
        var buckets = new List<Bucket>();
        var open = new Dictionary<(ScalarType, DeviceType, int), List<(string, Parameter)>>();
        var bytes = new Dictionary<(ScalarType, DeviceType, int), long>();
        foreach (var (name, p) in parameters)
        {
            var key = (p.dtype, p.device_type, p.device_index);
            if (!open.TryGetValue(key, out var list)) open[key] = list = [];
            list.Add((name, p));
            bytes[key] = bytes.GetValueOrDefault(key) + p.numel() * p.ElementSize;
            if (bytes[key] >= capacity)
            {
                buckets.Add(new Bucket(list, allocate));
                open.Remove(key);
                bytes.Remove(key);
            }
        }
        foreach (var list in open.Values) buckets.Add(new Bucket(list, allocate));
        return [.. buckets];
    }

    private sealed class Bucket : IDisposable
    {
        private readonly float[] _present;
        private readonly long _values;

        public Bucket(List<(string Name, Parameter Parameter)> parameters, bool allocate)
        {
            long offset = 0;
            Entries = parameters.Select(p =>
            {
                var entry = new Entry(p.Name, p.Parameter, offset, p.Parameter.numel());
                offset += entry.Count;
                return entry;
            }).ToArray();
            _values = offset;
            _present = new float[Entries.Length];
            var first = parameters[0].Parameter;
            // One buffer for the gradients and, after them, one "has a gradient" flag per parameter: a single
            // collective carries both. Created outside any dispose scope: it lives as long as the wrapper.
            Flat = allocate
                ? empty(_values + Entries.Length, dtype: first.dtype, device: first.device).DetachFromDisposeScope()
                : empty(0, dtype: first.dtype, device: first.device).DetachFromDisposeScope();
        }

        public Entry[] Entries { get; }

        public Tensor Flat { get; }

        public void Pack()
        {
            for (int i = 0; i < Entries.Length; i++)
            {
                var e = Entries[i];
                var slice = Flat.narrow(0, e.Offset, e.Count);
                var grad = e.Parameter.grad;
                if (grad is null)
                {
                    slice.zero_();
                    _present[i] = 0;
                }
                else
                {
                    slice.copy_(grad.reshape(-1));
                    _present[i] = 1;
                }
            }
            Flat.narrow(0, _values, Entries.Length).copy_(tensor(_present));
        }

        public void Unpack(int worldSize)
        {
            using var counts = Flat.narrow(0, _values, Entries.Length).to(ScalarType.Float32, CPU);
            var present = counts.data<float>().ToArray();
            using (var ranks = worldSize.ToScalar()) Flat.narrow(0, 0, _values).div_(ranks);
            for (int i = 0; i < Entries.Length; i++)
            {
                if (present[i] == 0) continue; // no rank produced a gradient: leave it missing
                var e = Entries[i];
                var averaged = Flat.narrow(0, e.Offset, e.Count).view(e.Parameter.shape);
                var grad = e.Parameter.grad;
                if (grad is null) e.Parameter.grad = averaged.clone().DetachFromDisposeScope();
                else grad.copy_(averaged);
            }
        }

        public void Dispose() => Flat.Dispose();
    }

    private sealed record Entry(string Name, Parameter Parameter, long Offset, long Count);
}
