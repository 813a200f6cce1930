using System.Globalization;
using PolaFormer.Training.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Training.Optimization;

/// <summary>One parameter's place in a <see cref="FlatParameters"/> buffer.</summary>
/// <param name="Name">The parameter's name in the model.</param>
/// <param name="Parameter">The parameter (its data is a view of <see cref="FlatParameters.Values"/>).</param>
/// <param name="Offset">First element in the flat buffers.</param>
/// <param name="Count">Elements of the parameter.</param>
/// <param name="Group">Index of the group it belongs to.</param>
public sealed record FlatEntry(string Name, Parameter Parameter, long Offset, long Count, int Group);

/// <summary>A contiguous run of a <see cref="FlatParameters"/> buffer holding one parameter group.</summary>
/// <param name="Offset">First element of the group in the flat buffers.</param>
/// <param name="Length">Elements of the group, alignment padding included.</param>
/// <param name="Entries">The group's parameters, in order.</param>
public sealed record FlatGroup(long Offset, long Length, IReadOnlyList<FlatEntry> Entries);

/// <summary>
/// A model's trainable parameters and their gradients, each group in one contiguous run of two flat buffers: every
/// parameter's data is a view of <see cref="Values"/> and its <c>.grad</c> a view of <see cref="Gradients"/>, so the
/// whole training state can be updated with a handful of kernel launches instead of several per tensor — what
/// PyTorch's multi-tensor (<c>foreach</c>) optimisers buy on CUDA, and what TorchSharp has no API for.
/// <para>Backward accumulates into the gradient views in place (autograd adds into an existing <c>.grad</c> when it
/// is defined), so the views stay attached as long as nobody sets a gradient to null or replaces it: clear
/// gradients with <see cref="ZeroGradients"/>, never with an optimiser's <c>zero_grad</c> that sets them to none.
/// </para>
/// <para>Flatten a model after moving it to its device and dtype: <c>Module.to</c> replaces parameter objects and
/// would detach them from the buffers (<see cref="Verify"/> detects that). Each parameter starts on a multiple of
/// <see cref="AlignmentElements"/> elements so vectorised kernels see aligned views; the padding between parameters
/// is zero and stays zero under every update this library makes.</para>
/// </summary>
public sealed class FlatParameters : IDisposable
{
    /// <summary>Every parameter starts at a multiple of this many elements: 64 bytes (a cache line, the alignment
    /// LibTorch's CPU allocator gives every tensor) in the 2-byte dtypes of a mirrored low-precision copy, 128 in
    /// float32.</summary>
    /// <remarks>At 16 elements, a bfloat16 copy's weights sat on 32-byte boundaries, and LibTorch 2.10's bfloat16
    /// CPU kernels on an AVX-512 machine computed gradients that differed from those of the same weights in separate
    /// tensors (FlatTrainingStateTests, 2026-12-04).</remarks>
    public const long AlignmentElements = 32;

    /// <summary>The flat buffers' length is a multiple of this (reductions walk them as rows of this length).</summary>
    public const long RowElements = 1024;

    private readonly FlatEntry[] _entries;

    private FlatParameters(Tensor values, Tensor gradients, FlatEntry[] entries, FlatGroup[] groups)
    {
        Values = values;
        Gradients = gradients;
        _entries = entries;
        Groups = groups;
    }

    /// <summary>All parameters, one-dimensional, groups one after another.</summary>
    public Tensor Values { get; }

    /// <summary>All gradients, laid out as <see cref="Values"/>.</summary>
    public Tensor Gradients { get; }

    /// <summary>The groups, in the order they were given.</summary>
    public IReadOnlyList<FlatGroup> Groups { get; }

    /// <summary>Every parameter, group by group.</summary>
    public IReadOnlyList<FlatEntry> Entries => _entries;

    /// <summary>The dtype of every parameter.</summary>
    public ScalarType Dtype => Values.dtype;

    /// <summary>Values of group <paramref name="group"/> (a view).</summary>
    public Tensor GroupValues(int group) => Values.narrow(0, Groups[group].Offset, Groups[group].Length);

    /// <summary>Gradients of group <paramref name="group"/> (a view).</summary>
    public Tensor GroupGradients(int group) => Gradients.narrow(0, Groups[group].Offset, Groups[group].Length);

