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

    /// <summary>Keys left out on purpose (e.g. the classifier of a checkpoint loaded for fine-tuning): neither
    /// copied nor counted as missing, unexpected or mis-shaped.</summary>
    public IReadOnlyList<string> Skipped { get; init; } = [];

    /// <summary>How many names of each kind <see cref="ToString"/> shows before "and N more".</summary>
    public const int NamesShown = 5;

    /// <summary>
    /// The problems grouped by kind: one line of counts, then per kind the first <see cref="NamesShown"/> names, and a
    /// hint when one leading prefix (such as <c>module.</c> from DataParallel or <c>model.</c> from a wrapper)
    /// explains the missing and unexpected names. Full lists stay in <see cref="Missing"/>, <see cref="Unexpected"/>
    /// and <see cref="Mismatched"/>: a real checkpoint differs in hundreds of keys, too many to read on one line.
    /// </summary>
    public override string ToString()
    {
        if (IsExact) return "state dict matches: every key present with the right shape"
                            + (Skipped.Count > 0 ? $" ({Skipped.Count} skipped: {Shown(Skipped)})" : "");
        var lines = new List<string>
        {
            $"{Missing.Count} missing, {Unexpected.Count} unexpected, {Mismatched.Count} wrong shape"
            + (Skipped.Count > 0 ? $", {Skipped.Count} skipped" : ""),
        };
        if (Missing.Count > 0) lines.Add($"missing (in the model, not in the source): {Shown(Missing)}");
        if (Unexpected.Count > 0) lines.Add($"unexpected (in the source, not in the model): {Shown(Unexpected)}");
        if (Mismatched.Count > 0)
            lines.Add("wrong shape: " + Shown(Mismatched.Select(m => $"{m.Key} expected {Check.Format(m.Expected)} got {Check.Format(m.Actual)}").ToList()));
        if (PrefixHint() is { } hint) lines.Add("hint: " + hint);
        return string.Join(Environment.NewLine, lines);
    }

    private static string Shown(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(NamesShown)) + (names.Count > NamesShown ? $", … and {names.Count - NamesShown} more" : "");

    /// <summary>A sentence naming a leading prefix that, added or removed, turns unexpected names into missing ones;
    /// null when no prefix explains at least half of them.</summary>
    public string? PrefixHint()
    {
        if (BestPrefix(Unexpected, Missing) is var (extra, n) && n > 0)
            return $"{n} of the {Unexpected.Count} unexpected keys match a missing key once their leading '{extra}' is removed: strip that prefix from the source's names (e.g. a DataParallel or wrapper checkpoint).";
        if (BestPrefix(Missing, Unexpected) is var (lacking, m) && m > 0)
            return $"{m} of the {Missing.Count} missing keys match an unexpected key once the model's leading '{lacking}' is removed: load into that submodule, or add the prefix to the source's names.";
        return null;
    }

    // The first dotted segment shared by the most `from` names whose remainder is in `to`; counts only when it
    // explains at least half of `from`, so a couple of coincidences do not produce a misleading hint.
    private static (string Prefix, int Count)? BestPrefix(IReadOnlyList<string> from, IReadOnlyList<string> to)
    {
        if (from.Count == 0 || to.Count == 0) return null;
        var targets = to.ToHashSet(StringComparer.Ordinal);
        var best = from
            .Select(k => (Key: k, Dot: k.IndexOf('.', StringComparison.Ordinal)))
            .Where(x => x.Dot > 0 && targets.Contains(x.Key[(x.Dot + 1)..]))
            .GroupBy(x => x.Key[..(x.Dot + 1)], StringComparer.Ordinal)
            .Select(g => (Prefix: g.Key, Count: g.Count()))
            .OrderByDescending(g => g.Count)
            .FirstOrDefault();
        return best.Prefix is not null && best.Count * 2 >= from.Count ? best : null;
    }
}

/// <summary>Thrown by a strict load when names or shapes differ: the message groups the problems (see
/// <see cref="StateDictReport.ToString"/>), <see cref="Report"/> lists every one.</summary>
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
    /// <param name="module">The model.</param>
    /// <param name="source">Named tensors to compare with it.</param>
    /// <param name="excludePrefixes">Keys (of either side) starting with one of these are left out of the comparison
    /// and listed in <see cref="StateDictReport.Skipped"/> (e.g. <c>head.</c> when fine-tuning on other classes).</param>
    public static StateDictReport Compare(nn.Module module, IReadOnlyDictionary<string, Tensor> source,
        IReadOnlyCollection<string>? excludePrefixes = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(source);
        var target = module.state_dict();
        bool Excluded(string key) => excludePrefixes is not null && excludePrefixes.Any(p => key.StartsWith(p, StringComparison.Ordinal));
        var missing = target.Keys.Where(k => !Excluded(k) && !source.ContainsKey(k)).ToList();
        var unexpected = source.Keys.Where(k => !Excluded(k) && !target.ContainsKey(k)).ToList();
        var mismatched = target
            .Where(kv => !Excluded(kv.Key) && source.TryGetValue(kv.Key, out var s) && !s.shape.SequenceEqual(kv.Value.shape))
            .Select(kv => (kv.Key, kv.Value.shape, source[kv.Key].shape))
            .ToList();
        var skipped = source.Keys.Concat(target.Keys).Where(Excluded).Distinct(StringComparer.Ordinal).ToList();
        return new StateDictReport(missing, unexpected, mismatched) { Skipped = skipped };
    }

    /// <summary>
    /// Copies <paramref name="source"/> into the module's parameters and persistent buffers (converting dtype and
    /// device to the module's). Strict: throws <see cref="StateDictMismatchException"/> listing every missing,
    /// unexpected and mis-shaped key, and copies nothing. Non-strict: copies the keys present in both with equal
    /// shapes and returns what differed. Keys starting with one of <paramref name="excludePrefixes"/> are never
    /// copied nor checked (the model keeps its own values) and are listed in <see cref="StateDictReport.Skipped"/>.
    /// </summary>
    public static StateDictReport Load(nn.Module module, IReadOnlyDictionary<string, Tensor> source, bool strict = true,
        string? sourceName = null, IReadOnlyCollection<string>? excludePrefixes = null)
    {
        var report = Compare(module, source, excludePrefixes);
        if (strict && !report.IsExact) throw new StateDictMismatchException(report, sourceName);
        var mismatchedKeys = report.Mismatched.Select(m => m.Key).Concat(report.Skipped).ToHashSet();
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
