using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using PolaFormer;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Pretrained;
using PolaFormer.Training;
using PolaFormer.Training.Data;
using PolaFormer.Training.Distributed;
using PolaFormer.Training.Reporting;
using TorchSharp;
using static TorchSharp.torch;

// The training program: command line and wiring only; the recipe lives in PolaFormer.Training.
var defaults = new TrainingOptions();

var model = new Option<string?>("--model") { Description = "Registered model name (default: pola_pvt_tiny; see `models`)" };
var data = new Option<string?>("--data") { Description = "ImageNet-style folder with train/<class>/* and val/<class>/* (default: the bundled digits)" };
var imgSize = new Option<int?>("--img-size") { Description = "Train and validation image size in pixels, also the size the model is built for (default: 224, or 32 on the bundled digits); the model may need a multiple of its patch strides" };
var epochs = new Option<int?>("--epochs") { Description = "Epochs (default: 300, or 5 on the bundled digits)" };
var batchSize = new Option<int?>("--batch-size") { Description = "Batch size (default: 128, or 64 on the bundled digits)" };
var lr = new Option<double?>("--lr") { Description = $"Base learning rate per 512 images, scaled linearly with the total batch: batch 8 trains at lr × 8/512; the start of the run prints the scaled rates (default: {defaults.BaseLr}, or 8e-3 on the bundled digits, i.e. 1e-3 at batch 64)" };
var warmupLr = new Option<double>("--warmup-lr") { Description = "Warmup start learning rate for a batch of 512", DefaultValueFactory = _ => defaults.WarmupLr };
var minLr = new Option<double>("--min-lr") { Description = "Final learning rate for a batch of 512", DefaultValueFactory = _ => defaults.MinLr };
var warmupEpochs = new Option<double?>("--warmup-epochs") { Description = "Epochs of linear warmup, at most half the run: a longer one is clamped to half of --epochs, as the first lines say (default: 20, or 0.5 on the bundled digits)" };
var weightDecay = new Option<double>("--weight-decay") { Description = "AdamW weight decay", DefaultValueFactory = _ => defaults.WeightDecay };
var clipGrad = new Option<double>("--clip-grad") { Description = "Gradient clipping by global norm (0 = off)", DefaultValueFactory = _ => defaults.ClipGrad };
var dropPath = new Option<double?>("--drop-path") { Description = "Stochastic depth rate (default: the preset's)" };
var attention = new Option<string?>("--attention") { Description = "Per-stage attention kinds overriding the preset, e.g. SSSS for softmax" };
var modelEma = new Option<bool>("--model-ema") { Description = "Keep an exponential moving average of the weights" };
var modelEmaDecay = new Option<double>("--model-ema-decay") { Description = "EMA decay per step", DefaultValueFactory = _ => defaults.ModelEmaDecay };
var output = new Option<string>("--output") { Description = "Output folder: checkpoints, metrics.csv, training.png, model.safetensors", DefaultValueFactory = _ => "runs/latest" };
var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N", DefaultValueFactory = _ => "cpu" };
var dtype = new Option<string>("--dtype") { Description = "float32, bfloat16 or float16 (low precision keeps the polarity core in float32; float16 scales the loss)", DefaultValueFactory = _ => "float32" };
var seed = new Option<long>("--seed") { Description = "Seed of weights, data order, augmentation and mixing", DefaultValueFactory = _ => 0 };
var workers = new Option<int>("--workers") { Description = "Threads decoding and augmenting images", DefaultValueFactory = _ => 2 };
var threads = new Option<int?>("--threads") { Description = "LibTorch intra-op threads (default: LibTorch's choice)" };
var resume = new Option<string?>("--resume") { Description = "Continue from this checkpoint (default: the newest good one in --output)" };
var pretrained = new Option<string?>("--pretrained") { Description = "Fine-tune from these weights: a model name with released weights, an http(s) URL (downloaded once into the cache, $POLAFORMER_CACHE) or a file; a classifier of another class count is left out" };
var noAutoResume = new Option<bool>("--no-auto-resume") { Description = "Start afresh even if --output holds checkpoints" };
var continueRun = new Option<bool>("--continue") { Description = "Continue the run in --output although it is finished or was started with other options or data (otherwise refused, with the differences named)" };
var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Also checkpoint every N steps inside an epoch (0 = epoch ends only)", DefaultValueFactory = _ => 0 };
var mixupAlpha = new Option<double?>("--mixup") { Description = "Mixup alpha (default: 0.8; 0 on the bundled digits)" };
var cutmixAlpha = new Option<double?>("--cutmix") { Description = "CutMix alpha (default: 1.0; 0 on the bundled digits)" };
var smoothing = new Option<double?>("--smoothing") { Description = "Label smoothing (default: 0.1)" };
var distBackend = new Option<string>("--dist-backend") { Description = "Data parallelism over processes: none, mpi (CPU, start with mpirun) or nccl (GPU, start like torchrun); ranks come from the launcher's variables, --batch-size is per rank", DefaultValueFactory = _ => "none" };
var cpuRuntime = new Option<string>("--cpu-runtime")
{
    Description = "Native CPU runtime: tuned (glibc malloc keeps freed memory for reuse, so large activations do not page-fault on every step; OpenMP threads sleep between operators, so other processes on the cores do not collapse the speed; threads within the CPU quota), spin (tuned, but OpenMP threads spin: for dedicated cores), passive (the same as tuned) or default (LibTorch untouched)",
    DefaultValueFactory = _ => "tuned",
    Recursive = true,
};
cpuRuntime.AcceptOnlyFromAmong("tuned", "spin", "passive", "default");
var distTimeout = new Option<double>("--dist-timeout") { Description = "Seconds a collective may wait for the other ranks before the job is aborted", DefaultValueFactory = _ => ProcessGroup.DefaultTimeout.TotalSeconds };

