using System.Collections.Concurrent;
using System.Globalization;

namespace PolaFormer.Attention;

/// <summary>An attention kind: the letter the stage strings use, a name, and how to build a layer from a spec.</summary>
/// <param name="Letter">Upper-case letter in stage strings such as "LLSS".</param>
/// <param name="Name">What the kind is, for messages ("polarity", "softmax").</param>
/// <param name="Create">Builds a layer for a block.</param>
public sealed record AttentionKindRegistration(char Letter, string Name, Func<AttentionSpec, TokenAttention> Create);

/// <summary>
/// The attention kinds, keyed by the letter the official configurations use: 'L' polarity and 'S' softmax are
/// built in; <see cref="Register"/> adds one (a class and one call, no edit to any model family). The one parser of
/// stage strings lives here too.
/// </summary>
/// <remarks>Like timm's model registry this is process-wide, so a kind registered once is available to every
/// family; it only grows, and reads are lock-free.</remarks>
public static class AttentionRegistry
{
    /// <summary>The stage letter that mixes kinds inside a stage: "LLM2" = the first 2 blocks of stage 3 polarity, the
    /// rest softmax (the official Pola-Swin ablations).</summary>
    public const char Mixed = 'M';

    private static readonly ConcurrentDictionary<char, AttentionKindRegistration> Kinds = new();

    static AttentionRegistry()
    {
        Register('L', "polarity", spec => spec.Windowed
            ? new PolaWindowAttention(spec.Dim, Square(spec), spec.NumHeads, qkvBias: spec.QkvBias, alpha: spec.Alpha,
                kernelSize: spec.KernelSize, projDrop: spec.ProjDrop, implementation: spec.Implementation, device: spec.Device, dtype: spec.Dtype)
            : new PolaLinearAttention(spec.Dim, spec.Grid, spec.NumHeads, qkvBias: spec.QkvBias, srRatio: spec.ReductionRatio,
                alpha: spec.Alpha, kernelSize: spec.KernelSize, projDrop: spec.ProjDrop, implementation: spec.Implementation,
                prefixTokens: spec.PrefixTokens, device: spec.Device, dtype: spec.Dtype));
        Register('S', "softmax", spec => spec.Windowed
            ? new WindowAttention(spec.Dim, Square(spec), spec.NumHeads, qkvBias: spec.QkvBias, qkScale: spec.QkScale,
                attnDrop: spec.AttnDrop, projDrop: spec.ProjDrop, device: spec.Device, dtype: spec.Dtype)
            : new SpatialReductionAttention(spec.Dim, spec.NumHeads, qkvBias: spec.QkvBias, qkScale: spec.QkScale,
                srRatio: spec.ReductionRatio, attnDrop: spec.AttnDrop, projDrop: spec.ProjDrop, prefixTokens: spec.PrefixTokens,
                device: spec.Device, dtype: spec.Dtype));
    }

    /// <summary>The registered kinds, by letter.</summary>
    public static IReadOnlyCollection<AttentionKindRegistration> Registered => Kinds.Values.OrderBy(k => k.Letter).ToArray();