    /// <summary>
    /// Moves <paramref name="groups"/>' parameters into two new flat buffers (values and gradients, zeroed) on their
    /// device, and points every parameter and its gradient at its view. The values are unchanged.
    /// </summary>
    /// <param name="groups">Parameter groups, e.g. <see cref="ParameterGroups.Split"/>'s (decay, noDecay). Every
    /// parameter must be distinct, require gradients, and share one dtype and one device.</param>
    /// <exception cref="ArgumentException">No parameters, a repeated parameter, or mixed dtypes or devices.</exception>
    public static FlatParameters Create(IReadOnlyList<IReadOnlyList<(string Name, Parameter Parameter)>> groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var all = groups.SelectMany(g => g).ToList();
        if (all.Count == 0) throw new ArgumentException("There are no parameters to flatten: every group is empty.", nameof(groups));
        var first = all[0].Parameter;
        var seen = new HashSet<IntPtr>();
        foreach (var (name, p) in all)
        {
            if (p.dtype != first.dtype || p.device_type != first.device_type || p.device_index != first.device_index)
                throw new ArgumentException(
                    $"Parameter '{name}' is {p.dtype} on {p.device}; every flattened parameter must share '{all[0].Name}''s {first.dtype} on {first.device}.", nameof(groups));
            if (!p.is_floating_point())
                throw new ArgumentException($"Parameter '{name}' has dtype {p.dtype}; only floating-point parameters can be trained.", nameof(groups));
            if (!seen.Add(p.Handle))
                throw new ArgumentException($"Parameter '{name}' appears twice in the groups; each parameter belongs to one group.", nameof(groups));
        }

        var entries = new List<FlatEntry>();
        var flatGroups = new List<FlatGroup>();
        long offset = 0;
        for (int g = 0; g < groups.Count; g++)
        {
            long start = offset;
            var members = new List<FlatEntry>();
            foreach (var (name, p) in groups[g])
            {
                var entry = new FlatEntry(name, p, offset, p.numel(), g);
                members.Add(entry);
                offset = Align(offset + entry.Count);
            }
            entries.AddRange(members);
            flatGroups.Add(new FlatGroup(start, offset - start, members));
        }

        long length = (offset + RowElements - 1) / RowElements * RowElements;
        return Build(first, [.. entries], [.. flatGroups], Math.Max(length, RowElements), withGradients: true);
    }