var train = new Command("train", "Train a model (defaults: the official PolaFormer ImageNet recipe; on the bundled digits a short recipe suited to them)")
{
    model, data, imgSize, epochs, batchSize, lr, warmupLr, minLr, warmupEpochs, weightDecay, clipGrad, dropPath, attention, modelEma,
    modelEmaDecay, output, device, dtype, seed, workers, threads, resume, pretrained, noAutoResume, continueRun, checkpointEvery, mixupAlpha, cutmixAlpha, smoothing,
    distBackend, distTimeout,
};
train.SetAction(parse => Run(parse.GetValue(cpuRuntime), () =>
{
    ApplyThreads(parse.GetValue(threads));
    double timeoutSeconds = parse.GetValue(distTimeout);
    if (!(timeoutSeconds > 0)) throw new ArgumentException($"--dist-timeout is {timeoutSeconds}; expected a positive number of seconds.", "--dist-timeout");
    using var group = ProcessGroup.Create(Backend(parse.GetValue(distBackend)!), TimeSpan.FromSeconds(timeoutSeconds));
    var splits = Datasets.Open(parse.GetValue(data), warning => Console.Error.WriteLine("warning: " + warning));
    bool digits = parse.GetValue(data) is null;
    var recipe = splits.Recipe;
    var mix = recipe.Mixup with
    {
        MixupAlpha = parse.GetValue(mixupAlpha) ?? recipe.Mixup.MixupAlpha,
        CutmixAlpha = parse.GetValue(cutmixAlpha) ?? recipe.Mixup.CutmixAlpha,
        LabelSmoothing = parse.GetValue(smoothing) ?? recipe.Mixup.LabelSmoothing,
    };
    splits = splits with { Recipe = recipe with { Mixup = mix, ImageSize = ImageSize(parse.GetValue(imgSize)) ?? recipe.ImageSize } };
    var options = new TrainingOptions
    {
        Model = parse.GetValue(model) ?? "pola_pvt_tiny",
        Epochs = parse.GetValue(epochs) ?? (digits ? 5 : defaults.Epochs),
        BatchSize = parse.GetValue(batchSize) ?? (digits ? 64 : defaults.BatchSize),
        BaseLr = parse.GetValue(lr) ?? (digits ? 8e-3 : defaults.BaseLr),
        WarmupLr = parse.GetValue(warmupLr),
        MinLr = parse.GetValue(minLr),
        WarmupEpochs = parse.GetValue(warmupEpochs) ?? (digits ? 0.5 : defaults.WarmupEpochs),
        WeightDecay = parse.GetValue(weightDecay),
        ClipGrad = parse.GetValue(clipGrad),
        DropPathRate = parse.GetValue(dropPath),
        AttentionTypes = parse.GetValue(attention),
        ModelEma = parse.GetValue(modelEma),
        ModelEmaDecay = parse.GetValue(modelEmaDecay),
        Seed = parse.GetValue(seed),
        Workers = parse.GetValue(workers),
        Device = Trainer.ParseDevice(parse.GetValue(device)!),
        Dtype = TrainingOptions.ParseDtype(parse.GetValue(dtype)!),
        CheckpointEverySteps = parse.GetValue(checkpointEvery),
        ContinueRun = parse.GetValue(continueRun),
    };
    var outputFolder = parse.GetValue(output)!;
    RequireBuildable(options.Model, splits.Train.ClassNames.Count, options.AttentionTypes, splits.Recipe.ImageSize);
    int world = group.WorldSize;
    if (group.IsMain)
    {
        Console.WriteLine($"data: {splits.Description}");
        // The learning rates (with the scaling rule) and a clamped warmup are the trainer's first lines.
        Console.WriteLine($"model: {options.Model}, {splits.Recipe.ImageSize} px, {options.Epochs} epoch{(options.Epochs == 1 ? "" : "s")}, batch {options.BatchSize}{(world > 1 ? $" × {world} ranks ({group.Backend.ToString().ToLowerInvariant()})" : "")}, device {options.Device}, output {Path.GetFullPath(outputFolder)}");
    }

    using var stop = new CancellationTokenSource();
    using var signals = StopOnSignals(stop);
    // The registry's model with the pretrained weights loaded over its initialisation; a resumed run's checkpoint
    // later replaces them, so resuming a fine-tuning run continues it rather than restarting from the weights.
    Func<long, Device, Backbone>? modelFactory = null;
    if (parse.GetValue(pretrained) is { } weights)
    {
        // Fetched before the trainer starts, so a wrong name, a failed download or a bad hash ends the run at once.
        var file = Task.Run(() => PretrainedWeights.FetchAsync(weights, new PretrainedOptions
        {
            Progress = group.IsMain ? new Progress<DownloadProgress>(p => Console.Error.Write($"\rdownloading {p.Url}: {p.BytesReceived:N0}{(p.TotalBytes is { } t ? $" / {t:N0}" : "")} bytes")) : null,
        })).GetAwaiter().GetResult();
        bool announced = false;
        modelFactory = (classes, target) =>
        {
            var network = ModelRegistry.Create(options.Model, numClasses: classes, dropPathRate: options.DropPathRate,
                attentionTypes: options.AttentionTypes, imageSize: (splits.Recipe.ImageSize, splits.Recipe.ImageSize), device: target);
            var loaded = PretrainedWeights.Load(network, file.Path);
            if (group.IsMain && !announced) Console.WriteLine($"pretrained: {loaded.Summary}");
            announced = true;
            return network;
        };
    }
    var trainer = new Trainer(options, splits, outputFolder, modelFactory: modelFactory, processGroup: group);
    TrainingResult result;
    try
    {
        result = trainer.Run(parse.GetValue(resume), autoResume: !parse.GetValue(noAutoResume), stop.Token);
    }
    catch (Exception e) when (world > 1 && e is not OperationCanceledException)
    {
        group.Abort($"error: {e.Message}", 2); // end every rank now rather than leave them waiting for this one
        throw;
    }
    if (group.IsMain) Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{splits.ValidationSplitName} top-1: {result.FinalTop1:0.00}% (best {result.BestTop1:0.00}%); weights: {result.WeightsPath}; metrics: {Path.Combine(outputFolder, "metrics.csv")}; plot: {Path.Combine(outputFolder, "training.png")}"));
}));

