using System.Text.Json;
using System.Text.Json.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Training;

/// <summary>
/// The training recipe. Defaults are the official PolaFormer/Swin ImageNet recipe (config.py of the official code):
/// AdamW β (0.9, 0.999), weight decay 0.05 (none on 1-D parameters, biases and the model's no-decay names),
/// base LR 5e-4 × total batch / 512, warmup from 5e-7 over 20 epochs (at most half the run: see
/// <see cref="WarmupEpochs"/>) then cosine to 5e-6, stepped per iteration,
/// gradient clipping at 5, 300 epochs. The data recipe (augmentation, mixup) lives in <c>DataRecipe</c>.
/// </summary>
public sealed record TrainingOptions
{
    /// <summary>Registry name of the model.</summary>
    public string Model { get; init; } = "pola_pvt_tiny";

    /// <summary>Epochs.</summary>
    public int Epochs { get; init; } = 300;

    /// <summary>Batch size of this process.</summary>
    public int BatchSize { get; init; } = 128;

    /// <summary>Peak learning rate for a total batch of <see cref="LrReferenceBatch"/>.</summary>
    public double BaseLr { get; init; } = 5e-4;

    /// <summary>Learning rate at the first step, for a total batch of <see cref="LrReferenceBatch"/>.</summary>
    public double WarmupLr { get; init; } = 5e-7;

    /// <summary>Floor of the cosine, for a total batch of <see cref="LrReferenceBatch"/>.</summary>
    public double MinLr { get; init; } = 5e-6;

    /// <summary>The learning rates above scale linearly with total batch / this (the official linear scaling
    /// rule); 0 turns scaling off.</summary>
    public int LrReferenceBatch { get; init; } = 512;

    /// <summary>Epochs of linear warmup (the official recipe's 20). The warmup takes at most
    /// <see cref="MaxWarmupFraction"/> of the run: a longer one (20 epochs of warmup in a run of 1 epoch) is clamped
    /// to <see cref="Epochs"/> × <see cref="MaxWarmupFraction"/> rather than refused, and the trainer reports the
    /// clamp on its first lines. <see cref="ScheduledWarmupEpochs"/> is the warmup the schedule uses.</summary>
    public double WarmupEpochs { get; init; } = 20;

    /// <summary>The largest share of the run the warmup may take (one half): see <see cref="WarmupEpochs"/>.</summary>
    public const double MaxWarmupFraction = 0.5;

    /// <summary>The warmup the schedule uses: <see cref="WarmupEpochs"/>, clamped to at most
    /// <see cref="Epochs"/> × <see cref="MaxWarmupFraction"/>.</summary>
    public double ScheduledWarmupEpochs() => Math.Min(WarmupEpochs, Epochs * MaxWarmupFraction);

    /// <summary>AdamW decoupled weight decay.</summary>
    public double WeightDecay { get; init; } = 0.05;

    /// <summary>AdamW β₁.</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>AdamW β₂.</summary>
    public double Beta2 { get; init; } = 0.999;

    /// <summary>AdamW ε.</summary>
    public double Eps { get; init; } = 1e-8;

    /// <summary>Gradient clipping by global norm (0 = off).</summary>
    public double ClipGrad { get; init; } = 5.0;

    /// <summary>Stochastic depth of the last block (null = the preset's).</summary>
    public double? DropPathRate { get; init; }

    /// <summary>Per-stage attention kinds overriding the preset's, e.g. "SSSS" for the softmax counterpart.</summary>
    public string? AttentionTypes { get; init; }

    /// <summary>Keep an exponential moving average of the weights (evaluated and exported beside the model).</summary>
    public bool ModelEma { get; init; }

    /// <summary>Decay of the moving average per step.</summary>
    public double ModelEmaDecay { get; init; } = 0.9998;

    /// <summary>Seed of the weights, the data order, the augmentations and the mixing.</summary>
    public long Seed { get; init; }

    /// <summary>Threads decoding and augmenting images.</summary>
    public int Workers { get; init; } = 2;

    /// <summary>Device to train on: the CPU (default) or a CUDA device (<c>torch.CUDA</c>, <c>torch.device("cuda:1")</c>).
    /// A data-parallel job uses its process group's device. In checkpoints it is written as "cpu", "cuda" or
    /// "cuda:N".</summary>
    [JsonConverter(typeof(DeviceJsonConverter))]
    public Device Device { get; init; } = CPU;

    /// <summary>Dtype of the forward and backward passes: Float32, BFloat16 or Float16. In the low-precision
    /// dtypes the weights the optimiser updates stay in float32 (a master copy, see <c>LowPrecisionCopy</c>), the
    /// polarity core runs in float32 (see <c>PolarityPrecision</c>), the loss is computed in float32, and float16
    /// uses dynamic loss scaling — the parts of PyTorch's AMP that TorchSharp lacks.</summary>
    [JsonConverter(typeof(TrainingDtypeJsonConverter))]
    public ScalarType Dtype { get; init; } = ScalarType.Float32;