    /// <summary>
    /// Flattens <paramref name="module"/>'s parameters with exactly <paramref name="layout"/>'s layout (same names,
    /// offsets and groups), in the module's own dtype and device: the float32 master's bfloat16 copy, or its EMA, so
    /// that one <c>copy_</c> or <c>lerp_</c> over the flat buffers updates all of them.
    /// </summary>
    /// <param name="layout">The flattened model this one mirrors.</param>
    /// <param name="module">A model of the same architecture, already in its dtype and on its device.</param>
    /// <param name="withGradients">Give the mirror a flat gradient buffer too (a copy that runs backward); an EMA
    /// needs none.</param>
    /// <exception cref="ArgumentException">The module lacks one of the layout's parameters or has another shape.</exception>
    public static FlatParameters Mirror(FlatParameters layout, nn.Module module, bool withGradients)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(module);
        var mine = module.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var entries = layout._entries.Select(e =>
        {
            if (!mine.TryGetValue(e.Name, out var p))
                throw new ArgumentException($"The model to mirror has no parameter '{e.Name}'; it must be the same architecture.", nameof(module));
            if (!p.shape.SequenceEqual(e.Parameter.shape))
                throw new ArgumentException($"Parameter '{e.Name}' is {Shape(p)} in the model to mirror; expected {Shape(e.Parameter)}.", nameof(module));
            return e with { Parameter = p };
        }).ToArray();
        var first = entries[0].Parameter;
        foreach (var e in entries)
            if (e.Parameter.dtype != first.dtype || e.Parameter.device_type != first.device_type || e.Parameter.device_index != first.device_index)
                throw new ArgumentException($"Parameter '{e.Name}' is {e.Parameter.dtype} on {e.Parameter.device}; every parameter of the model to mirror must share {first.dtype} on {first.device}.", nameof(module));
        var groups = layout.Groups.Select((g, i) => new FlatGroup(g.Offset, g.Length, entries.Where(e => e.Group == i).ToList())).ToArray();
        return Build(first, entries, groups, layout.Values.numel(), withGradients);
    }

    private static FlatParameters Build(Tensor like, FlatEntry[] entries, FlatGroup[] groups, long length, bool withGradients)
    {
        var values = zeros(length, dtype: like.dtype, device: like.device).DetachFromDisposeScope();
        var gradients = zeros(withGradients ? length : 0, dtype: like.dtype, device: like.device).DetachFromDisposeScope();
        using (no_grad())
        {
            foreach (var e in entries)
            {
                using var view = values.narrow(0, e.Offset, e.Count).view(e.Parameter.shape);
                view.copy_(e.Parameter);
                e.Parameter.set_(view);
                if (withGradients) e.Parameter.grad = gradients.narrow(0, e.Offset, e.Count).view(e.Parameter.shape);
            }
        }
        return new FlatParameters(values, gradients, entries, groups) { HasGradients = withGradients };
    }

    /// <summary>Whether the parameters have flat gradients (false for a <see cref="Mirror"/> made without them).</summary>
    public bool HasGradients { get; private init; }

    /// <summary>Sets every gradient to zero: one kernel.</summary>
    public void ZeroGradients()
    {
        RequireGradients();
        using var noGrad = no_grad();
        Gradients.zero_();
    }

    /// <summary>
    /// Scales the gradients so their global L2 norm is at most <paramref name="maxNorm"/> (PyTorch's
    /// <c>clip_grad_norm_</c>: coefficient <c>maxNorm / (norm + 1e-6)</c>, capped at 1), without a host
    /// synchronisation: the coefficient stays on the device.
    /// </summary>
    /// <returns>The norm before clipping, as a scalar tensor on the device (reading it synchronises).</returns>
    public Tensor ClipGradientNorm(double maxNorm)
    {
        if (!(maxNorm > 0) || !double.IsFinite(maxNorm))
            throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "maxNorm must be a positive finite number.");
        RequireGradients();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        // The norm of the norms of 1,024-element rows: one float32 norm over millions of elements drifts (LibTorch's
        // CPU kernel by ~1e-4 relative on 5 M values), short rows stay near float rounding as clip_grad_norm_'s
        // per-tensor norms do. Two kernels; the buffers' length is a multiple of the row length.
        var wide = Gradients.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? Gradients.to(ScalarType.Float32) : Gradients;
        var norm = wide.view(-1, RowElements).norm(1).norm();
        // Explicit Scalars (see ScalarArithmetic: implicit ones can be freed by the finalizer mid-call).
        using var epsilon = 1e-6.ToScalar();
        using var limit = maxNorm.ToScalar();
        using var one = 1.0.ToScalar();
        var coefficient = norm.add(epsilon, one).reciprocal_().mul_(limit).clamp_max(one);
        Gradients.mul_(coefficient.to(Gradients.dtype));
        return norm.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Checks that every parameter and gradient is still a view of the flat buffers at its place (nothing replaced a
    /// parameter or set a gradient to none). Costs a few native calls per parameter: for tests and after user code
    /// that may have touched the model, not for every step.
    /// </summary>
    /// <exception cref="InvalidOperationException">Names the first parameter that is detached.</exception>
    public void Verify()
    {
        long valueBase = (long)TensorMemory.Address(Values), gradientBase = HasGradients ? (long)TensorMemory.Address(Gradients) : 0;
        long size = Values.ElementSize;
        foreach (var e in _entries)
        {
            if (e.Parameter.IsInvalid || (long)TensorMemory.Address(e.Parameter) != valueBase + e.Offset * size)
                throw new InvalidOperationException(
                    $"Parameter '{e.Name}' no longer lives in the flat buffer (the model was moved with .to() or the parameter was replaced after flattening); flatten after moving the model.");
            if (!HasGradients) continue;
            using var grad = e.Parameter.grad;
            if (grad is null || (long)TensorMemory.Address(grad) != gradientBase + e.Offset * size)
                throw new InvalidOperationException(
                    $"The gradient of '{e.Name}' is {(grad is null ? "none" : "a separate tensor")}, not its view of the flat gradient buffer; clear gradients with FlatParameters.ZeroGradients, not a zero_grad that sets them to none.");
        }
    }

    /// <summary>
    /// Checks that <paramref name="other"/> has the same layout (names, shapes, offsets), so one flat buffer can be
    /// copied into the other element for element (a low-precision copy or an EMA of the same model).
    /// </summary>
    /// <exception cref="ArgumentException">Names the first difference.</exception>
    public void RequireSameLayout(FlatParameters other, string otherName)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other._entries.Length != _entries.Length || other.Values.numel() != Values.numel())
            throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture,
                    $"{otherName} has {other._entries.Length} parameters in {other.Values.numel()} flat elements; expected {_entries.Length} in {Values.numel()} (the same architecture, flattened the same way)."),
                otherName);
        for (int i = 0; i < _entries.Length; i++)
        {
            FlatEntry a = _entries[i], b = other._entries[i];
            if (a.Name != b.Name || a.Offset != b.Offset || !a.Parameter.shape.SequenceEqual(b.Parameter.shape))
                throw new ArgumentException(
                    $"{otherName}'s parameter {i} is '{b.Name}' {Shape(b.Parameter)}; expected '{a.Name}' {Shape(a.Parameter)}.", otherName);
        }
    }

    /// <summary>Frees the flat buffers (the parameters keep them alive while they exist).</summary>
    public void Dispose()
    {
        Values.Dispose();
        Gradients.Dispose();
    }

    private void RequireGradients()
    {
        if (!HasGradients) throw new InvalidOperationException("These flat parameters were made without gradients (an EMA mirror); they have none to clear or clip.");
    }

    private static long Align(long offset) => (offset + AlignmentElements - 1) / AlignmentElements * AlignmentElements;

    private static string Shape(Tensor t) => "(" + string.Join(", ", t.shape) + ")";
}
