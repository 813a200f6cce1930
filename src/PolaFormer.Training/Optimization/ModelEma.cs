using PolaFormer.Models;
using static TorchSharp.torch;

namespace PolaFormer.Training.Optimization;

/// <summary>
/// Exponential moving average of a model's weights (timm's <c>ModelEmaV2</c>): after each step,
/// <c>ema ← decay·ema + (1 − decay)·model</c> for floating-point entries; integer buffers are copied.
/// <para>Given the trained model's <see cref="FlatParameters"/>, the average's parameters are flattened the same way
/// and every update of them is one <c>lerp_</c> over the flat buffers (the buffers, few and small, go one by one).</para>
/// </summary>
public sealed class ModelEma : IDisposable
{
    private readonly FlatParameters? _flat, _sourceFlat;
    private readonly (Tensor Average, Tensor Source)[] _buffers = [];

    /// <summary>Creates the average as a copy of <paramref name="source"/>'s current weights.</summary>
    /// <param name="shadow">A model of the same architecture (it receives the averaged weights).</param>
    /// <param name="source">The model being trained.</param>
    /// <param name="decay">Decay per step, in (0, 1); timm's default 0.9998.</param>
    /// <param name="sourceFlat">The trained model's flat state (<see cref="FlatParameters"/>), or null to average
    /// tensor by tensor.</param>
    public ModelEma(Backbone shadow, Backbone source, double decay = 0.9998, FlatParameters? sourceFlat = null)
    {
        ArgumentNullException.ThrowIfNull(shadow);
        ArgumentNullException.ThrowIfNull(source);
        if (!(decay > 0 && decay < 1)) throw new ArgumentOutOfRangeException(nameof(decay), decay, "decay must be in (0, 1).");
        Model = shadow;
        Decay = decay;
        Model.eval();
        foreach (var p in Model.parameters()) p.requires_grad = false;
        using var noGrad = no_grad();
        var from = source.state_dict();
        foreach (var (name, t) in Model.state_dict()) t.copy_(from[name]);
        if (sourceFlat is not null)
        {
            _sourceFlat = sourceFlat;
            _flat = FlatParameters.Mirror(sourceFlat, Model, withGradients: false);
            var sourceBuffers = source.named_buffers().ToDictionary(b => b.name, b => b.buffer);
            _buffers = Model.named_buffers().Select(b => (b.buffer, sourceBuffers[b.name])).ToArray();
        }
    }

    /// <summary>The averaged model (in evaluation mode).</summary>
    public Backbone Model { get; }

    /// <summary>Decay per step.</summary>
    public double Decay { get; }

    /// <summary>Moves the average towards <paramref name="source"/>'s weights.</summary>
    /// <remarks>With a flat state, <paramref name="source"/> must be the model whose <see cref="FlatParameters"/> were
    /// given to the constructor.</remarks>
    public void Update(Backbone source)
    {
        using var noGrad = no_grad();
        if (_flat is not null)
        {
            _flat.Values.lerp_(_sourceFlat!.Values, 1 - Decay);
            foreach (var (average, s) in _buffers)
            {
                if (average.is_floating_point()) average.lerp_(s, 1 - Decay);
                else average.copy_(s);
            }
            return;
        }
        var from = source.state_dict();
        foreach (var (name, t) in Model.state_dict())
        {
            var s = from[name];
            if (t.is_floating_point()) t.lerp_(s, 1 - Decay);
            else t.copy_(s);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _flat?.Dispose();
        Model.Dispose();
    }
}