    /// <summary>Also checkpoint every this many steps inside an epoch (0 = only at the end of each epoch).</summary>
    public int CheckpointEverySteps { get; init; }

    /// <summary>Periodic checkpoints kept (the best one is kept besides).</summary>
    public int KeepCheckpoints { get; init; } = 2;

    /// <summary>Batch size of validation (0 = twice <see cref="BatchSize"/>).</summary>
    public int EvalBatchSize { get; init; }

    /// <summary>Continue the run found in the output folder although it is finished or was started with other
    /// options or data (the differences are reported). Off: such a folder is refused with the differences named, so
    /// a run is never silently continued as another. The batch size cannot change mid-run either way.</summary>
    public bool ContinueRun { get; init; }

    /// <summary>Options that do not change what a run computes (where and how fast it runs, how often it
    /// checkpoints): they may differ between a run and its continuation.</summary>
    internal static IReadOnlySet<string> OperationalOptions { get; } = new HashSet<string>(StringComparer.Ordinal)
    {
        nameof(Workers), nameof(Device), nameof(EvalBatchSize), nameof(CheckpointEverySteps), nameof(KeepCheckpoints), nameof(ContinueRun),
    };

    /// <summary>The options that differ from <paramref name="other"/> and change what a run computes, as
    /// "Name: other → this" lines.</summary>
    internal IReadOnlyList<string> RecipeDifferences(TrainingOptions other)
    {
        var differences = new List<string>();
        foreach (var property in typeof(TrainingOptions).GetProperties())
        {
            if (!property.CanRead || property.GetIndexParameters().Length > 0 || OperationalOptions.Contains(property.Name)
                || property.GetMethod!.IsStatic) continue;
            object? mine = property.GetValue(this), theirs = property.GetValue(other);
            if (!Equals(mine, theirs))
                differences.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{property.Name} {Show(theirs)} → {Show(mine)}"));
        }
        return differences;

        static string Show(object? value) => value switch
        {
            null => "(none)",
            string s => $"'{s}'",
            IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
            _ => value.ToString() ?? "",
        };
    }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first option that is out of range (as
    /// "TrainingOptions.Name is value; expected ...", with the property's name as the parameter name).</summary>
    public void Validate()
    {
        static void Require(bool ok, string name, object value, string expected)
        {
            if (!ok) throw new ArgumentException($"TrainingOptions.{name} is {value}; expected {expected}.", name);
        }
        var c = System.Globalization.CultureInfo.InvariantCulture;
        Require(!string.IsNullOrWhiteSpace(Model), nameof(Model), $"'{Model}'", "a registered model name");
        Require(Epochs >= 1, nameof(Epochs), Epochs, "at least 1");
        Require(BatchSize >= 1, nameof(BatchSize), BatchSize, "at least 1");
        Require(BaseLr > 0 && double.IsFinite(BaseLr), nameof(BaseLr), BaseLr.ToString(c), "a positive number");
        Require(WarmupLr >= 0 && double.IsFinite(WarmupLr), nameof(WarmupLr), WarmupLr.ToString(c), "0 or more");
        Require(MinLr >= 0 && double.IsFinite(MinLr), nameof(MinLr), MinLr.ToString(c), "0 or more");
        Require(LrReferenceBatch >= 0, nameof(LrReferenceBatch), LrReferenceBatch, "0 (no scaling) or more");
        Require(WarmupEpochs >= 0 && double.IsFinite(WarmupEpochs), nameof(WarmupEpochs), WarmupEpochs.ToString(c), "0 or more (a warmup longer than half the run is clamped to half of it)");
        Require(WeightDecay >= 0, nameof(WeightDecay), WeightDecay.ToString(c), "0 or more");
        Require(Beta1 is >= 0 and < 1, nameof(Beta1), Beta1.ToString(c), "a number in [0, 1)");
        Require(Beta2 is >= 0 and < 1, nameof(Beta2), Beta2.ToString(c), "a number in [0, 1)");
        Require(ClipGrad >= 0, nameof(ClipGrad), ClipGrad.ToString(c), "0 (off) or more");
        Require(DropPathRate is null or (>= 0 and < 1), nameof(DropPathRate), DropPathRate?.ToString(c) ?? "", "a probability in [0, 1)");
        Require(ModelEmaDecay is > 0 and < 1, nameof(ModelEmaDecay), ModelEmaDecay.ToString(c), "a number in (0, 1)");
        Require(Workers >= 1, nameof(Workers), Workers, "at least 1");
        Require(Device is not null && Device.type is DeviceType.CPU or DeviceType.CUDA, nameof(Device), Device?.ToString() ?? "null", "the CPU or a CUDA device");
        Require(Dtype is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16, nameof(Dtype), Dtype, "Float32, BFloat16 or Float16");
        Require(CheckpointEverySteps >= 0, nameof(CheckpointEverySteps), CheckpointEverySteps, "0 (epoch ends only) or more");
        Require(KeepCheckpoints >= 1, nameof(KeepCheckpoints), KeepCheckpoints, "at least 1");
        Require(EvalBatchSize >= 0, nameof(EvalBatchSize), EvalBatchSize, "0 (twice the batch size) or more");
    }

    /// <summary>"float32", "bfloat16" or "float16" (the names PyTorch and the training program use) → the dtype.</summary>
    /// <exception cref="ArgumentException">Another name; the message names <see cref="Dtype"/> and the accepted names.</exception>
    public static ScalarType ParseDtype(string name) => name switch
    {
        "float32" => ScalarType.Float32,
        "bfloat16" => ScalarType.BFloat16,
        "float16" => ScalarType.Float16,
        _ => throw new ArgumentException($"TrainingOptions.Dtype is '{name}'; expected float32, bfloat16 or float16.", nameof(Dtype)),
    };

    /// <summary>The PyTorch name of a training dtype ("float32", "bfloat16", "float16").</summary>
    public static string DtypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => dtype.ToString(),
    };

