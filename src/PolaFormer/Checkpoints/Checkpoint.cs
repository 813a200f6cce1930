using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Checkpoints;

/// <summary>
/// Loads weights into a model from either checkpoint format, chosen by the file's content: PyTorch's
/// <c>torch.save</c> zip (the authors' released <c>.pth</c> files, see <see cref="PyTorchCheckpoint"/>) or
/// safetensors (see <see cref="SafeTensors"/>); saves as safetensors.
/// </summary>
public static class Checkpoint
{
    /// <summary>
    /// Reads a checkpoint's model weights onto the CPU: a PyTorch file's state dict (see
    /// <see cref="PyTorchCheckpoint.ReadStateDict"/>) or every tensor of a safetensors file.
    /// </summary>
    /// <returns>Tensors by name in the file's order; the caller owns them.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotSupportedException">A legacy (pre-1.6) PyTorch file.</exception>
    /// <exception cref="InvalidDataException">The file is truncated, corrupted, in neither format, or holds no
    /// state dict.</exception>
    public static Dictionary<string, Tensor> ReadStateDict(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"No checkpoint at '{path}'.", path);
        Span<byte> header = stackalloc byte[4];
        int read;
        using (var stream = File.OpenRead(path)) read = stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
        if (read == 0) throw new InvalidDataException($"'{path}' is empty.");
        if (PyTorchCheckpoint.IsZip(header[..read]) || PyTorchCheckpoint.IsLegacy(header[..read]))
            return PyTorchCheckpoint.ReadStateDict(path);
        var file = SafeTensors.Load(path);
        return new Dictionary<string, Tensor>(file.Tensors);
    }

    /// <summary>
    /// Loads a checkpoint (PyTorch <c>.pth</c> or safetensors) into <paramref name="model"/>, converting to the
    /// model's dtype and device. The whole file is read and checked before any weight is copied, so a truncated or
    /// corrupted file, or (when strict) a mismatched one, leaves the model untouched.
    /// </summary>
    /// <param name="model">The model to fill.</param>
    /// <param name="path">The checkpoint.</param>
    /// <param name="strict">True: every name and shape must match, else <see cref="StateDictMismatchException"/>
    /// lists every missing, unexpected and mis-shaped key and nothing is copied. False: copies the keys present in
    /// both with equal shapes and reports the others.</param>
    /// <param name="excludePrefixes">Keys starting with one of these are neither copied nor checked, and are listed in
    /// <see cref="StateDictReport.Skipped"/> (e.g. <c>head.</c> to fine-tune on another number of classes).</param>
    /// <returns>What differed (nothing when a strict load returns) and what was skipped.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotSupportedException">A legacy (pre-1.6) PyTorch file.</exception>
    /// <exception cref="InvalidDataException">The file is truncated, corrupted, in neither format, or holds no
    /// state dict.</exception>
    /// <exception cref="StateDictMismatchException">Strict, and names or shapes differ.</exception>
    public static StateDictReport Load(nn.Module model, string path, bool strict = true,
        IReadOnlyCollection<string>? excludePrefixes = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var stateDict = ReadStateDict(path);
        try
        {
            return StateDictLoader.Load(model, stateDict, strict, path, excludePrefixes);
        }
        finally
        {
            foreach (var t in stateDict.Values) t.Dispose();
        }
    }

    /// <summary>
    /// Saves <paramref name="model"/>'s state dict (parameters and persistent buffers) as safetensors, atomically:
    /// a crash leaves either the previous file or the complete new one.
    /// </summary>
    /// <param name="model">The model to save.</param>
    /// <param name="path">The target file (conventionally <c>.safetensors</c>).</param>
    /// <param name="metadata">String metadata stored in the file's header (e.g. the configuration name).</param>
    public static void Save(nn.Module model, string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(path);
        SafeTensors.Save(path, model.state_dict(), metadata);
    }
}
