using PolaFormer.Models;
using TorchSharp.Modules;

namespace PolaFormer.Training.Optimization;

/// <summary>
/// Splits a model's parameters into those that take weight decay and those that do not, as the official (Swin)
/// training code does: 1-D parameters (norm weights, biases, the polarity <c>power</c>/<c>scale</c> are not 1-D),
/// names ending in ".bias", the model's <see cref="Backbone.NoWeightDecay"/> names and names containing one of its
/// <see cref="Backbone.NoWeightDecayKeywords"/> take none.
/// </summary>
public static class ParameterGroups
{
    /// <summary>(decay, noDecay) named parameters that require gradients.</summary>
    public static (IReadOnlyList<(string Name, Parameter Parameter)> Decay, IReadOnlyList<(string Name, Parameter Parameter)> NoDecay)
        Split(Backbone model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var skip = model.NoWeightDecay;
        var keywords = model.NoWeightDecayKeywords;
        var decay = new List<(string, Parameter)>();
        var noDecay = new List<(string, Parameter)>();
        foreach (var (name, p) in model.named_parameters())
        {
            if (!p.requires_grad) continue;
            bool exempt = p.dim() == 1 || name.EndsWith(".bias", StringComparison.Ordinal) || skip.Contains(name)
                          || keywords.Any(k => name.Contains(k, StringComparison.Ordinal));
            (exempt ? noDecay : decay).Add((name, p));
        }
        return (decay, noDecay);
    }
}
