using static TorchSharp.torch;

namespace PolaFormer.Training.Data;

/// <summary>timm's <c>SoftTargetCrossEntropy</c>, the loss the official code uses with mixup: the mean over the batch
/// of −Σ target · log_softmax(logits).</summary>
public static class SoftTargetCrossEntropy
{
    /// <summary>The mean soft-target cross-entropy, a scalar.</summary>
    /// <param name="logits">(B, classes) raw scores.</param>
    /// <param name="targets">(B, classes) probabilities (e.g. from <see cref="Mixup.Apply"/>).</param>
    public static Tensor Compute(Tensor logits, Tensor targets)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(targets);
        if (logits.dim() != 2 || !logits.shape.SequenceEqual(targets.shape))
            throw new ArgumentException(
                $"logits {Shape(logits)} and targets {Shape(targets)} must both be (B, classes) of the same shape.", nameof(targets));
        using var scope = NewDisposeScope();
        var loss = (-targets * nn.functional.log_softmax(logits, -1)).sum(-1).mean();
        return loss.MoveToOuterDisposeScope();
    }

    private static string Shape(Tensor t) => "(" + string.Join(", ", t.shape) + ")";
}
