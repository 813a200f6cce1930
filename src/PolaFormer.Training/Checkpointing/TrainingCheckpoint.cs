using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;
using PolaFormer.Checkpoints;
using PolaFormer.Training.Optimization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Training.Checkpointing;

/// <summary>Where a run stands: what a checkpoint records besides the tensors.</summary>
/// <param name="ModelName">Registry name of the model.</param>
/// <param name="Epoch">0-based epoch the run is in.</param>
/// <param name="StepInEpoch">Batches of <paramref name="Epoch"/> already done (0 at an epoch boundary).</param>
/// <param name="GlobalStep">Optimiser steps done since the start of the run.</param>
/// <param name="BestTop1">Best validation top-1 so far (%), or −1.</param>
/// <param name="OptionsJson">The training options of the run, as JSON (for information and checks).</param>
/// <param name="EpochLossSum">Sum of the training loss × batch size over the batches of <paramref name="Epoch"/>
/// done so far, so a resumed epoch reports the same mean loss as an uninterrupted one.</param>
/// <param name="EpochSamples">Training samples of <paramref name="Epoch"/> done so far.</param>
/// <param name="DataFingerprint">What the run trains on (image counts, classes, image size), so a folder is not
/// continued on other data; null in checkpoints written before it was recorded.</param>
public sealed record TrainingState(string ModelName, int Epoch, int StepInEpoch, long GlobalStep, double BestTop1, string OptionsJson,
    double EpochLossSum = 0, long EpochSamples = 0, string? DataFingerprint = null);

/// <summary>
/// One file holding everything a run needs to continue exactly where it stopped: model, optimiser, EMA weights,
/// torch's random state and the run's position. A zip archive (uncompressed) with a SHA-256 per entry: written
/// atomically (temporary file, flush, rename), and verified in full before anything is loaded, so a truncated or
/// corrupted file is reported and never half-applied.
/// </summary>
public static class TrainingCheckpoint
{
    private const string Format = "polaformer-training-checkpoint";
    private const int Version = 1;

    private sealed record Meta(string Format, int Version, TrainingState State, string TorchRngState, Dictionary<string, string> Sha256);

    /// <summary>Writes a checkpoint atomically.</summary>
    public static void Save(string path, TrainingState state, nn.Module model, OptimizerHelper optimizer, ModelEma? ema = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);

        var entries = new Dictionary<string, byte[]>
        {
            ["model.safetensors"] = SafeTensorsBytes(model),
            ["optimizer.bin"] = OptimizerBytes(optimizer),
        };
        if (ema is not null) entries["ema.safetensors"] = SafeTensorsBytes(ema.Model);
        using var rng = random.get_rng_state();
        var meta = new Meta(Format, Version, state, Convert.ToBase64String(rng.bytes.ToArray()),
            entries.ToDictionary(e => e.Key, e => Convert.ToHexString(SHA256.HashData(e.Value))));

