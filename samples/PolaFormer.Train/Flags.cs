using System.Text.RegularExpressions;
using PolaFormer.Training;

/// <summary>The library names its inputs by their <see cref="TrainingOptions"/> property ("TrainingOptions.BatchSize");
/// the program's errors name the command-line flag that sets them ("--batch-size").</summary>
internal static partial class Flags
{
    private static readonly Dictionary<string, string> ByProperty = new(StringComparer.Ordinal)
    {
        [nameof(TrainingOptions.Model)] = "--model",
        [nameof(TrainingOptions.Epochs)] = "--epochs",
        [nameof(TrainingOptions.BatchSize)] = "--batch-size",
        [nameof(TrainingOptions.BaseLr)] = "--lr",
        [nameof(TrainingOptions.WarmupLr)] = "--warmup-lr",
        [nameof(TrainingOptions.MinLr)] = "--min-lr",
        [nameof(TrainingOptions.WarmupEpochs)] = "--warmup-epochs",
        [nameof(TrainingOptions.WeightDecay)] = "--weight-decay",
        [nameof(TrainingOptions.ClipGrad)] = "--clip-grad",
        [nameof(TrainingOptions.DropPathRate)] = "--drop-path",
        [nameof(TrainingOptions.AttentionTypes)] = "--attention",
        [nameof(TrainingOptions.ModelEma)] = "--model-ema",
        [nameof(TrainingOptions.ModelEmaDecay)] = "--model-ema-decay",
        [nameof(TrainingOptions.Seed)] = "--seed",
        [nameof(TrainingOptions.Workers)] = "--workers",
        [nameof(TrainingOptions.Device)] = "--device",
        [nameof(TrainingOptions.Dtype)] = "--dtype",
        [nameof(TrainingOptions.CheckpointEverySteps)] = "--checkpoint-every",
        [nameof(TrainingOptions.ContinueRun)] = "--continue",
    };

    /// <summary><paramref name="message"/> with every "TrainingOptions.Name" the program has a flag for replaced by
    /// the flag (other names are left as they are), the output folder by --output and the distributed backend by
    /// --dist-backend.</summary>
    public static string Name(string message) => PropertyPattern().Replace(message,
            m => ByProperty.TryGetValue(m.Groups[1].Value, out var flag) ? flag : m.Value)
        .Replace("Output folder '", "--output '", StringComparison.Ordinal)
        .Replace("DistributedBackend.Mpi", "--dist-backend mpi", StringComparison.Ordinal)
        .Replace("DistributedBackend.Nccl", "--dist-backend nccl", StringComparison.Ordinal)
        .Replace("DistributedBackend", "--dist-backend", StringComparison.Ordinal)
        .Replace("another output folder", "another --output", StringComparison.Ordinal);

    [GeneratedRegex(@"TrainingOptions\.([A-Za-z]+)")]
    private static partial Regex PropertyPattern();
}
