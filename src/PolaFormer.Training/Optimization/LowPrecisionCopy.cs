using PolaFormer.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Training.Optimization;

/// <summary>
/// Float32 master weights for training in float16 or bfloat16 (what PyTorch's AMP gives with float32 parameters):
/// the forward and backward passes run on a low-precision copy of the model, the gradients are moved to the float32
/// master, the optimiser updates the master, and the copy is refreshed. Adam's second moment and its ε (1e-8 is zero
/// in float16) stay in float32, where they belong.
/// <para>Given the master's <see cref="FlatParameters"/>, the copy is flattened the same way and moving gradients
/// and refreshing the weights are one <c>copy_</c> each over the flat buffers, instead of one per tensor.</para>
/// </summary>
public sealed class LowPrecisionCopy
{
    private readonly (Parameter Master, Parameter Copy)[] _pairs;
    private readonly FlatParameters? _master, _copy;

    /// <summary>Pairs <paramref name="master"/> (float32) with <paramref name="copy"/> (same architecture), converts the
    /// copy to <paramref name="dtype"/> and loads the master's weights into it.</summary>
    public LowPrecisionCopy(Backbone master, Backbone copy, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(master);
        ArgumentNullException.ThrowIfNull(copy);
        Copy = copy;
        Copy.to(dtype);
        var copies = copy.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        _pairs = master.named_parameters().Select(p => (p.parameter, copies.TryGetValue(p.name, out var c)
            ? c
            : throw new ArgumentException($"The low-precision copy has no parameter '{p.name}'; it must be the same architecture.", nameof(copy)))).ToArray();
        using var noGrad = no_grad();
        var buffers = master.state_dict();
        foreach (var (name, t) in copy.state_dict()) t.copy_(buffers[name]);
    }

    /// <summary>Pairs the flattened <paramref name="master"/> with <paramref name="copy"/> (same architecture): the
    /// copy is converted to <paramref name="dtype"/>, loaded with the master's weights and flattened with the master's
    /// layout.</summary>
    public LowPrecisionCopy(FlatParameters master, Backbone masterModel, Backbone copy, ScalarType dtype)
        : this(masterModel, copy, dtype)
    {
        ArgumentNullException.ThrowIfNull(master);
        _master = master;
        _copy = FlatParameters.Mirror(master, copy, withGradients: true);
    }

    /// <summary>The copy's flat state, when the master was given as <see cref="FlatParameters"/>.</summary>
    public FlatParameters? CopyParameters => _copy;

    /// <summary>The low-precision model the passes run on.</summary>
    public Backbone Copy { get; }

    /// <summary>Moves the copy's gradients to the master (as float32) and clears the copy's.</summary>
    public void MoveGradients()
    {
        using var noGrad = no_grad();
        if (_copy is not null)
        {
            _master!.Gradients.copy_(_copy.Gradients);
            _copy.Gradients.zero_();
            return;
        }
        foreach (var (master, copy) in _pairs)
        {
            if (copy.grad is null) continue;
            if (master.grad is null) master.grad = copy.grad.to(ScalarType.Float32);
            else master.grad.copy_(copy.grad);
            copy.grad.zero_();
        }
    }

    /// <summary>Refreshes the copy from the master after an optimiser step.</summary>
    public void Refresh()
    {
        using var noGrad = no_grad();
        if (_copy is not null)
        {
            _copy.Values.copy_(_master!.Values);
            return;
        }
        foreach (var (master, copy) in _pairs) copy.copy_(master);
    }
}
