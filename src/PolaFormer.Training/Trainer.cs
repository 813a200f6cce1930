using System.Diagnostics;
using System.Text.Json;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Training.Checkpointing;
using PolaFormer.Training.Data;
using PolaFormer.Training.Distributed;
using PolaFormer.Training.Optimization;
using PolaFormer.Training.Reporting;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Training;

/// <summary>What a finished run reports.</summary>
/// <param name="Epochs">Metrics of every epoch, including those done before a resume.</param>
/// <param name="FinalTop1">Validation top-1 (%) after the last epoch.</param>
/// <param name="BestTop1">Best validation top-1 (%).</param>
/// <param name="WeightsPath">The exported weights (safetensors).</param>
/// <param name="ResumedFrom">The checkpoint the run continued from, if any.</param>
public sealed record TrainingResult(IReadOnlyList<EpochMetrics> Epochs, double FinalTop1, double BestTop1, string WeightsPath, string? ResumedFrom);

/// <summary>Validation results.</summary>
/// <param name="Top1">Top-1 accuracy, %.</param>
/// <param name="Top5">Top-5 accuracy, %.</param>
/// <param name="Loss">Mean cross entropy against the labels.</param>
/// <param name="Images">Images evaluated.</param>
/// <param name="ImagesPerSecond">Throughput (decoding included).</param>
public sealed record EvaluationResult(double Top1, double Top5, double Loss, long Images, double ImagesPerSecond);

/// <summary>
/// Trains a registered model with the official recipe: deterministic prefetching data pipeline, mixup/cutmix with
/// soft targets, AdamW with parameter groups, warmup + cosine per iteration, clipping, optional EMA; checkpoints
/// every epoch (and every N steps) atomically, resumes exactly, writes metrics.csv and training.png.
/// <para>Data-parallel with a <see cref="ProcessGroup"/> of several ranks (PyTorch DDP's rules): rank 0's initial
/// weights go to every rank, each rank reads its shard of every epoch (<see cref="BatchLoaderOptions.Rank"/>),
/// gradients are averaged before clipping, the learning rate scales with the global batch (batch size × ranks),
/// the logged loss is the global mean, validation is sharded and its counts summed, and only rank 0 logs and writes
/// files, with a barrier after each write. Every rank must resume from the same checkpoint (a shared folder): rank
/// 0 picks it. Rank 0 resumes its random state exactly; the others re-derive theirs from (seed, rank, step).</para>
/// </summary>
public sealed class Trainer
{
    private readonly TrainingOptions _options;
    private readonly DatasetSplits _data;
    private readonly ProgressReporter _progress;
    private readonly Func<long, Device, Backbone>? _modelFactory;
    private readonly ProcessGroup? _group;
    private readonly TrainerComponents _components;

    /// <summary>Prepares a run.</summary>
    /// <param name="options">The recipe.</param>
    /// <param name="data">Training and validation sets with their data recipe.</param>
    /// <param name="outputFolder">Checkpoints, metrics.csv, training.png and the exported weights go here.</param>
    /// <param name="progress">Where progress goes (default: the console).</param>
    /// <param name="modelFactory">Builds the model from (number of classes, device) instead of the registry (then
    /// <see cref="TrainingOptions.Model"/> is only its label). Called once, or twice with EMA.</param>
    /// <param name="processGroup">The ranks of a data-parallel job (null: this process alone). The trainer uses it
    /// but does not dispose it.</param>
    /// <param name="components">A loss or learning-rate schedule of your own in place of the recipe's (null: the
    /// recipe's).</param>
    public Trainer(TrainingOptions options, DatasetSplits data, string outputFolder, ProgressReporter? progress = null,
        Func<long, Device, Backbone>? modelFactory = null, ProcessGroup? processGroup = null, TrainerComponents? components = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentException.ThrowIfNullOrEmpty(outputFolder);
        options.Validate();
        if (modelFactory is null) _ = ModelRegistry.Describe(options.Model);   // unknown names fail here, before any work
        _options = options;
        _data = data;
        _modelFactory = modelFactory;
        _components = components ?? new TrainerComponents();
        _group = processGroup is { WorldSize: > 1 } ? processGroup : null;
        _progress = progress ?? new ProgressReporter();
        if (_group is { Rank: > 0 }) _progress = new ProgressReporter(TextWriter.Null, live: false);
        Checkpoints = new CheckpointFolder(outputFolder, options.KeepCheckpoints);
    }

