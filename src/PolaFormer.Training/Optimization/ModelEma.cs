using PolaFormer.Models;
using static TorchSharp.torch;

namespace PolaFormer.Training.Optimization;

/// <summary>
/// Exponential moving average of a model's weights (timm's <c>ModelEmaV2</c>): after each step,
/// <c>ema ← decay·ema + (1 − decay)·model</c> for floating-point entries; integer buffers are copied.
/// </summary>
public sealed class ModelEma : IDisposable
{
    /// <summary>Creates the average as a copy of <paramref name="source"/>'s current weights.</summary>
    /// <param name="shadow">A model of the same architecture (it receives the averaged weights).</param>
    /// <param name="source">The model being trained.</param>
    /// <param name="decay">Decay per step, in (0, 1); timm's default 0.9998.</param>
    public ModelEma(Backbone shadow, Backbone source, double decay = 0.9998)
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
    }

    /// <summary>The averaged model (in evaluation mode).</summary>
    public Backbone Model { get; }

    /// <summary>Decay per step.</summary>
    public double Decay { get; }

    /// <summary>Moves the average towards <paramref name="source"/>'s weights.</summary>
    public void Update(Backbone source)
    {
        using var noGrad = no_grad();
        var from = source.state_dict();
        foreach (var (name, t) in Model.state_dict())
        {
            var s = from[name];
            if (t.is_floating_point()) t.lerp_(s, 1 - Decay);
            else t.copy_(s);
        }
    }

    /// <inheritdoc />
    public void Dispose() => Model.Dispose();
}
