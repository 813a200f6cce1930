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

    /// <summary>
    /// The stochastic-depth rule every family uses: block k of <paramref name="totalBlocks"/> (counted over all stages)
    /// gets the k-th value of <c>torch.linspace(0, rate, totalBlocks)</c> in float32, widened to double — the official
    /// <c>[x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]</c>, bit for bit.
    /// </summary>
    /// <remarks>Computed here as LibTorch's CPU kernel computes it: step = rate / (n − 1) in float32, then
    /// step·k for the first half and rate − step·(n − 1 − k) for the second, each as one fused multiply-add (how the
    /// kernel is compiled for x86-64 with AVX2 and later, and for ARM64). So the last block gets exactly the float32
    /// rate, and a rate such as 0.1 becomes 0.100000001490116 (the float32 nearest 0.1).</remarks>
    /// <param name="rate">Drop probability of the last block, in [0, 1).</param>
    /// <param name="totalBlocks">Blocks of the whole model (0 gives an empty schedule, 1 a single 0).</param>
    /// <exception cref="ArgumentOutOfRangeException">rate is outside [0, 1) or totalBlocks is negative.</exception>
    public static double[] LinearSchedule(double rate, int totalBlocks)
    {
        Check.Probability(rate, nameof(rate));
        ArgumentOutOfRangeException.ThrowIfNegative(totalBlocks);
        var schedule = new double[totalBlocks];
        if (totalBlocks < 2) return schedule;   // torch.linspace(0, rate, 1) is [0]
        float end = (float)rate;
        float step = end / (totalBlocks - 1);
        int halfway = totalBlocks / 2;
        for (int k = 0; k < totalBlocks; k++)
            schedule[k] = k < halfway
                ? MathF.FusedMultiplyAdd(step, k, 0f)
                : MathF.FusedMultiplyAdd(-step, totalBlocks - 1 - k, end);
        return schedule;
    }

    /// <summary>x (B, …) → x with whole samples zeroed in training.</summary>
    public override Tensor forward(Tensor x)
    {
        if (!training || Probability == 0) return x.alias();
        using var scope = NewDisposeScope();
        double keep = 1 - Probability;
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[0] = x.shape[0];
        using var keepScalar = keep.ToScalar();   // explicit: implicit Scalars can be freed mid-call (docs/known-issues.md)
        var mask = empty(shape, dtype: x.dtype, device: x.device).bernoulli_(keep).div_(keepScalar);
        return (x * mask).MoveToOuterDisposeScope();
    }
}