    /// <summary>The learning rates after linear scaling for <paramref name="totalBatch"/>.</summary>
    public (double Base, double Warmup, double Min) ScaledLearningRates(int totalBatch)
    {
        double factor = LrReferenceBatch == 0 ? 1 : (double)totalBatch / LrReferenceBatch;
        return (BaseLr * factor, WarmupLr * factor, MinLr * factor);
    }

    /// <summary>The learning rates for <paramref name="totalBatch"/> with the scaling rule spelled out, e.g.
    /// "lr 5e-4 per 512 images × 8/512 = 7.8e-6 (warmup from 7.8e-9, cosine to 7.8e-8)".</summary>
    public string DescribeLearningRates(int totalBatch)
    {
        var (scaledBase, scaledWarmup, scaledMin) = ScaledLearningRates(totalBatch);
        var c = System.Globalization.CultureInfo.InvariantCulture;
        string rule = LrReferenceBatch == 0
            ? $"lr {Number(BaseLr)} (no batch scaling)"
            : $"lr {Number(BaseLr)} per {LrReferenceBatch.ToString(c)} images × {totalBatch.ToString(c)}/{LrReferenceBatch.ToString(c)} = {Number(scaledBase)}";
        return $"{rule} (warmup from {Number(scaledWarmup)}, cosine to {Number(scaledMin)})";

        static string Number(double value) => value.ToString("0.##e+0", System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>When <see cref="WarmupEpochs"/> is clamped (see <see cref="ScheduledWarmupEpochs"/>), a line saying
    /// so, e.g. "warmup 20 epochs > half the run of 1 epoch: clamped to 0.5 epoch"; otherwise null.</summary>
    public string? DescribeWarmupClamp()
    {
        double scheduled = ScheduledWarmupEpochs();
        if (scheduled >= WarmupEpochs) return null;
        return $"warmup {Span(WarmupEpochs)} > half the run of {Span(Epochs)}: clamped to {Span(scheduled)}";

        static string Span(double value) => value.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + (value <= 1 ? " epoch" : " epochs");
    }
}

/// <summary>Writes a device as "cpu", "cuda" or "cuda:N" and reads it back (checkpoints store the options as JSON).</summary>
internal sealed class DeviceJsonConverter : JsonConverter<Device>
{
    public override Device Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        // Parsed here rather than by torch.device(text), which initialises CUDA: options recorded on a GPU machine
        // must still read on one without CUDA (a run continued on the CPU compares its recipe with them).
        var text = reader.GetString() ?? "";
        if (text == "cpu") return new Device(DeviceType.CPU);
        if (text == "cuda") return new Device(DeviceType.CUDA);
        if (text.StartsWith("cuda:", StringComparison.Ordinal)
            && int.TryParse(text.AsSpan(5), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index))
            return new Device(DeviceType.CUDA, index);
        throw new JsonException($"TrainingOptions.Device is '{text}'; expected cpu, cuda or cuda:N.");
    }

    public override void Write(Utf8JsonWriter writer, Device value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.type == DeviceType.CPU ? "cpu"
            : value.index < 0 ? "cuda" : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"cuda:{value.index}"));
}

/// <summary>Writes a training dtype by its PyTorch name ("float32", "bfloat16", "float16"), the format checkpoints
/// have always had, and reads it back.</summary>
internal sealed class TrainingDtypeJsonConverter : JsonConverter<ScalarType>
{
    public override ScalarType Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Number) return (ScalarType)reader.GetInt32();
        var text = reader.GetString() ?? "";
        try
        {
            return TrainingOptions.ParseDtype(text);
        }
        catch (ArgumentException e)
        {
            throw new JsonException(e.Message, e);
        }
    }

    public override void Write(Utf8JsonWriter writer, ScalarType value, JsonSerializerOptions options) =>
        writer.WriteStringValue(TrainingOptions.DtypeName(value));
}