    /// <summary>The run's checkpoint folder.</summary>
    public CheckpointFolder Checkpoints { get; }

    /// <summary>Raised after every optimiser step with the global step count (1-based).</summary>
    public event Action<long>? StepCompleted;

    /// <summary>
    /// Trains to the end. Continues from <paramref name="resumeFrom"/> when given, else (with
    /// <paramref name="autoResume"/>) from the newest good checkpoint in the output folder. When
    /// <paramref name="cancellationToken"/> fires, a checkpoint of the current step is written before
    /// <see cref="OperationCanceledException"/> is thrown, so nothing is lost.
    /// <para>The first lines reported are the schedule: a warmup clamped to half the run
    /// (<see cref="TrainingOptions.DescribeWarmupClamp"/>) and the learning rates after linear scaling with the total
    /// batch (<see cref="TrainingOptions.DescribeLearningRates"/>).</para>
    /// <para>Before any training the output folder is checked (writable, room for a checkpoint) and temporary files of
    /// interrupted writes are removed. A checkpoint of another run (model, batch size, recipe or data) or of a finished
    /// run is refused with the differences named, unless <see cref="TrainingOptions.ContinueRun"/> is set or
    /// <paramref name="resumeFrom"/> names it (the batch size can never change mid-run).</para>
    /// </summary>
    /// <exception cref="ArgumentException">The folder holds another or a finished run, or the batch size differs.</exception>
    /// <exception cref="IOException">The output folder is not writable, or its file system lacks room for a checkpoint.</exception>
    /// <exception cref="InvalidDataException">The checkpoint to resume from is corrupted (its path is named).</exception>
    public TrainingResult Run(string? resumeFrom = null, bool autoResume = true, CancellationToken cancellationToken = default)
    {
        var group = _group;
        int rank = group?.Rank ?? 0, world = group?.WorldSize ?? 1;
        var device = group is null ? Available(_options.Device) : DistributedDevice(group);
        var dtype = _options.Dtype;
        int classes = _data.Train.ClassNames.Count;
        var recipe = _data.Recipe;
        if (rank == 0)
        {
            // The schedule first: a clamped warmup and the scaled learning rates are said before anything else.
            if (_options.DescribeWarmupClamp() is { } clamp) _progress.Info(clamp);
            _progress.Info(_options.DescribeLearningRates(_options.BatchSize * world));
            // Before LibTorch does any work: a folder that takes no files fails at once, with its path named.
            Checkpoints.CheckWritable(0);
            var stale = Checkpoints.RemoveStaleTemporaryFiles();
            if (stale.Count > 0) _progress.Info($"removed {stale.Count} temporary file(s) an interrupted write left in {Checkpoints.Folder}: {string.Join(", ", stale)}");
        }
        // An explicit checkpoint is verified before LibTorch does any work, so a bad path or file fails at once.
        TrainingState? recordedState = resumeFrom is null ? null : TrainingCheckpoint.ReadState(resumeFrom);
        if (device.type == DeviceType.CPU)
        {
            // Some CPUs' oneDNN convolution is wrong (TorchRuntime.VerifyCpuConvolution): train on LibTorch's own then,
            // and refuse to train on one that stays wrong rather than report NaN losses later.
            bool? oneDnnBefore = TorchRuntime.OneDnnEnabled;
            var convolution = TorchRuntime.VerifyCpuConvolution();
            if (!convolution.Correct) throw new InvalidOperationException(convolution + "; training on this CPU would compute wrong gradients.");
            if (oneDnnBefore == true && convolution.OneDnnEnabled == false)
                _progress.Info("warning: LibTorch's oneDNN convolution is wrong on this CPU; oneDNN switched off for this process (README § Known issues)");
        }
        manual_seed(_options.Seed + rank);

        // `model` holds the float32 weights the optimiser updates, checkpoints and exports; in float16/bfloat16 the
        // passes run on a low-precision copy of it.
        // The trainable parameters and their gradients live in one flat buffer per kind (FlatParameters), so the
        // optimiser, clipping, the EMA, the low-precision copy and the all-reduce each take a few kernel launches.
        using var model = CreateModel(classes, device);
        var (decay, noDecay) = ParameterGroups.Split(model);
        using var flat = FlatParameters.Create([decay, noDecay]);
        using var lowPrecisionModel = dtype == ScalarType.Float32 ? null : CreateModel(classes, device);
        var lowPrecision = lowPrecisionModel is null ? null : new LowPrecisionCopy(flat, model, lowPrecisionModel, dtype);
        var compute = lowPrecision?.Copy ?? model;
        using var ddp = group is null ? null : new DistributedDataParallel(model, group, flat);
        ddp?.SynchronizeParameters();
        using var ema = _options.ModelEma ? new ModelEma(CreateModel(classes, device), model, _options.ModelEmaDecay, flat) : null;
        var scaler = dtype == ScalarType.Float16 ? new DynamicLossScaler() : null;
        _checkpointBytes = EstimateCheckpointBytes(model, ema is not null);
        // Before any training: a folder without room for a checkpoint would otherwise fail only after an epoch.
        if (rank == 0) Checkpoints.CheckWritable(_checkpointBytes);

        var trainPipeline = _components.TrainPipeline?.Invoke(recipe) ?? ImagePipeline.Train(recipe);
        if (trainPipeline.OutputSize != recipe.ImageSize)
            throw new ArgumentException(
                $"TrainerComponents.TrainPipeline gives {trainPipeline.OutputSize} px images; the run's data recipe is {recipe.ImageSize} px.", "components");
        var loader = new BatchLoader(_data.Train, trainPipeline, new BatchLoaderOptions
        {
            BatchSize = _options.BatchSize, Shuffle = true, DropLast = true, Workers = _options.Workers, Seed = _options.Seed,
            Rank = rank, WorldSize = world,
        });
        int stepsPerEpoch = loader.BatchesPerEpoch;
        if (stepsPerEpoch == 0)
            throw new ArgumentException(
                world == 1 ? $"TrainingOptions.BatchSize {_options.BatchSize} is larger than the training set ({_data.Train.Count} images): no full batch fits."
                    : $"TrainingOptions.BatchSize {_options.BatchSize} is larger than each rank's share of the training set ({loader.SamplesPerEpoch} of {_data.Train.Count} images over {world} ranks): no full batch fits.",
                nameof(TrainingOptions.BatchSize));
        var (baseLr, warmupLr, minLr) = _options.ScaledLearningRates(_options.BatchSize * world);
        var recipeSchedule = new WarmupCosineSchedule(baseLr, warmupLr, minLr,
            (long)(_options.ScheduledWarmupEpochs() * stepsPerEpoch), (long)_options.Epochs * stepsPerEpoch);
        long totalSteps = (long)_options.Epochs * stepsPerEpoch;
        var schedule = _components.LearningRate is { } custom
            ? new Schedule(step => CheckedRate(custom(new ScheduleStep(step, stepsPerEpoch, totalSteps, baseLr)), step))
            : new Schedule(recipeSchedule.At);
        var lossOf = _components.Loss ?? SoftTargetCrossEntropy.Compute;
        using var flatAdamW = _components.Optimizer is null
            ? new FlatAdamW(flat, [_options.WeightDecay, 0], lr: schedule.At(0), beta1: _options.Beta1, beta2: _options.Beta2, eps: _options.Eps)
            : null;
        using var customOptimizer = _components.Optimizer?.Invoke(new OptimizerParameters(decay, noDecay, _options.WeightDecay, schedule.At(0)));
        TorchSharp.Modules.OptimizerHelper optimizer = flatAdamW?.Optimizer ?? customOptimizer
            ?? throw new InvalidOperationException("TrainerComponents.Optimizer returned null; expected a TorchSharp optimizer over the parameters it was given.");
        var mixup = new Mixup(recipe.Mixup, classes, _options.Seed + rank);

        string optionsJson = JsonSerializer.Serialize(_options);
        string dataFingerprint = DataFingerprint(_data);
        var state = new TrainingState(_options.Model, 0, 0, 0, -1, optionsJson, DataFingerprint: dataFingerprint);
        string? resumedFrom = null;
        var found = resumeFrom is null && autoResume && rank == 0 ? Checkpoints.FindResumable(m => _progress.Info("warning: " + m)) : null;
        var resumePath = resumeFrom ?? found?.Path;
        recordedState ??= found?.State;
        if (group is not null && resumeFrom is null) resumePath = group.BroadcastText(resumePath, "the checkpoint to resume from");
        if (resumePath is not null)
        {
            var recorded = recordedState ?? TrainingCheckpoint.ReadState(resumePath);   // ranks > 0 of an auto-resume
            CheckSameRun(resumePath, recorded, dataFingerprint, explicitResume: resumeFrom is not null);
            state = TrainingCheckpoint.Load(resumePath, model, optimizer, ema);
            // The options and data of this run from now on; the position and best accuracy come from the checkpoint.
            state = state with { OptionsJson = optionsJson, DataFingerprint = dataFingerprint };
            resumedFrom = resumePath;
            if (rank > 0) manual_seed(_options.Seed + rank + 1_000_003L * state.GlobalStep); // only rank 0's random state is saved
            _progress.Info($"resumed from {Path.GetFileName(resumePath)}: epoch {state.Epoch + 1}, step {state.StepInEpoch}, global step {state.GlobalStep}");
        }

        string metricsPath = Path.Combine(Checkpoints.Folder, "metrics.csv");
        var history = MetricsCsv.Read(metricsPath).Where(r => r.Epoch <= state.Epoch).ToList();
        double best = state.BestTop1;
        var evalPipeline = ImagePipeline.Eval(recipe);
        int evalBatch = _options.EvalBatchSize > 0 ? _options.EvalBatchSize : 2 * _options.BatchSize;

        for (int epoch = state.Epoch; epoch < _options.Epochs; epoch++)
        {
            var clock = Stopwatch.StartNew();
            int first = epoch == state.Epoch ? state.StepInEpoch : 0;
            double lossSum = epoch == state.Epoch ? state.EpochLossSum : 0;
            long samples = epoch == state.Epoch ? state.EpochSamples : 0;
            long trainImages = 0;
            long globalStep = state.GlobalStep;
            SetLearningRate(optimizer, schedule.At(globalStep));
            lowPrecision?.Refresh();
            compute.train();
            _progress.StartEpoch(epoch, _options.Epochs, stepsPerEpoch, first);
            bool stopAgreed = false; // with several ranks, stopping is decided together so no rank is left waiting

            // The loader is not given the token: it would end the epoch while waiting for a batch, before the step
            // boundary where the checkpoint of the steps done so far is written.
            foreach (var batch in loader.Epoch(epoch, first, CancellationToken.None))
            {
                using (batch)
                using (var scope = NewDisposeScope())
                {
                    var images = batch.Images.to(device);
                    var labels = batch.Labels.to(device);
                    var (mixed, targets) = mixup.Apply(images, labels, epoch, batch.Index);
                    var logits = compute.forward(mixed.to(dtype)).to(ScalarType.Float32);
                    var loss = lossOf(logits, targets);
                    if (loss.numel() != 1)
                        throw new InvalidOperationException(
                            $"TrainerComponents.Loss returned a tensor of shape ({string.Join(", ", loss.shape)}); expected a scalar (one element) to differentiate.");
                    flat.ZeroGradients();
                    (scaler is null ? loss : scaler.ScaleLoss(loss)).backward();
                    lowPrecision?.MoveGradients();
                    ddp?.AverageGradients();
                    bool finiteGradients = scaler?.Unscale(flat) ?? true;
                    if (finiteGradients)
                    {
                        if (_options.ClipGrad > 0) flat.ClipGradientNorm(_options.ClipGrad);
                        if (flatAdamW is not null) flatAdamW.Step();
                        else customOptimizer!.step();
                        lowPrecision?.Refresh();
                        ema?.Update(model);
                    }

                    double value = loss.item<float>();
                    if (group is not null) (value, stopAgreed) = AgreeOnStep(group, value, cancellationToken.IsCancellationRequested);
                    if (!double.IsFinite(value))
                        throw new InvalidOperationException(
                            $"The training loss became {value} at epoch {epoch + 1}, step {batch.Index + 1}; lower TrainingOptions.BaseLr or keep TrainingOptions.ClipGrad on.");
                    lossSum += value * batch.Count * world;
                    samples += batch.Count * world;
                    trainImages += batch.Count * world;
                    globalStep++;
                    double lr = schedule.At(globalStep - 1);
                    SetLearningRate(optimizer, schedule.At(globalStep));
                    _progress.Step(batch.Index, value, lr, batch.Count * world);
                }

                state = state with { Epoch = epoch, StepInEpoch = batch.Index + 1, GlobalStep = globalStep, BestTop1 = best, EpochLossSum = lossSum, EpochSamples = samples };
                StepCompleted?.Invoke(globalStep);
                bool endOfEpoch = batch.Index + 1 == stepsPerEpoch;
                if ((group is null ? cancellationToken.IsCancellationRequested : stopAgreed) && !endOfEpoch)
                {
                    Save(state, model, optimizer, ema);
                    _progress.Info($"stopped at epoch {epoch + 1}, step {state.StepInEpoch}; checkpoint written, run again to continue");
                    throw new OperationCanceledException(cancellationToken);
                }
                if (!endOfEpoch && _options.CheckpointEverySteps > 0 && state.StepInEpoch % _options.CheckpointEverySteps == 0)
                    Save(state, model, optimizer, ema);
            }
            double trainSeconds = clock.Elapsed.TotalSeconds;

            var validation = Evaluate(compute, _data.Validation, evalPipeline, evalBatch, _options.Workers, device, group, dtype);
            bool isBest = validation.Top1 > best;
            best = Math.Max(best, validation.Top1);
            var metrics = new EpochMetrics(epoch + 1, samples == 0 ? double.NaN : lossSum / samples, validation.Loss, validation.Top1,
                validation.Top5, schedule.At(Math.Max(0, state.GlobalStep - 1)), clock.Elapsed.TotalSeconds, trainImages / Math.Max(trainSeconds, 1e-9));
            history.Add(metrics);
            _progress.EndEpoch(metrics, isBest);
            if (ema is not null)
            {
                var emaValidation = Evaluate(ema.Model, _data.Validation, evalPipeline, evalBatch, _options.Workers, device, group);
                _progress.Info(FormattableString.Invariant($"  EMA: top-1 {emaValidation.Top1:0.00}%, top-5 {emaValidation.Top5:0.00}%"));
            }

            state = state with { Epoch = epoch + 1, StepInEpoch = 0, BestTop1 = best, EpochLossSum = 0, EpochSamples = 0 };
            var path = Save(state, model, optimizer, ema);
            if (rank == 0)
            {
                if (isBest) CopyAtomically(path, Checkpoints.BestPath);
                MetricsCsv.Write(metricsPath, history);
                TrainingPlot.Write(Path.Combine(Checkpoints.Folder, "training.png"), history, $"{_options.Model}: {_data.Train.Count} training images, {classes} classes");
            }
            group?.Barrier("metrics and plot written");
            if (group is null ? cancellationToken.IsCancellationRequested : stopAgreed) throw new OperationCanceledException(cancellationToken);
        }

        var weightsPath = Path.Combine(Checkpoints.Folder, "model.safetensors");
        if (rank == 0)
        {
            Checkpoint.Save(model, weightsPath, new Dictionary<string, string> { ["model"] = _options.Model, ["classes"] = string.Join(",", _data.Train.ClassNames) });
            if (ema is not null) Checkpoint.Save(ema.Model, Path.Combine(Checkpoints.Folder, "model-ema.safetensors"));
        }
        group?.Barrier("weights written");
        return new TrainingResult(history, history.Count > 0 ? history[^1].ValTop1 : double.NaN, best, weightsPath, resumedFrom);
    }

