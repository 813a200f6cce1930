using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using PolaFormer;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Training;
using PolaFormer.Training.Data;
using PolaFormer.Training.Distributed;
using PolaFormer.Training.Reporting;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

// One rank of the distributed tests, started by PolaFormer.Tests under mpirun:
//   ddp   --out DIR --steps K --batch B [--bucket-bytes N] [--timeout S] [--hang-rank R --hang-at-step K]
//         K steps of a tiny MLP with DistributedDataParallel; every rank writes its weights after every step
//         (rank<r>-step<k>.safetensors), then rank 0 trains the same model alone on the concatenated batches
//         (reference-step<k>.safetensors).
//   train --out DIR --epochs E --batch B --train-images N --val-images M [--checkpoint-every K]
//         [--die-rank R --die-at-step K] [--timeout S]
//         the real Trainer with a tiny Pola-PVT on the first N/M bundled digits; rank R writes its process id to
//         rank<R>.pid after step K and waits to be killed (the test sends SIGKILL).
var options = Arguments.Parse(args);
TorchRuntime.EnsureLoaded();
set_num_threads(1); // several ranks share two cores
var timeout = TimeSpan.FromSeconds(options.Number("timeout", 60));
using var group = ProcessGroup.Create(DistributedBackend.Mpi, timeout);
Console.Error.WriteLine($"worker: rank {group.Rank} of {group.WorldSize}, local rank {group.LocalRank}, backend {group.Backend}");
try
{
    switch (options.Mode)
    {
        case "ddp": Ddp.Run(group, options); break;
        case "train": Train.Run(group, options); break;
        default: throw new ArgumentException($"unknown mode '{options.Mode}'; expected ddp or train");
    }
}
catch (Exception e)
{
    group.Abort($"{e.GetType().Name}: {e.Message}", 3);
}
return 0;

internal static class Ddp
{
    private const int Inputs = 12, Classes = 5;

    /// <summary>Odd steps clip at 0.3, below the averaged gradients' norms here (clipping must act on the average,
    /// not on each rank's gradient); even steps effectively do not clip (the average's scale must be the mean's).</summary>
    public static double ClipNorm(int step) => step % 2 == 1 ? 0.3 : 1e3;

    public static void Run(ProcessGroup group, Arguments options)
    {
        string output = options.Text("out");
        int steps = (int)options.Number("steps", 4), batch = (int)options.Number("batch", 4);
        int hangRank = (int)options.Number("hang-rank", -1), hangAt = (int)options.Number("hang-at-step", -1);
        Directory.CreateDirectory(output);

        manual_seed(1000 + group.Rank); // different initial weights on every rank: the broadcast must fix them
        using var model = new TinyNet();
        using var ddp = new DistributedDataParallel(model, group, (long)options.Number("bucket-bytes", 1024));
        ddp.SynchronizeParameters();
        if (group.IsMain) File.WriteAllText(Path.Combine(output, "buckets.txt"), string.Join("\n", ddp.Buckets.Select(b => string.Join(",", b))));
        // SGD, not AdamW: its step is proportional to the gradient, so a sum instead of a mean, or clipping before
        // the average, would show in the weights (AdamW's normalised step would hide both).
        using var optimizer = optim.SGD(model.parameters(), 0.1, momentum: 0.9);
        var norms = new List<string>();
        for (int step = 1; step <= steps; step++)
        {
            using var scope = NewDisposeScope();
            var (x, y) = GlobalBatch(step, batch * group.WorldSize);
            var local = x.narrow(0, group.Rank * batch, batch);
            var labels = y.narrow(0, group.Rank * batch, batch);
            var loss = nn.functional.cross_entropy(model.forward(local), labels);
            optimizer.zero_grad();
            loss.backward();
            if (group.Rank == hangRank && step == hangAt)
            {
                Console.Error.WriteLine($"worker: rank {group.Rank} hangs before step {step}'s gradient all-reduce (test)");
                Thread.Sleep(Timeout.Infinite);
            }
            ddp.AverageGradients();
            norms.Add(nn.utils.clip_grad_norm_(model.parameters(), ClipNorm(step)).ToString(CultureInfo.InvariantCulture));
            optimizer.step();
            SafeTensors.Save(Path.Combine(output, $"rank{group.Rank}-step{step}.safetensors"), model.state_dict());
        }
        group.Barrier("end of the ddp steps");
        if (group.IsMain) File.WriteAllLines(Path.Combine(output, "gradient-norms.txt"), norms);

        if (!group.IsMain) return;
        manual_seed(1000);
        using var reference = new TinyNet();
        using var referenceOptimizer = optim.SGD(reference.parameters(), 0.1, momentum: 0.9);
        for (int step = 1; step <= steps; step++)
        {
            using var scope = NewDisposeScope();
            var (x, y) = GlobalBatch(step, batch * group.WorldSize);
            var loss = nn.functional.cross_entropy(reference.forward(x), y); // the mean over the global batch
            referenceOptimizer.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(reference.parameters(), ClipNorm(step));
            referenceOptimizer.step();
            SafeTensors.Save(Path.Combine(output, $"reference-step{step}.safetensors"), reference.state_dict());
        }
    }

