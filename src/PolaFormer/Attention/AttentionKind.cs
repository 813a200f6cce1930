namespace PolaFormer.Attention;

/// <summary>Which attention a block uses. The official configurations write one letter per stage, e.g. "LLSS".</summary>
public enum AttentionKind
{
    /// <summary>'L': polarity-aware linear attention.</summary>
    Polarity,

    /// <summary>'S': softmax attention (the baseline the paper replaces).</summary>
    Softmax,
}

/// <summary>Parses the official per-stage attention strings ("LLSS", "LLLL", ...).</summary>
public static class AttentionKinds
{
    /// <summary>The letter the official configurations use for <paramref name="kind"/>.</summary>
    public static char ToLetter(this AttentionKind kind) => kind switch
    {
        AttentionKind.Polarity => 'L',
        AttentionKind.Softmax => 'S',
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Expected Polarity or Softmax."),
    };

    /// <summary>Parses one letter per stage ('L' polarity, 'S' softmax), e.g. "LLSS".</summary>
    /// <param name="stages">The string, one letter per stage.</param>
    /// <param name="stageCount">The number of stages the model has.</param>
    public static AttentionKind[] Parse(string stages, int stageCount)
    {
        ArgumentNullException.ThrowIfNull(stages);
        if (stages.Length != stageCount)
            throw new ArgumentException(
                $"attention types '{stages}' has {stages.Length} letters; expected one per stage ({stageCount}), e.g. '{new string('L', stageCount)}'.", nameof(stages));
        var kinds = new AttentionKind[stages.Length];
        for (int i = 0; i < stages.Length; i++)
        {
            kinds[i] = char.ToUpperInvariant(stages[i]) switch
            {
                'L' => AttentionKind.Polarity,
                'S' => AttentionKind.Softmax,
                _ => throw new ArgumentException(
                    $"attention types '{stages}' has '{stages[i]}' at position {i}; expected 'L' (polarity) or 'S' (softmax).", nameof(stages)),
            };
        }
        return kinds;
    }

    /// <summary>Formats per-stage kinds back into the official string, e.g. "LLSS".</summary>
    public static string Format(IEnumerable<AttentionKind> kinds) => new(kinds.Select(ToLetter).ToArray());
}