    /// <summary>Top-1 / top-5 / loss of a model on a dataset, with the evaluation transform. With a
    /// <paramref name="group"/> of several ranks, each evaluates its shard (every image once over all ranks) and the
    /// counts are summed, so every rank returns the whole set's figures.</summary>
    /// <param name="model">The model (switched to evaluation mode for the call).</param>
    /// <param name="data">The images.</param>
    /// <param name="pipeline">The evaluation transform.</param>
    /// <param name="batchSize">Images per forward pass.</param>
    /// <param name="workers">Decoding threads.</param>
    /// <param name="device">Device of the model.</param>
    /// <param name="group">The process group, for sharded evaluation (default: this process alone).</param>
    /// <param name="dtype">Dtype of the model (default float32).</param>
    public static EvaluationResult Evaluate(Backbone model, IImageDataset data, ImagePipeline pipeline, int batchSize, int workers, Device device,
        ProcessGroup? group = null, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        var loader = new BatchLoader(data, pipeline, new BatchLoaderOptions
        {
            BatchSize = batchSize, Shuffle = false, DropLast = false, Workers = workers,
            Rank = group?.Rank ?? 0, WorldSize = group?.WorldSize ?? 1, EvenShards = false,
        });
        bool wasTraining = model.training;
        model.eval();
        long top1 = 0, top5 = 0, seen = 0;
        double lossSum = 0;
        var clock = Stopwatch.StartNew();
        using (no_grad())
        {
            foreach (var batch in loader.Epoch(0))
            {
                using (batch)
                using (var scope = NewDisposeScope())
                {
                    var logits = model.forward(batch.Images.to(device).to(dtype)).to(ScalarType.Float32);
                    var labels = batch.Labels.to(device);
                    lossSum += nn.functional.cross_entropy(logits, labels, reduction: nn.Reduction.Sum).item<float>();
                    int k = (int)Math.Min(5, logits.shape[1]);
                    var predictions = logits.topk(k, dim: 1).indexes;
                    var hits = predictions.eq(labels.unsqueeze(1));
                    top1 += hits[.., 0].sum().item<long>();
                    top5 += hits.any(1).sum().item<long>();
                    seen += batch.Count;
                }
            }
        }
        model.train(wasTraining);
        if (group is { WorldSize: > 1 })
        {
            using var totals = tensor(new double[] { top1, top5, seen, lossSum }, device: group.Device);
            group.AllReduce(totals, ReduceOperation.Sum, "validation counts");
            var sums = totals.cpu().data<double>().ToArray();
            (top1, top5, seen, lossSum) = ((long)sums[0], (long)sums[1], (long)sums[2], sums[3]);
        }
        double seconds = Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
        return seen == 0
            ? new EvaluationResult(double.NaN, double.NaN, double.NaN, 0, 0)
            : new EvaluationResult(100.0 * top1 / seen, 100.0 * top5 / seen, lossSum / seen, seen, seen / seconds);
    }