    private static (Tensor X, Tensor Y) GlobalBatch(int step, int size)
    {
        using var generator = new Generator((ulong)(42 + step));
        return (randn([size, Inputs], generator: generator), randint(0, Classes, [size], generator: generator));
    }

    private sealed class TinyNet : nn.Module<Tensor, Tensor>
    {
#pragma warning disable IDE1006 // registered by field name, like PyTorch attributes
        private readonly Linear fc1 = nn.Linear(Inputs, 32);
        private readonly LayerNorm norm = nn.LayerNorm(32);
        private readonly Linear fc2 = nn.Linear(32, Classes);
#pragma warning restore IDE1006

        public TinyNet() : base("TinyNet") => RegisterComponents();

        public override Tensor forward(Tensor x) => fc2.forward(nn.functional.gelu(norm.forward(fc1.forward(x))));
    }
}

internal static class Train
{
    public static void Run(ProcessGroup group, Arguments options)
    {
        string output = options.Text("out");
        int dieRank = (int)options.Number("die-rank", -1), dieAt = (int)options.Number("die-at-step", -1);
        var file = DigitsDataset.FindBundled() ?? throw new FileNotFoundException("the bundled digits are not next to the worker");
        var splits = new DatasetSplits(
            new Subset(DigitsDataset.Load(file, DigitsSplit.Train), (int)options.Number("train-images", 96)),
            new Subset(DigitsDataset.Load(file, DigitsSplit.Test), (int)options.Number("val-images", 32)),
            DataRecipe.Digits, "digits subset");
        var training = new TrainingOptions
        {
            Model = "tiny_pvt", Epochs = (int)options.Number("epochs", 2), BatchSize = (int)options.Number("batch", 4), BaseLr = 4e-3,
            WarmupEpochs = 1, Workers = 1, Seed = 7, CheckpointEverySteps = (int)options.Number("checkpoint-every", 0), KeepCheckpoints = 3,
        };
        var trainer = new Trainer(training, splits, output, new ProgressReporter(Console.Out, live: false, logEvery: 1), TinyPvt, group);
        trainer.StepCompleted += step =>
        {
            if (group.Rank == dieRank && step == dieAt)
            {
                Console.Error.WriteLine($"worker: rank {group.Rank} waits to be killed after step {step} (test)");
                Console.Error.Flush();
                var pidFile = Path.Combine(output, $"rank{group.Rank}.pid");
                File.WriteAllText(pidFile + ".tmp", Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
                File.Move(pidFile + ".tmp", pidFile); // the test never reads half a number
                Thread.Sleep(Timeout.Infinite);
            }
        };
        var result = trainer.Run();
        if (group.IsMain)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"worker: done, epochs {result.Epochs.Count}, top-1 {result.FinalTop1:0.00}, resumed from {(result.ResumedFrom is null ? "nothing" : Path.GetFileName(result.ResumedFrom))}"));
    }

    private static Backbone TinyPvt(long classes, Device device) => new PolaPyramidVisionTransformer(new PolaPvtOptions
    {
        ImageSize = (32, 32), EmbedDims = [8, 16, 32, 32], NumHeads = [1, 2, 2, 4], MlpRatios = [2, 2, 2, 2], Depths = [1, 1, 1, 1],
        NumClasses = classes, DropPathRate = 0,
    }, device);

    /// <summary>The first <c>count</c> samples of a dataset.</summary>
    private sealed class Subset(IImageDataset inner, int count) : IImageDataset
    {
        public int Count { get; } = Math.Min(count, inner.Count);

        public IReadOnlyList<string> ClassNames => inner.ClassNames;

        public int Label(int index) => inner.Label(index);

        public bool TryLoadImage(int index, [NotNullWhen(true)] out RgbImage? image) => inner.TryLoadImage(index, out image);

        public string Source(int index) => inner.Source(index);
    }
}

/// <summary>"mode --key value …".</summary>
internal sealed class Arguments
{
    private readonly Dictionary<string, string> _values = [];

    public string Mode { get; private init; } = "";

    public static Arguments Parse(string[] args)
    {
        if (args.Length == 0) throw new ArgumentException("usage: polaformer-dist-worker ddp|train --key value ...");
        var parsed = new Arguments { Mode = args[0] };
        for (int i = 1; i + 1 < args.Length; i += 2) parsed._values[args[i].TrimStart('-')] = args[i + 1];
        return parsed;
    }

    public string Text(string name) => _values.TryGetValue(name, out var v) ? v : throw new ArgumentException($"--{name} is required");

    public double Number(string name, double fallback) =>
        _values.TryGetValue(name, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
}
