using static TorchSharp.torch;

namespace PolaFormer.Training;

/// <summary>What a learning-rate schedule is told: where the run is and what the recipe asked for.</summary>
/// <param name="Step">Global optimiser step, 0-based (the rate for the step about to run).</param>
/// <param name="StepsPerEpoch">Optimiser steps in one epoch.</param>
/// <param name="TotalSteps">Optimiser steps in the whole run.</param>
/// <param name="BaseLr">The recipe's peak rate after linear scaling with the total batch
/// (<see cref="TrainingOptions.ScaledLearningRates"/>).</param>
public readonly record struct ScheduleStep(long Step, long StepsPerEpoch, long TotalSteps, double BaseLr);

/// <summary>What an optimizer of your own is built from: the model's trainable parameters split as the recipe splits
/// them (<see cref="Optimization.ParameterGroups.Split"/>), and the recipe's weight decay and first learning rate.</summary>
/// <param name="Decay">Parameters that take weight decay, with their names.</param>
/// <param name="NoDecay">Parameters that take none (norms, biases, the model's exemptions), with their names.</param>
/// <param name="WeightDecay">The recipe's weight decay (<see cref="TrainingOptions.WeightDecay"/>).</param>
/// <param name="LearningRate">The schedule's rate for the first step.</param>
public sealed record OptimizerParameters(
    IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Parameter)> Decay,
    IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Parameter)> NoDecay,
    double WeightDecay,
    double LearningRate);

/// <summary>
/// The parts of the training step a caller may replace; a null member keeps the recipe's. Gradient zeroing and
/// clipping, mixed precision, EMA and checkpoints stay the <see cref="Trainer"/>'s, so a replaced part is still
/// checkpointed and resumed like the rest.
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

    /// <summary>
    /// The optimizer, built once per run from <see cref="OptimizerParameters"/> (any TorchSharp optimizer, e.g.
    /// <c>p => optim.SGD(p.Decay.Concat(p.NoDecay).Select(x => x.Parameter), p.LearningRate, momentum: 0.9)</c>).
    /// Default: the recipe's AdamW over flat buffers (<see cref="Optimization.FlatAdamW"/>). The Trainer owns and
    /// disposes what this returns; before every step it sets each parameter group's learning rate from the schedule,
    /// it zeroes and clips the gradients itself, and it saves and restores the optimizer's state dict with each
    /// checkpoint, so a resumed run continues with the same moments or momenta. The parameters are views into the
    /// Trainer's flat buffers: update them in place, as TorchSharp's optimizers do.
    /// </summary>
    public Func<OptimizerParameters, TorchSharp.Modules.OptimizerHelper>? Optimizer { get; init; }
}