    /// <summary>"cpu", "cuda" or "cuda:N" → a device, with a clear error when CUDA is asked for but not there.</summary>
    public static Device ParseDevice(string text)
    {
        ArgumentException.ThrowIfNullOrEmpty(text);
        if (text == "cpu") return CPU;
        if (text == "cuda" || text.StartsWith("cuda:", StringComparison.Ordinal))
            return Available(device(text), text);
        throw new ArgumentException($"TrainingOptions.Device is '{text}'; expected cpu, cuda or cuda:N.", nameof(TrainingOptions.Device));
    }

    // A CUDA device where CUDA cannot be used fails here, with what to do, rather than deep inside LibTorch.
    private static Device Available(Device requested, string? text = null)
    {
        if (requested.type == DeviceType.CUDA && !cuda.is_available())
            throw new ArgumentException($"TrainingOptions.Device is '{text ?? requested.ToString()}' but CUDA is not available: reference the CUDA build of LibTorch (TorchSharp-cuda-linux / -windows) and check the driver, or train on the CPU.", nameof(TrainingOptions.Device));
        return requested;
    }

    private Backbone CreateModel(int classes, Device device) => _modelFactory is not null
        ? _modelFactory(classes, device)
        : ModelRegistry.Create(_options.Model, numClasses: classes, dropPathRate: _options.DropPathRate,
            attentionTypes: _options.AttentionTypes, imageSize: (_data.Recipe.ImageSize, _data.Recipe.ImageSize), device: device);