        AtomicFile.Write(path, stream =>
        {
            using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
            Write(zip, "meta.json", JsonSerializer.SerializeToUtf8Bytes(meta));
            foreach (var (name, bytes) in entries) Write(zip, name, bytes);
        });
    }

    /// <summary>Reads and verifies a checkpoint's state without loading tensors.</summary>
    /// <exception cref="InvalidDataException">The file is truncated, corrupted or not a training checkpoint.</exception>
    public static TrainingState ReadState(string path) => ReadVerified(path).Meta.State;

    /// <summary>
    /// Verifies the whole file, then restores model, optimiser, EMA and torch's random state, and returns the run's
    /// position. Nothing is changed when the file is bad or does not fit the model.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is truncated, corrupted or not a training checkpoint.</exception>
    /// <exception cref="StateDictMismatchException">The weights do not fit the model.</exception>
    public static TrainingState Load(string path, nn.Module model, OptimizerHelper optimizer, ModelEma? ema = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);
        var (meta, entries) = ReadVerified(path);
        if (ema is not null && !entries.ContainsKey("ema.safetensors"))
            throw new InvalidDataException($"Checkpoint '{path}' has no EMA weights but this run uses EMA; start without TrainingOptions.ModelEma or from another checkpoint.");

        using var weights = SafeTensors.Load(new MemoryStream(entries["model.safetensors"]), path);
        using var emaWeights = ema is null ? null : SafeTensors.Load(new MemoryStream(entries["ema.safetensors"]), path);
        var report = StateDictLoader.Compare(model, weights.Tensors);
        if (!report.IsExact) throw new StateDictMismatchException(report, path);
        if (ema is not null)
        {
            var emaReport = StateDictLoader.Compare(ema.Model, emaWeights!.Tensors);
            if (!emaReport.IsExact) throw new StateDictMismatchException(emaReport, path + " (EMA)");
        }

        // The optimizer first: a checkpoint of another optimizer (TrainerComponents.Optimizer changed between runs)
        // is refused before the model is touched.
        try
        {
            using var reader = new BinaryReader(new MemoryStream(entries["optimizer.bin"]));
            optimizer.load_state_dict(reader);
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException or InvalidOperationException or EndOfStreamException or IOException or FormatException)
        {
            throw new InvalidDataException(
                $"{path}: its optimizer state does not fit this run's {optimizer.GetType().Name} ({e.Message}); resume with the optimizer the run was started with.", e);
        }
        StateDictLoader.Load(model, weights.Tensors, strict: true, sourceName: path);
        if (ema is not null) StateDictLoader.Load(ema.Model, emaWeights!.Tensors, strict: true, sourceName: path);
        var rngBytes = Convert.FromBase64String(meta.TorchRngState);
        using var rng = empty(rngBytes.Length, dtype: ScalarType.Byte);
        rng.bytes = rngBytes;
        random.set_rng_state(rng);
        return meta.State;
    }

    private static (Meta Meta, Dictionary<string, byte[]> Entries) ReadVerified(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"No checkpoint at '{path}'.", path);
        try
        {
            using var zip = ZipFile.OpenRead(path);
            var entries = zip.Entries.ToDictionary(e => e.FullName, ReadAll);
            if (!entries.TryGetValue("meta.json", out var metaBytes))
                throw new InvalidDataException("it has no meta.json");
            var meta = JsonSerializer.Deserialize<Meta>(metaBytes) ?? throw new InvalidDataException("meta.json is empty");
            if (meta.Format != Format || meta.Version != Version)
                throw new InvalidDataException($"it is '{meta.Format}' version {meta.Version}, expected '{Format}' version {Version}");
            foreach (var (name, hash) in meta.Sha256)
            {
                if (!entries.TryGetValue(name, out var bytes)) throw new InvalidDataException($"entry '{name}' is missing");
                if (!Convert.ToHexString(SHA256.HashData(bytes)).Equals(hash, StringComparison.OrdinalIgnoreCase))
                    throw new InvalidDataException($"entry '{name}' does not match its checksum");
            }
            return (meta, entries);
        }
        catch (Exception e) when (e is InvalidDataException or JsonException or IOException or NotSupportedException && e is not FileNotFoundException)
        {
            throw new InvalidDataException($"Checkpoint '{path}' is corrupted or incomplete ({e.Message}).", e);
        }
    }

    private static byte[] ReadAll(ZipArchiveEntry entry)
    {
        using var stream = entry.Open();
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        return buffer.ToArray();
    }

    private static void Write(ZipArchive zip, string name, byte[] bytes)
    {
        using var stream = zip.CreateEntry(name, CompressionLevel.NoCompression).Open();
        stream.Write(bytes);
    }

    private static byte[] SafeTensorsBytes(nn.Module module)
    {
        using var buffer = new MemoryStream();
        SafeTensors.Save(buffer, module.state_dict());
        return buffer.ToArray();
    }

    private static byte[] OptimizerBytes(OptimizerHelper optimizer)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true))
            optimizer.save_state_dict(writer);
        return buffer.ToArray();
    }
}
