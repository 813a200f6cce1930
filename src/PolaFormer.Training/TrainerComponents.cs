using static TorchSharp.torch;

namespace PolaFormer.Training;

/// <summary>What a learning-rate schedule is told: where the run is and what the recipe asked for.</summary>
/// <param name="Step">Global optimiser step, 0-based (the rate for the step about to run).</param>
/// <param name="StepsPerEpoch">Optimiser steps in one epoch.</param>
/// <param name="TotalSteps">Optimiser steps in the whole run.</param>
/// <param name="BaseLr">The recipe's peak rate after linear scaling with the total batch
/// (<see cref="TrainingOptions.ScaledLearningRates"/>).</param>
public readonly record struct ScheduleStep(long Step, long StepsPerEpoch, long TotalSteps, double BaseLr);

/// <summary>
/// The parts of the training step a caller may replace; a null member keeps the recipe's. The flat AdamW state, the
/// gradient clipping, mixed precision, EMA and checkpoints stay the <see cref="Trainer"/>'s, so a replaced part is
/// still checkpointed and resumed like the rest.
/// </summary>
/// <example><code>
/// var components = new TrainerComponents
/// {
///     Loss = (logits, targets) => nn.functional.cross_entropy(logits, targets.argmax(1)),     // hard labels
///     LearningRate = s => s.BaseLr * Math.Pow(0.97, (double)s.Step / s.StepsPerEpoch),       // exponential decay
/// };
/// var trainer = new Trainer(options, data, "runs/mine", components: components);
/// </code></example>
public sealed record TrainerComponents
{
    /// <summary>The loss of a batch: logits (B, classes) in float32 and the targets (B, classes) as probabilities
    /// (one-hot, or soft after mixup/cutmix and label smoothing), to a scalar tensor. Default: the recipe's soft-target
    /// cross-entropy.</summary>
    public Func<Tensor, Tensor, Tensor>? Loss { get; init; }

    /// <summary>The learning rate of a step. Default: the recipe's linear warmup and cosine decay
    /// (<see cref="TrainingOptions.WarmupEpochs"/>, <see cref="TrainingOptions.WarmupLr"/>,
    /// <see cref="TrainingOptions.MinLr"/>), stepped per iteration. It must be a pure function of its argument: a
    /// resumed run asks it again for the steps it continues from.</summary>
    public Func<ScheduleStep, double>? LearningRate { get; init; }

    /// <summary>The training images' pipeline, from the run's data recipe. Default:
    /// <see cref="Data.ImagePipeline.Train"/> of the recipe (compose your own stages onto it with
    /// <see cref="Data.ImagePipeline.Append"/>). It must give the recipe's image size.</summary>
    public Func<Data.DataRecipe, Data.ImagePipeline>? TrainPipeline { get; init; }
}
