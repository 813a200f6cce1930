using static TorchSharp.torch;

namespace PolaFormer.Checkpoints;

/// <summary>What a state-dict load found: keys the model has and the source lacks, keys the source has and the
/// model lacks, and keys whose shapes differ.</summary>
public sealed record StateDictReport(
    IReadOnlyList<string> Missing,
    IReadOnlyList<string> Unexpected,
    IReadOnlyList<(string Key, long[] Expected, long[] Actual)> Mismatched)
{
    /// <summary>True when names and shapes match exactly.</summary>
    public bool IsExact => Missing.Count == 0 && Unexpected.Count == 0 && Mismatched.Count == 0;

    /// <summary>Every problem, one per line.</summary>
    public override string ToString()
    {
        if (IsExact) return "state dict matches: every key present with the right shape";
        var lines = new List<string>();
        if (Missing.Count > 0) lines.Add($"missing ({Missing.Count}): {string.Join(", ", Missing)}");
        if (Unexpected.Count > 0) lines.Add($"unexpected ({Unexpected.Count}): {string.Join(", ", Unexpected)}");
        if (Mismatched.Count > 0)
            lines.Add($"wrong shape ({Mismatched.Count}): " + string.Join(", ",
                Mismatched.Select(m => $"{m.Key} expected {Check.Format(m.Expected)} got {Check.Format(m.Actual)}")));
        return string.Join(Environment.NewLine, lines);
    }
}

/// <summary>Thrown by a strict load when names or shapes differ; lists every problem at once.</summary>
public sealed class StateDictMismatchException : ArgumentException
{
    /// <summary>Creates the exception from a report.</summary>
    public StateDictMismatchException(StateDictReport report, string? source = null)
        : base($"The state dict{(source is null ? "" : $" from '{source}'")} does not match the model; nothing was copied.{Environment.NewLine}{report}", "stateDict")
    {
        Report = report;
    }

    /// <summary>The differences found.</summary>
    public StateDictReport Report { get; }
}

/// <summary>
/// Loads named tensors into a module, checking names AND shapes before copying anything (TorchSharp's own
/// <c>load_state_dict</c> does not check shapes and broadcasts silently).
/// </summary>
public static class StateDictLoader
{
    /// <summary>Compares <paramref name="source"/> with the module's state dict without changing anything.</summary>
    public static StateDictReport Compare(nn.Module module, IReadOnlyDictionary<string, Tensor> source)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(source);
        var target = module.state_dict();
        var missing = target.Keys.Where(k => !source.ContainsKey(k)).ToList();
        var unexpected = source.Keys.Where(k => !target.ContainsKey(k)).ToList();
        var mismatched = target
            .Where(kv => source.TryGetValue(kv.Key, out var s) && !s.shape.SequenceEqual(kv.Value.shape))
            .Select(kv => (kv.Key, kv.Value.shape, source[kv.Key].shape))
            .ToList();
        return new StateDictReport(missing, unexpected, mismatched);
    }

    /// <summary>
    /// Copies <paramref name="source"/> into the module's parameters and persistent buffers (converting dtype and
    /// device to the module's). Strict: throws <see cref="StateDictMismatchException"/> listing every missing,
    /// unexpected and mis-shaped key, and copies nothing. Non-strict: copies the keys present in both with equal
    /// shapes and returns what differed.
    /// </summary>
    public static StateDictReport Load(nn.Module module, IReadOnlyDictionary<string, Tensor> source, bool strict = true,
        string? sourceName = null)
    {
        var report = Compare(module, source);
        if (strict && !report.IsExact) throw new StateDictMismatchException(report, sourceName);
        var mismatchedKeys = report.Mismatched.Select(m => m.Key).ToHashSet();
        using (no_grad())
        {
            foreach (var (key, destination) in module.state_dict())
            {
                if (!source.TryGetValue(key, out var value) || mismatchedKeys.Contains(key)) continue;
                destination.copy_(value);
            }
        }
        InvalidateDerivedState(module);
        return report;
    }

    /// <summary>Tells modules that cache tensors derived from their weights (e.g. resized positional encodings)
    /// that the weights changed.</summary>
    internal static void InvalidateDerivedState(nn.Module module)
    {
        // TorchSharp's modules() lists the descendants only, not the module itself (unlike PyTorch's).
        foreach (var m in module.modules().Prepend(module))
            if (m is IDerivedStateCache cache) cache.InvalidateDerivedState();
    }
}

/// <summary>A module that caches tensors derived from its weights.</summary>
internal interface IDerivedStateCache
{
    /// <summary>Drops what was derived from the weights.</summary>
    void InvalidateDerivedState();
}