    private string Save(TrainingState state, Backbone model, TorchSharp.Modules.OptimizerHelper optimizer, ModelEma? ema)
    {
        var path = Checkpoints.PathFor(state.Epoch, state.StepInEpoch);
        if (_group is not { Rank: > 0 })
        {
            try
            {
                TrainingCheckpoint.Save(path, state, model, optimizer, ema);
            }
            catch (IOException e) when (IsDiskFull(e))
            {
                throw DiskFull(e, Checkpoints, path, _checkpointBytes);
            }
            // Read back before pruning: only a checkpoint that verifies may replace older ones.
            TrainingCheckpoint.ReadState(path);
            Checkpoints.MarkVerified(path);
            Checkpoints.Prune(m => _progress.Info("warning: " + m));
        }
        _group?.Barrier($"checkpoint {Path.GetFileName(path)} written");
        return path;
    }

    private long _checkpointBytes;

    /// <summary>Bytes of a checkpoint of <paramref name="model"/>: the float32 weights and buffers, AdamW's two
    /// moments per weight, the EMA's copy, and a margin for the archive and the random state.</summary>
    private static long EstimateCheckpointBytes(Backbone model, bool ema)
    {
        long parameters = model.parameters().Sum(p => p.numel());
        long buffers = model.buffers().Sum(b => b.numel());
        long weights = 4 * (parameters + buffers);
        return weights * (ema ? 2 : 1) + 4 * 2 * parameters + (1 << 20);
    }