var evalModel = new Option<string?>("--model") { Description = "Registered model name (default: the one recorded in the checkpoint, else pola_pvt_tiny)" };
var checkpoint = new Option<string>("--checkpoint") { Description = "A training checkpoint (.ckpt), exported weights (.safetensors) or the authors' .pth", Required = true };
var evalData = new Option<string?>("--data") { Description = "Folder with val/<class>/* (default: the bundled digits' test split)" };
var evalImgSize = new Option<int?>("--img-size") { Description = "Evaluation image size in pixels, also the size the model is built for (default: 224, or 32 on the bundled digits)" };
var evalBatch = new Option<int>("--batch-size") { Description = "Batch size", DefaultValueFactory = _ => 128 };
var evalDevice = new Option<string>("--device") { Description = "cpu, cuda or cuda:N", DefaultValueFactory = _ => "cpu" };
var evalWorkers = new Option<int>("--workers") { Description = "Threads decoding images", DefaultValueFactory = _ => 2 };
var evalThreads = new Option<int?>("--threads") { Description = "LibTorch intra-op threads" };
var eval = new Command("eval", "Top-1 / top-5 and throughput of a checkpoint on a validation folder")
{
    evalModel, checkpoint, evalData, evalImgSize, evalBatch, evalDevice, evalWorkers, evalThreads,
};
eval.SetAction(parse => Run(parse.GetValue(cpuRuntime), () =>
{
    ApplyThreads(parse.GetValue(evalThreads));
    int? evalSize = ImageSize(parse.GetValue(evalImgSize));
    var splits = Datasets.Open(parse.GetValue(evalData), warning => Console.Error.WriteLine("warning: " + warning));
    if (evalSize is { } size) splits = splits with { Recipe = splits.Recipe with { ImageSize = size } };
    var path = parse.GetValue(checkpoint)!;
    var weights = CheckpointWeights.Read(path, out var recordedModel, out var recordedClasses);
    CheckpointWeights.RequireFinite(weights, path);
    var name = parse.GetValue(evalModel) ?? recordedModel ?? "pola_pvt_tiny";
    var target = Trainer.ParseDevice(parse.GetValue(evalDevice)!);
    long classes = weights.TryGetValue("head.weight", out var head) ? head.shape[0] : splits.Validation.ClassNames.Count;
    var validation = EvalClasses.Match(path, classes, recordedClasses, splits.Validation, splits.Description, note => Console.WriteLine(note));
    RequireBuildable(name, classes, null, splits.Recipe.ImageSize);
    using var network = ModelRegistry.Create(name, numClasses: classes, imageSize: (splits.Recipe.ImageSize, splits.Recipe.ImageSize));
    StateDictLoader.Load(network, weights, strict: true, sourceName: path);
    network.to(target);
    var result = Trainer.Evaluate(network, validation, ImagePipeline.Eval(splits.Recipe), parse.GetValue(evalBatch), parse.GetValue(evalWorkers), target);
    if (!double.IsFinite(result.Loss))
        throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture,
            $"Evaluating '{path}' on {splits.Description} gave loss {result.Loss}; expected a finite number (the weights or the data produce non-finite logits)."));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{name} on {splits.Description}, {splits.ValidationSplitName} split at {splits.Recipe.ImageSize} px: top-1 {result.Top1:0.00}%, top-5 {result.Top5:0.00}%, loss {result.Loss:0.0000}, {result.Images} images, {result.ImagesPerSecond:0.0} images/s"));
}));

