using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training;
using PolaFormer.Training.Data;
using PolaFormer.Training.Reporting;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training;

/// <summary>
/// <see cref="TrainerComponents"/>: a caller's loss, learning-rate schedule and optimizer replace the recipe's inside
/// the <see cref="Trainer"/>, seen in what the run reports, in the weights it exports and in how it resumes.
/// </summary>
[Collection(ProcessWideMeasurements.Name)]   // a resumed run is bit-identical only if no other test draws from the global RNG
public sealed class TrainerComponentsTests : TorchTest, IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-components-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private DatasetSplits Data()
    {
        var folder = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "data"), classes: 3, trainPerClass: 8, valPerClass: 4);
        return Datasets.Open(folder) with { Recipe = TrainingFixtures.SmallImageNetRecipe };
    }

    private static TrainingOptions OneEpoch => TrainerTests.Options(epochs: 1) with { ModelEma = false };

    [Fact]
    public void A_custom_loss_gets_float32_logits_and_soft_targets_and_is_what_the_run_reports()
    {
        var shapes = new List<string>();
        var components = new TrainerComponents
        {
            Loss = (logits, targets) =>
            {
                shapes.Add($"{string.Join('x', logits.shape)} {logits.dtype} / {string.Join('x', targets.shape)}");
                return logits.sum() * 0 + 1.25;
            },
        };
        var trainer = new Trainer(OneEpoch, Data(), Path.Combine(_root, "loss"), new ProgressReporter(new StringWriter(), live: false),
            TrainingFixtures.TinyPvt, components: components);

        var result = trainer.Run();

        shapes.Should().HaveCount(6, "24 images in batches of 4").And.OnlyContain(s => s == "4x3 Float32 / 4x3");
        result.Epochs.Should().ContainSingle().Which.TrainLoss.Should().Be(1.25, "the reported loss is the custom loss's value");
    }

    [Fact]
    public void A_custom_schedule_sets_every_steps_rate_and_a_zero_rate_leaves_the_weights_as_built()
    {
        var asked = new List<ScheduleStep>();
        Dictionary<string, Tensor>? initial = null;
        Backbone Build(long classes, Device device)
        {
            var model = TrainingFixtures.TinyPvt(classes, device);
            initial = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
            return model;
        }
        var components = new TrainerComponents { LearningRate = step => { asked.Add(step); return 0; } };
        var options = OneEpoch;
        var trainer = new Trainer(options, Data(), Path.Combine(_root, "schedule"), new ProgressReporter(new StringWriter(), live: false),
            Build, components: components);

        var result = trainer.Run();

        asked.Select(s => s.Step).Distinct().Should().BeEquivalentTo(Enumerable.Range(0, 7).Select(i => (long)i),
            "the rate of every step 0…6 is asked (6 steps, and the one after the last)");
        asked.Should().OnlyContain(s => s.StepsPerEpoch == 6 && s.TotalSteps == 6);
        asked[0].BaseLr.Should().BeApproximately(options.ScaledLearningRates(options.BatchSize).Base, 1e-15);
        result.Epochs.Single().Lr.Should().Be(0);
        var exported = Checkpoint.ReadStateDict(result.WeightsPath);
        foreach (var (name, value) in initial!)
            exported[name].eq(value).all().item<bool>().Should().BeTrue($"{name} does not move at a learning rate of 0");
    }

    [Fact]
    public void A_schedule_that_gives_no_usable_rate_stops_the_run_with_the_step_named()
    {
        var components = new TrainerComponents { LearningRate = step => step.Step == 2 ? double.NaN : 1e-3 };
        var trainer = new Trainer(OneEpoch, Data(), Path.Combine(_root, "nan"), new ProgressReporter(new StringWriter(), live: false),
            TrainingFixtures.TinyPvt, components: components);

        trainer.Invoking(t => t.Run()).Should().Throw<InvalidOperationException>()
            .WithMessage("TrainerComponents.LearningRate gave NaN for step 2; expected a finite rate of 0 or more.");
    }

    /// <summary>TorchSharp's SGD, recording the learning rate of each step it takes.</summary>
    private sealed class RecordingSgd(IEnumerable<TorchSharp.Modules.Parameter> parameters, double lr)
        : TorchSharp.Modules.SGD(parameters, lr, momentum: 0.9)
    {
        public List<double> Rates { get; } = [];

        public override Tensor step(Func<Tensor>? closure = null)
        {
            Rates.Add(ParamGroups.Single().LearningRate);
            return base.step(closure);
        }
    }

    [Fact]
    public void A_custom_optimizer_takes_every_step_at_the_schedules_rate_and_resumes_with_its_momenta()
    {
        var data = Data();
        var options = TrainerTests.Options(epochs: 2) with { ModelEma = false };
        var built = new List<RecordingSgd>();
        OptimizerParameters? given = null;
        var components = new TrainerComponents
        {
            LearningRate = s => 0.01 * (s.Step + 1),
            Optimizer = p =>
            {
                given = p;
                var sgd = new RecordingSgd(p.Decay.Concat(p.NoDecay).Select(x => x.Parameter), p.LearningRate);
                built.Add(sgd);
                return sgd;
            },
        };
        Trainer Make(string run) => new(options, data, Path.Combine(_root, run), new ProgressReporter(new StringWriter(), live: false),
            TrainingFixtures.TinyPvt, components: components);

        var uninterrupted = Make("straight").Run();
        built.Should().ContainSingle();
        built[0].Rates.Should().Equal(Enumerable.Range(0, 12).Select(k => 0.01 * (k + 1)), "12 steps, each at the schedule's rate");
        given!.WeightDecay.Should().Be(options.WeightDecay);
        given.LearningRate.Should().Be(0.01);
        given.Decay.Should().NotBeEmpty();
        given.NoDecay.Select(x => x.Name).Should().Contain(n => n.EndsWith(".bias"));

        // Stopped in epoch 2 and resumed: bit-identical only if SGD's momentum buffers come back from the checkpoint.
        using var stop = new CancellationTokenSource();
        var first = Make("stopped");
        first.StepCompleted += step => { if (step == 8) stop.Cancel(); };
        first.Invoking(t => t.Run(cancellationToken: stop.Token)).Should().Throw<OperationCanceledException>();
        var sgdCheckpoint = Path.Combine(_root, "sgd-step-8.ckpt");
        File.Copy(first.Checkpoints.FindResumable()!.Value.Path, sgdCheckpoint);
        var resumed = Make("stopped").Run();
        resumed.ResumedFrom.Should().NotBeNull();
        built[^1].Rates.Should().Equal(Enumerable.Range(8, 4).Select(k => 0.01 * (k + 1)), "the resumed run takes steps 8…11");
        using var scope = NewDisposeScope();
        var expected = Checkpoint.ReadStateDict(uninterrupted.WeightsPath);
        var actual = Checkpoint.ReadStateDict(resumed.WeightsPath);
        foreach (var (name, tensor) in expected)
            actual[name].eq(tensor).all().item<bool>().Should().BeTrue($"{name} must be bit-identical after stop and resume");

        // The recipe's AdamW cannot continue from SGD's state: refused, naming the checkpoint, before any weight moves.
        var adamw = new Trainer(options, data, Path.Combine(_root, "adamw"), new ProgressReporter(new StringWriter(), live: false),
            TrainingFixtures.TinyPvt, components: components with { Optimizer = null });
        adamw.Invoking(t => t.Run(resumeFrom: sgdCheckpoint)).Should().Throw<InvalidDataException>()
            .WithMessage($"{sgdCheckpoint}: its optimizer state does not fit this run's AdamW*");
    }
}