    /// <summary>ENOSPC / EDQUOT on Unix (the HResult is the errno), ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL on Windows.</summary>
    internal static bool IsDiskFull(IOException e) => (e.HResult & 0xFFFF) is 28 or 122 or 0x70 or 0x27;

    /// <summary>What a full disk means for the run: the size needed, the space free, and the checkpoint that is
    /// still there (the atomic writer removed its temporary file, so the previous checkpoint is untouched).</summary>
    internal static IOException DiskFull(IOException e, CheckpointFolder folder, string path, long checkpointBytes)
    {
        var previous = folder.FindResumable()?.Path;
        long free = folder.FreeBytes();
        return new IOException(
            $"The file system of '{folder.Folder}' is full: checkpoint {Path.GetFileName(path)} needs about {CheckpointFolder.Megabytes(checkpointBytes)}"
            + (free >= 0 ? $", {CheckpointFolder.Megabytes(free)} free" : "")
            + (previous is null ? "; no earlier checkpoint exists." : $"; the previous checkpoint {Path.GetFileName(previous)} is intact. Free space and run the same command to continue from it."), e);
    }

    private static void CopyAtomically(string source, string destination) => AtomicFile.Write(destination, stream =>
    {
        using var input = File.OpenRead(source);
        input.CopyTo(stream);
    });