var models = new Command("models", "List the registered models");
models.SetAction(parse => Run(parse.GetValue(cpuRuntime), () =>
{
    foreach (var info in ModelRegistry.Models)
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{info.Name,-20} {info.Family,-5} {info.Parameters,12:N0} params  {info.InputSize.Height}x{info.InputSize.Width}  {info.Attention}"));
}));

var root = new RootCommand("PolaFormer for .NET: train and evaluate polarity-aware linear attention vision models") { train, eval, models };
root.Options.Add(cpuRuntime);
return root.Parse(args).Invoke();

// One-line errors for the mistakes users make; exit code 2.
static int Run(string? cpuRuntime, Action action)
{
    try
    {
        // Before the first tensor: OpenMP reads its wait policy when LibTorch loads.
        if (cpuRuntime is "tuned" or "passive" or "spin")
            TorchRuntime.ConfigureCpu(new CpuRuntimeOptions
            {
                WaitPolicy = cpuRuntime == "spin" ? OpenMpWaitPolicy.Default : null,   // null: passive, unless LibTorch is loaded already
                VerifyConvolution = false,   // the Trainer checks it on a CPU, once the arguments have been validated
            });
        TorchRuntime.EnsureLoaded();
        action();
        return 0;
    }
    catch (OperationCanceledException)
    {
        Console.Error.WriteLine("stopped; the last checkpoint is in the output folder, run the same command again to continue.");
        return 130;
    }
    catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException or UnauthorizedAccessException or HttpRequestException
                                  or PlatformNotSupportedException or NotSupportedException or InvalidOperationException)
    {
        // ArgumentException appends " (Parameter 'name')": the message names the input already.
        var message = e is ArgumentException { ParamName: { } parameter } ? e.Message.Replace($" (Parameter '{parameter}')", "", StringComparison.Ordinal) : e.Message;
        Console.Error.WriteLine($"error: {Flags.Name(message)}");
        return 2;
    }
}

