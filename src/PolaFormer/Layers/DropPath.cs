using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Layers;

/// <summary>
/// Stochastic depth per sample (timm's <c>DropPath</c>): in training, zeroes a residual branch for a random subset
/// of the batch and rescales the rest by 1/(1 − p); identity in evaluation.
/// </summary>
public sealed class DropPath : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the layer.</summary>
    /// <param name="probability">Probability of dropping the branch for a sample, in [0, 1).</param>
    public DropPath(double probability) : base(nameof(DropPath))
    {
        Check.Probability(probability, nameof(probability));
        Probability = probability;
    }

    /// <summary>Probability of dropping the branch for a sample.</summary>
    public double Probability { get; }

    /// <summary>x (B, …) → x with whole samples zeroed in training.</summary>
    public override Tensor forward(Tensor x)
    {
        if (!training || Probability == 0) return x.alias();
        using var scope = NewDisposeScope();
        double keep = 1 - Probability;
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[0] = x.shape[0];
        var mask = empty(shape, dtype: x.dtype, device: x.device).bernoulli_(keep).div_(keep);
        return (x * mask).MoveToOuterDisposeScope();
    }
}