    /// <summary>What the run trains on, for <see cref="TrainingState.DataFingerprint"/>.</summary>
    private static string DataFingerprint(DatasetSplits data) => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"{data.Train.Count} train / {data.Validation.Count} validation images, {data.Recipe.ImageSize} px, classes {string.Join(",", data.Train.ClassNames)}");

    /// <summary>
    /// Refuses to continue a checkpoint of another run: another model, batch size (the position in the epoch could not
    /// be mapped), recipe or data, or a finished run, unless the caller asked to continue
    /// (<see cref="TrainingOptions.ContinueRun"/>, or an explicit checkpoint to resume from for recipe differences).
    /// </summary>
    private void CheckSameRun(string path, TrainingState recorded, string dataFingerprint, bool explicitResume)
    {
        string name = $"Checkpoint '{path}'";
        if (recorded.ModelName != _options.Model)
            throw new ArgumentException($"{name} is of model '{recorded.ModelName}', not '{_options.Model}'; set TrainingOptions.Model to {recorded.ModelName} or use another output folder.", nameof(TrainingOptions.Model));
        TrainingOptions? theirs;
        try
        {
            theirs = JsonSerializer.Deserialize<TrainingOptions>(recorded.OptionsJson);
        }
        catch (JsonException)
        {
            theirs = null;
        }
        if (theirs is not null && theirs.BatchSize != _options.BatchSize)
            throw new ArgumentException(
                $"{name} was written with TrainingOptions.BatchSize {theirs.BatchSize}; this run asks for TrainingOptions.BatchSize {_options.BatchSize}. The position in the epoch and the learning-rate schedule are counted in batches, so resume with TrainingOptions.BatchSize {theirs.BatchSize}, or start afresh in another output folder.",
                nameof(TrainingOptions.BatchSize));
        var differences = new List<string>();
        if (theirs is not null) differences.AddRange(_options.RecipeDifferences(theirs));
        if (recorded.DataFingerprint is not null && recorded.DataFingerprint != dataFingerprint)
            differences.Add($"data: {recorded.DataFingerprint} → {dataFingerprint}");
        bool finished = recorded.Epoch >= _options.Epochs;
        if (differences.Count > 0)
        {
            string list = string.Join("; ", differences);
            if (!_options.ContinueRun && !explicitResume)
                throw new ArgumentException(
                    $"{name} belongs to another run ({list}); use another output folder for a new run, or set TrainingOptions.ContinueRun to continue it with these settings.",
                    "outputFolder");
            _progress.Info($"warning: continuing {Path.GetFileName(path)} with other settings: {list}");
        }
        else if (finished && !_options.ContinueRun && !explicitResume)
        {
            throw new ArgumentException(
                $"{name} ends a finished run ({recorded.Epoch} of {_options.Epochs} epochs) in '{Checkpoints.Folder}'; its weights are model.safetensors there. Use another output folder for a new run, or TrainingOptions.ContinueRun with a larger TrainingOptions.Epochs to train it further.",
                "outputFolder");
        }
    }

    /// <summary>The global mean loss of the step, and whether any rank was asked to stop.</summary>
    private static (double Loss, bool Stop) AgreeOnStep(ProcessGroup group, double loss, bool stop)
    {
        using var values = tensor(new double[] { loss, stop ? 1 : 0 }, device: group.Device);
        group.AllReduce(values, ReduceOperation.Sum, "step loss and stop flag");
        var sums = values.cpu().data<double>().ToArray();
        return (sums[0] / group.WorldSize, sums[1] > 0);
    }

    /// <summary>The device of a rank: its GPU with NCCL (TrainingOptions.Device must be cuda), the CPU with MPI.</summary>
    private Device DistributedDevice(ProcessGroup group)
    {
        var requested = _options.Device;
        if (group.Device.type != requested.type)
            throw new ArgumentException(
                $"TrainingOptions.Device is '{_options.Device}' but the {group.Backend.ToString().ToLowerInvariant()} backend works on {(group.Device.type == DeviceType.CUDA ? "cuda (one GPU per rank, cuda:LOCAL_RANK)" : "the cpu")}; "
                + "use TrainingOptions.Device cuda with the nccl backend, cpu with the mpi backend.", nameof(TrainingOptions.Device));
        return group.Device;
    }

    /// <summary>The learning rate of each global step (the recipe's, or <see cref="TrainerComponents.LearningRate"/>).</summary>
    private sealed class Schedule(Func<long, double> rate)
    {
        public double At(long step) => rate(step);
    }

    private static double CheckedRate(double rate, long step) => double.IsFinite(rate) && rate >= 0 ? rate
        : throw new InvalidOperationException($"TrainerComponents.LearningRate gave {rate} for step {step}; expected a finite rate of 0 or more.");

    private static void SetLearningRate(optim.Optimizer optimizer, double lr)
    {
        foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
    }
}
