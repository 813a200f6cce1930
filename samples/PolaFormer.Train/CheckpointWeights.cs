using PolaFormer.Checkpoints;
using static TorchSharp.torch;

/// <summary>Reads model weights from a training checkpoint, exported safetensors or a PyTorch .pth.</summary>
internal static class CheckpointWeights
{
    public static Dictionary<string, Tensor> Read(string path, out string? modelName)
    {
        modelName = null;
        if (!File.Exists(path)) throw new FileNotFoundException($"No checkpoint at '{path}'.", path);
        if (path.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase))
        {
            using var zip = System.IO.Compression.ZipFile.OpenRead(path);
            var entry = zip.GetEntry("model.safetensors") ?? throw new InvalidDataException($"'{path}' has no model weights.");
            using var stream = new MemoryStream();
            using (var source = entry.Open()) source.CopyTo(stream);
            stream.Position = 0;
            modelName = PolaFormer.Training.Checkpointing.TrainingCheckpoint.ReadState(path).ModelName;
            var file = SafeTensors.Load(stream, path);
            return file.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value);
        }
        var weights = Checkpoint.ReadStateDict(path);
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            using var file = SafeTensors.Load(path);
            modelName = file.Metadata.TryGetValue("model", out var m) ? m : null;
        }
        return weights;
    }
}
