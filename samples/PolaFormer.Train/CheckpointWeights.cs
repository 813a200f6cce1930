using PolaFormer.Checkpoints;
using static TorchSharp.torch;

/// <summary>Reads model weights from a training checkpoint, exported safetensors or a PyTorch .pth.</summary>
internal static class CheckpointWeights
{
    /// <summary>The weights in <paramref name="path"/>, with the model name and the class names the file records
    /// (exported weights record both; training checkpoints the model name).</summary>
    public static Dictionary<string, Tensor> Read(string path, out string? modelName, out IReadOnlyList<string>? classNames)
    {
        modelName = null;
        classNames = null;
        if (!File.Exists(path)) throw new FileNotFoundException($"No checkpoint at '{path}'.", path);
        if (path.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase))
        {
            // Verifies the whole file first, so a corrupt one is reported with its path rather than as a zip error.
            modelName = PolaFormer.Training.Checkpointing.TrainingCheckpoint.ReadState(path).ModelName;
            using var zip = System.IO.Compression.ZipFile.OpenRead(path);
            var entry = zip.GetEntry("model.safetensors") ?? throw new InvalidDataException($"'{path}' has no model weights.");
            using var stream = new MemoryStream();
            using (var source = entry.Open()) source.CopyTo(stream);
            stream.Position = 0;
            var file = SafeTensors.Load(stream, path);
            return file.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value);
        }
        var weights = Checkpoint.ReadStateDict(path);
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            using var file = SafeTensors.Load(path);
            modelName = file.Metadata.TryGetValue("model", out var m) ? m : null;
            if (file.Metadata.TryGetValue("classes", out var c) && c.Length > 0) classNames = c.Split(',');
        }
        return weights;
    }

    /// <summary>Throws when a floating-point weight holds NaN or ±∞: evaluating it would report a meaningless
    /// accuracy and a NaN loss.</summary>
    public static void RequireFinite(IReadOnlyDictionary<string, Tensor> weights, string path)
    {
        foreach (var (name, tensor) in weights)
        {
            if (!tensor.is_floating_point()) continue;
            using var bad = tensor.isfinite().logical_not().sum();
            long count = bad.item<long>();
            if (count > 0)
                throw new InvalidDataException(
                    $"Checkpoint '{path}' holds {count} non-finite value(s) (NaN or ±infinity) in '{name}' ({tensor.numel()} values); expected finite weights — the run diverged, use an earlier checkpoint.");
        }
    }
}
