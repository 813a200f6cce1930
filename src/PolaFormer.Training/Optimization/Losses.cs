using static TorchSharp.torch;

namespace PolaFormer.Training.Optimization;

/// <summary>The recipe's losses.</summary>
public static class Losses
{
    /// <summary>Cross entropy against soft targets (mixup/cutmix with label smoothing):
    /// mean over the batch of <c>−Σ target · log_softmax(logits)</c>.</summary>
    /// <param name="logits">(B, classes).</param>
    /// <param name="targets">(B, classes), rows summing to 1.</param>
    public static Tensor SoftTargetCrossEntropy(Tensor logits, Tensor targets)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(targets);
        if (logits.dim() != 2 || !targets.shape.SequenceEqual(logits.shape))
            throw new ArgumentException($"targets has shape {Format(targets.shape)}; expected the logits' shape {Format(logits.shape)}.", nameof(targets));
        using var scope = NewDisposeScope();
        var loss = (-targets * nn.functional.log_softmax(logits, -1)).sum(-1).mean();
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>Cross entropy against class indices with label smoothing (used when mixup is off).</summary>
    /// <param name="logits">(B, classes).</param>
    /// <param name="labels">(B) int64 class indices.</param>
    /// <param name="smoothing">Label smoothing in [0, 1).</param>
    public static Tensor LabelSmoothingCrossEntropy(Tensor logits, Tensor labels, double smoothing)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(labels);
        if (!(smoothing >= 0 && smoothing < 1)) throw new ArgumentOutOfRangeException(nameof(smoothing), smoothing, "smoothing must be in [0, 1).");
        return nn.functional.cross_entropy(logits, labels, label_smoothing: smoothing);
    }

    private static string Format(long[] shape) => "(" + string.Join(", ", shape) + ")";
}