// Ctrl+C (SIGINT) and SIGTERM (schedulers, `docker stop`) ask for a checkpoint at the next step boundary; a second
// one aborts at once, even in the middle of validation, leaving the last checkpoint written (files are replaced
// atomically, so none is half-written).
static IDisposable StopOnSignals(CancellationTokenSource stop)
{
    int received = 0;
    void Handle(PosixSignalContext context)
    {
        context.Cancel = true; // the runtime would otherwise end the process before a checkpoint is written
        if (Interlocked.Increment(ref received) == 1)
        {
            Console.Error.WriteLine($"{context.Signal}: stopping after this step and writing a checkpoint (send it again to abort without one)...");
            stop.Cancel();
            return;
        }
        Console.Error.WriteLine($"{context.Signal} again: aborted; the last checkpoint written is in the output folder.");
        Console.Error.Flush();
        Environment.Exit(130);
    }
    var registrations = new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM }.Select(s => PosixSignalRegistration.Create(s, Handle)).ToList();
    return new Registrations(registrations);
}

// --img-size: a positive number of pixels (the model names the multiple it needs when it is built).
static int? ImageSize(int? pixels) => pixels is null or > 0 ? pixels
    : throw new ArgumentException($"--img-size is {pixels}; expected a positive number of pixels (e.g. 224, or 32 for the digits).", "--img-size");

// The image size against the model, before any work: the model is built on the meta device (no memory), and its
// own error names the multiple it needs.
static void RequireBuildable(string model, long classes, string? attention, int imageSize)
{
    _ = ModelRegistry.Describe(model);   // an unknown name is reported as such
    try
    {
        using var probe = ModelRegistry.Create(model, numClasses: classes, attentionTypes: attention, imageSize: (imageSize, imageSize), device: META);
    }
    catch (ArgumentException e)
    {
        // Blame the size only when the preset's size builds (another cause, e.g. --attention, keeps its own error).
        using (ModelRegistry.Create(model, numClasses: classes, attentionTypes: attention, device: META)) { }
        throw new ArgumentException($"--img-size {imageSize} does not suit {model}: {e.Message}", "--img-size", e);
    }
}

static DistributedBackend Backend(string text) => text.Trim().ToLowerInvariant() is "none" or "" or "mpi" or "nccl"
    ? ProcessGroup.ParseBackend(text)
    : throw new ArgumentException($"--dist-backend is '{text}'; expected none, mpi (CPU, launched with mpirun) or nccl (GPU).", "--dist-backend");

static void ApplyThreads(int? threads)
{
    if (threads is null) return;
    if (threads < 1) throw new ArgumentException($"--threads is {threads}; expected at least 1.", "--threads");
    set_num_threads(threads.Value);
}

/// <summary>Disposes the signal handlers together.</summary>
internal sealed class Registrations(IReadOnlyList<IDisposable> items) : IDisposable
{
    public void Dispose()
    {
        foreach (var item in items) item.Dispose();
    }
}
