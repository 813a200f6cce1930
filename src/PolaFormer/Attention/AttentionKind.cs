namespace PolaFormer.Attention;

/// <summary>The two built-in attention kinds (more can be added through <see cref="AttentionRegistry"/>). The official
/// configurations write one letter per stage, e.g. "LLSS".</summary>
public enum AttentionKind
{
    /// <summary>'L': polarity-aware linear attention.</summary>
    Polarity,

    /// <summary>'S': softmax attention (the baseline the paper replaces).</summary>
    Softmax,
}

/// <summary>The letters of the built-in kinds (stage strings are parsed by <see cref="AttentionRegistry"/>).</summary>
public static class AttentionKinds
{
    /// <summary>The letter the official configurations use for <paramref name="kind"/>.</summary>
    public static char ToLetter(this AttentionKind kind) => kind switch
    {
        AttentionKind.Polarity => 'L',
        AttentionKind.Softmax => 'S',
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Expected Polarity or Softmax."),
    };
}