    /// <summary>Adds an attention kind under <paramref name="letter"/>.</summary>
    /// <exception cref="ArgumentException">The letter is not A–Z, is <see cref="Mixed"/>, or is taken by another
    /// registration (registering the same name and factory again is a no-op).</exception>
    public static void Register(char letter, string name, Func<AttentionSpec, TokenAttention> create)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(create);
        letter = char.ToUpperInvariant(letter);
        if (letter is < 'A' or > 'Z' || letter == Mixed)
            throw new ArgumentException($"letter is '{letter}'; expected one of A–Z other than '{Mixed}' (which mixes kinds in a stage).", nameof(letter));
        var registration = new AttentionKindRegistration(letter, name, create);
        var existing = Kinds.GetOrAdd(letter, registration);
        if (existing != registration && (existing.Name != name || existing.Create != create))
            throw new ArgumentException($"letter '{letter}' is already registered for {existing.Name} attention.", nameof(letter));
    }

    /// <summary>Builds a layer of the kind <paramref name="letter"/> names.</summary>
    /// <exception cref="ArgumentException">No kind is registered under the letter.</exception>
    public static TokenAttention Create(char letter, AttentionSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return Find(letter, nameof(letter)).Create(spec);
    }

    /// <summary>Whether a kind is registered under <paramref name="letter"/>.</summary>
    public static bool IsRegistered(char letter) => Kinds.ContainsKey(char.ToUpperInvariant(letter));

    /// <summary>Parses one letter per stage, e.g. "LLSS", into upper-case letters of registered kinds.</summary>
    /// <param name="types">The string.</param>
    /// <param name="stageCount">The number of stages the model has.</param>
    /// <param name="name">The option's name, for messages.</param>
    public static char[] ParseStages(string? types, int stageCount, string name = "attentionTypes")
    {
        if (types is null || types.Length != stageCount)
            throw new ArgumentException(
                $"{name} is {(types is null ? "null" : $"'{types}'")} ({types?.Length ?? 0} letters); expected one letter per stage ({stageCount}), e.g. '{new string('L', stageCount)}' — {Known()}.", name);
        var letters = new char[stageCount];
        for (int i = 0; i < stageCount; i++)
        {
            char c = char.ToUpperInvariant(types[i]);
            if (!Kinds.ContainsKey(c))
                throw new ArgumentException($"{name} is '{types}': '{types[i]}' at position {i} is not a registered attention kind; expected {Known()}.", name);
            letters[i] = c;
        }
        return letters;
    }

    /// <summary>
    /// Parses a stage string into one letter per block: "LLSS" repeats each stage's letter over its depth; with an
    /// <see cref="Mixed"/> stage and a block count after the stage letters ("LLM2S"), that stage's first blocks are
    /// polarity and the rest softmax.
    /// </summary>
    public static char[][] ParseBlocks(string? types, IReadOnlyList<long> depths, string name = "attentionTypes")
    {
        ArgumentNullException.ThrowIfNull(depths);
        int stages = depths.Count;
        if (types is null || types.Length < stages || !types.Take(stages).Any(c => char.ToUpperInvariant(c) == Mixed))
            return ParseStages(types, stages, name).Select((letter, i) => Enumerable.Repeat(letter, checked((int)depths[i])).ToArray()).ToArray();

        string suffix = types[stages..];
        if (!int.TryParse(suffix, NumberStyles.None, CultureInfo.InvariantCulture, out int polarityBlocks))
            throw new ArgumentException(
                $"{name} is '{types}': it has an '{Mixed}' stage but '{suffix}' after the {stages} stage letters is not a block count; expected e.g. '{new string('L', stages - 1)}{Mixed}2' (the first 2 blocks of the '{Mixed}' stage polarity, the rest softmax).",
                name);
        var plain = ParseStages(new string(types.Take(stages).Select(c => char.ToUpperInvariant(c) == Mixed ? 'L' : c).ToArray()), stages, name);
        return plain.Select((letter, i) => char.ToUpperInvariant(types[i]) == Mixed
            ? Enumerable.Range(0, checked((int)depths[i])).Select(j => j < polarityBlocks ? 'L' : 'S').ToArray()
            : Enumerable.Repeat(letter, checked((int)depths[i])).ToArray()).ToArray();
    }

    private static AttentionKindRegistration Find(char letter, string name) =>
        Kinds.TryGetValue(char.ToUpperInvariant(letter), out var kind)
            ? kind
            : throw new ArgumentException($"'{letter}' is not a registered attention kind; expected {Known()}.", name);

    private static string Known() => string.Join(", ", Kinds.Values.OrderBy(k => k.Letter).Select(k => $"'{k.Letter}' ({k.Name})"));

    private static long Square(AttentionSpec spec) => spec.Grid.Height == spec.Grid.Width
        ? spec.Grid.Height
        : throw new ArgumentException($"spec.Grid is {spec.Grid.Height} × {spec.Grid.Width}; windowed attention needs square windows.", nameof(spec));
}
