using System.Diagnostics;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training;
using PolaFormer.Training.Checkpointing;
using PolaFormer.Training.Data;
using PolaFormer.Training.Reporting;
using Xunit;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training;

// Training draws drop-path masks from torch's process-wide generator, and bit-exact comparisons need LibTorch's
// thread count to stay put: nothing else may run beside these tests.
[Collection(ProcessWideMeasurements.Name)]
public sealed class TrainerTests : TorchTest, IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-train-").FullName;
    private readonly ITestOutputHelper _output;

    public TrainerTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    internal static TrainingOptions Options(int epochs) => new()
    {
        Model = "tiny_pvt", Epochs = epochs, BatchSize = 4, BaseLr = 4e-3, WarmupEpochs = 1, Workers = 2, Seed = 7,
        ModelEma = true, ModelEmaDecay = 0.9, KeepCheckpoints = 2,
    };

    internal DatasetSplits Data(int trainPerClass = 8, int valPerClass = 4)
    {
        var folder = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "data"), classes: 3, trainPerClass, valPerClass);
        var splits = Datasets.Open(folder);
        return splits with { Recipe = TrainingFixtures.SmallImageNetRecipe };
    }

    internal Trainer Make(TrainingOptions options, DatasetSplits data, string run, StringWriter? log = null) =>
        new(options, data, Path.Combine(_root, run), new ProgressReporter(log ?? new StringWriter(), live: false), TrainingFixtures.TinyPvt);

    private static Dictionary<string, Tensor> Weights(string path) => Checkpoint.ReadStateDict(path);

    [Fact]
    public void Trains_end_to_end_on_a_real_image_folder_and_writes_every_artifact()
    {
        var log = new StringWriter();
        var result = Make(Options(epochs: 2), Data(), "run", log).Run();

        result.Epochs.Should().HaveCount(2);
        result.Epochs.Should().OnlyContain(e => double.IsFinite(e.TrainLoss) && e.ValTop1 >= 0 && e.ValTop1 <= 100 && e.ValTop5 >= e.ValTop1);
        var folder = Path.Combine(_root, "run");
        File.Exists(Path.Combine(folder, "model.safetensors")).Should().BeTrue();
        File.Exists(Path.Combine(folder, "model-ema.safetensors")).Should().BeTrue();
        File.Exists(Path.Combine(folder, "best.ckpt")).Should().BeTrue();
        File.ReadAllBytes(Path.Combine(folder, "training.png"))[..4].Should().Equal(0x89, (byte)'P', (byte)'N', (byte)'G');
        var rows = MetricsCsv.Read(Path.Combine(folder, "metrics.csv"));
        rows.Select(r => r.Epoch).Should().Equal(1, 2);
        rows[0].Lr.Should().BeGreaterThan(0);
        log.ToString().Should().Contain("epoch 2/2").And.Contain("img/s");
        _output.WriteLine(log.ToString());
    }

    [Fact]
    public void A_run_stopped_mid_epoch_and_resumed_ends_with_the_weights_of_an_uninterrupted_run()
    {
        var data = Data();
        var uninterrupted = Make(Options(epochs: 2), data, "straight").Run();

        using var stop = new CancellationTokenSource();
        var first = Make(Options(epochs: 2), data, "stopped");
        first.StepCompleted += step => { if (step == 8) stop.Cancel(); };   // 6 steps per epoch: epoch 2, step 2
        FluentActions.Invoking(() => first.Run(cancellationToken: stop.Token)).Should().Throw<OperationCanceledException>();
        first.Checkpoints.FindResumable()!.Value.State.Should().Match<TrainingState>(s => s.Epoch == 1 && s.StepInEpoch == 2 && s.GlobalStep == 8);

        var resumed = Make(Options(epochs: 2), data, "stopped").Run();
        resumed.ResumedFrom.Should().NotBeNull();
        using var scope = NewDisposeScope();
        var expected = Weights(uninterrupted.WeightsPath);
        var actual = Weights(resumed.WeightsPath);
        actual.Keys.Should().BeEquivalentTo(expected.Keys);
        foreach (var (name, tensor) in expected)
            actual[name].eq(tensor).all().item<bool>().Should().BeTrue($"{name} must be bit-identical after stop and resume");
        resumed.Epochs.Select(e => e.TrainLoss).Should().Equal(uninterrupted.Epochs.Select(e => e.TrainLoss));
    }

    [Fact]
    public void A_corrupted_latest_checkpoint_is_reported_and_the_previous_good_one_is_used()
    {
        var data = Data();
        Make(Options(epochs: 2), data, "run").Run();
        var folder = new CheckpointFolder(Path.Combine(_root, "run"));
        var latest = folder.Periodic()[0];
        Path.GetFileName(latest).Should().Be("epoch-0002.ckpt");
        var bytes = File.ReadAllBytes(latest);
        File.WriteAllBytes(latest, bytes[..(bytes.Length / 2)]);   // a half-written file

        FluentActions.Invoking(() => TrainingCheckpoint.ReadState(latest)).Should().Throw<InvalidDataException>()
            .WithMessage("*epoch-0002.ckpt*corrupted or incomplete*");
        var warnings = new List<string>();
        var found = folder.FindResumable(warnings.Add);
        Path.GetFileName(found!.Value.Path).Should().Be("epoch-0001.ckpt");
        warnings.Should().ContainSingle().Which.Should().Contain("epoch-0002.ckpt");

        var log = new StringWriter();
        var result = Make(Options(epochs: 2), data, "run", log).Run();
        Path.GetFileName(result.ResumedFrom).Should().Be("epoch-0001.ckpt");
        log.ToString().Should().Contain("warning: skipping epoch-0002.ckpt");
        result.Epochs.Should().HaveCount(2);
    }

    [Theory]
    [InlineData("bfloat16")]
    [InlineData("float16")]
    public void Trains_in_low_precision(string dtype)
    {
        var result = Make(Options(epochs: 1) with { Dtype = TrainingOptions.ParseDtype(dtype), ModelEma = false }, Data(), dtype).Run();
        result.Epochs.Should().ContainSingle().Which.TrainLoss.Should().BeInRange(0, 10);
        using var scope = NewDisposeScope();
        Weights(result.WeightsPath).Values.Where(t => t.is_floating_point()).Should().OnlyContain(t => t.dtype == ScalarType.Float32,
            "the exported weights are the float32 master weights");
    }

    [Fact]
    public void Bad_options_fail_before_any_work_with_the_option_named()
    {
        var data = Data();
        FluentActions.Invoking(() => new Trainer(Options(2) with { BatchSize = 0 }, data, Path.Combine(_root, "x")))
            .Should().Throw<ArgumentException>().WithMessage("TrainingOptions.BatchSize is 0; expected at least 1*");
        FluentActions.Invoking(() => new Trainer(Options(2) with { Dtype = ScalarType.Int32 }, data, Path.Combine(_root, "x")))
            .Should().Throw<ArgumentException>().WithMessage("TrainingOptions.Dtype is Int32; expected Float32, BFloat16 or Float16*");
        FluentActions.Invoking(() => TrainingOptions.ParseDtype("float8"))
            .Should().Throw<ArgumentException>().WithMessage("TrainingOptions.Dtype is 'float8'; expected float32, bfloat16 or float16*");
        FluentActions.Invoking(() => new Trainer(Options(2) with { Model = "pola_resnet" }, data, Path.Combine(_root, "x")))
            .Should().Throw<ArgumentException>().WithMessage("*Unknown model 'pola_resnet'*");
        FluentActions.Invoking(() => Make(Options(2) with { BatchSize = 100 }, data, "x").Run())
            .Should().Throw<ArgumentException>().WithMessage("*TrainingOptions.BatchSize 100 is larger than the training set (24 images)*");
    }
}
