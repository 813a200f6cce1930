using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

// Field names (qkvg, lepe, proj, s1, s2) are the official PolaFormer++ attribute names: they become the state-dict
// keys, so the authors' checkpoints load unchanged.
#pragma warning disable IDE1006

/// <summary>
/// Polarity-aware linear attention with channel-wise spikiness (PaCS) of PolaFormer++ (official
/// <c>models.pola.PolaLinearAttention</c> of the PolaFormer++ classification code).
/// </summary>
/// <remarks>
/// <para>One projection <c>qkvg</c> gives q, k, v and the output gate g. q and k are split by sign into their
/// positive and negative parts; the key feature is <c>exp([k⁺, k⁻]) − 1</c>, the same-signed query feature
/// <c>exp([q⁺, q⁻]·σ(s1)) − 1</c> and the opposite-signed one <c>exp([q⁻, q⁺]·σ(s2)) − 1</c>, with s1 and s2
/// learnable temperatures per head and channel. Each query stream is normalised by its product with the mean key
/// (taken before the rotary encoding), then rotated, and reads one half of v. The two results, side by side, plus
/// a 5×5 depthwise convolution of v (lepe), times the gate, go through <c>proj</c>.</para>
/// <para>Keys and queries are 2·head_dim wide, so the rotary tables are those of
/// <c>RotaryEmbedding.Tables</c>(2·dim, heads); <see cref="forward(Tensor, long, long, Tensor?, Tensor?)"/>
/// builds them from the grid, and <see cref="ForwardWithTables"/> takes them from the
/// caller (a stage builds them once for all its blocks, as the official code does).</para>
/// </remarks>
public sealed class PaCSAttention : TokenAttention, IRotaryAttention
{
    /// <summary>Added to the normaliser before dividing (the official 1e-6).</summary>
    public const double Epsilon = 1e-6;

    private readonly Linear qkvg;
    private readonly Conv2d lepe;
    private readonly Linear proj;
    private readonly Parameter s1;
    private readonly Parameter s2;

    /// <summary>Creates the layer.</summary>
    /// <param name="dim">Channels C.</param>
    /// <param name="numHeads">Heads; dim/numHeads must be even (v is split in two halves per head).</param>
    /// <param name="implementation">Which formulation of the maths runs.</param>
    /// <param name="device">Device of the parameters (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    public PaCSAttention(long dim, long numHeads, PolarityImplementation implementation = PolarityImplementation.Fast,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(PaCSAttention), dim, numHeads)
    {
        long headDim = Check.HeadDim(dim, numHeads);
        Check.EvenHeadDim(headDim, dim, numHeads);
        Implementation = implementation;
        qkvg = nn.Linear(dim, 4 * dim, device: device, dtype: dtype);
        lepe = nn.Conv2d(dim, dim, kernel_size: 5, padding: 2, groups: dim, device: device, dtype: dtype);
        proj = nn.Linear(dim, dim, device: device, dtype: dtype);
        // Zero temperatures give σ = ½ on both streams at the start, as in the official constructor.
        s1 = new Parameter(zeros(1, numHeads, 1, 2 * headDim, dtype: dtype, device: device));
        s2 = new Parameter(zeros(1, numHeads, 1, 2 * headDim, dtype: dtype, device: device));
        RegisterComponents();
    }

    /// <summary>'P', the letter of PaCS stages in <see cref="Models.PolaPlusPlusOptions.AttentionTypes"/>. Not a kind of
    /// <see cref="AttentionRegistry"/>: the layer takes its rotary tables from its stage and has none of the
    /// AttentionSpec's options (bias switch, α, kernel size, spatial reduction, prefix tokens, windows), so the
    /// PolaFormer++ blocks build it directly.</summary>
    public override char Letter => 'P';

    /// <summary>Which formulation of the maths runs.</summary>
    public PolarityImplementation Implementation { get; set; }

    /// <summary>The rotary tables this layer needs on a height × width grid: <c>RotaryEmbedding.Tables</c>(2·dim, heads).</summary>
    public (Tensor Sin, Tensor Cos) RotaryTables(long height, long width, ScalarType? dtype = null, Device? device = null) =>
        RotaryEmbedding.Tables(2 * Dim, NumHeads, height, width, dtype, device);

    /// <inheritdoc />
    /// <remarks>Builds the rotary tables from the grid. The shift <paramref name="mask"/> is ignored (this layer
    /// attends over the whole map); a <paramref name="paddingMask"/> is not supported.</remarks>
    public override Tensor forward(Tensor x, long height, long width, Tensor? mask = null, Tensor? paddingMask = null)
    {
        Check.TokenGrid(x, Dim, height, width);
        RejectPaddingMask(paddingMask);
        var (sin, cos) = RotaryTables(height, width, x.dtype, x.device);
        using (sin)
        using (cos)
            return ForwardWithTables(x, height, width, sin, cos);
    }

    /// <summary>Attention over tokens on a grid with the caller's rotary tables.</summary>
    /// <param name="x">(B, N, C) tokens, N = height · width, row-major.</param>
    /// <param name="height">Rows of the token grid.</param>
    /// <param name="width">Columns of the token grid.</param>
    /// <param name="sin">(N, 2·C/heads) sin table (<see cref="RotaryTables"/>).</param>
    /// <param name="cos">(N, 2·C/heads) cos table.</param>
    /// <returns>(B, N, C).</returns>
    public Tensor ForwardWithTables(Tensor x, long height, long width, Tensor sin, Tensor cos)
    {
        Check.TokenGrid(x, Dim, height, width);
        RotaryChecks.Tables(sin, cos, height * width, 2 * HeadDim, "2·dim/numHeads");

        using var scope = NewDisposeScope();
        long batch = x.shape[0], tokens = x.shape[1], channels = Dim, heads = NumHeads;
        var parts = qkvg.call(x).reshape(batch, tokens, 4, channels).unbind(2);
        var (q, k, v, g) = (parts[0], parts[1], parts[2], parts[3]);
        var local = lepe.call(v.reshape(batch, height, width, channels).permute(0, 3, 1, 2))
            .flatten(2).transpose(1, 2);                                                   // (B, N, C)

        q = SplitHeads(q, batch, tokens, heads);
        k = SplitHeads(k, batch, tokens, heads);
        v = SplitHeads(v, batch, tokens, heads);
        var same = sigmoid(s1);
        var opposite = sigmoid(s2);

        var attended = Implementation == PolarityImplementation.Reference
            ? ReferenceCore(q, k, v, same, opposite, sin, cos, tokens)
            : FastCore(q, k, v, same, opposite, sin, cos, tokens);
        var merged = attended.transpose(1, 2).reshape(batch, tokens, channels).Plus(local);
        return proj.call(merged * g).MoveToOuterDisposeScope();
    }

    /// <summary>The official op sequence, stream by stream.</summary>
    private static Tensor ReferenceCore(Tensor q, Tensor k, Tensor v, Tensor same, Tensor opposite, Tensor sin, Tensor cos, long tokens)
    {
        var qPositive = nn.functional.relu(q);
        var qNegative = nn.functional.relu(-q);
        var kPositive = nn.functional.relu(k);
        var kNegative = nn.functional.relu(-k);

        var qSame = exp(cat([qPositive, qNegative], -1) * same).Minus(1.0);
        var qOpposite = exp(cat([qNegative, qPositive], -1) * opposite).Minus(1.0);
        var keys = exp(cat([kPositive, kNegative], -1)).Minus(1.0);
        var rotatedKeys = RotaryEmbedding.ThetaShift(keys, sin, cos);
        var meanKey = keys.mean([-2], keepdim: true).transpose(-2, -1);
        var halves = v.chunk(2, -1);
        double rootScale = Math.Sqrt(1.0 / tokens);

        Tensor Stream(Tensor query, Tensor values)
        {
            var normaliser = query.matmul(meanKey);
            var rotated = RotaryEmbedding.ThetaShift(query, sin, cos);
            var keyValue = rotatedKeys.transpose(-2, -1).Times(rootScale).matmul(values.Times(rootScale));
            return rotated.matmul(keyValue) * normaliser.Plus(Epsilon).reciprocal();
        }

        return cat([Stream(qSame, halves[0]), Stream(qOpposite, halves[1])], -1);
    }

    /// <summary>
    /// The same maths with both streams batched: one exponential for both query features, one key–value product
    /// for both halves of v, one normaliser product and one rotation of both queries.
    /// </summary>
    private static Tensor FastCore(Tensor q, Tensor k, Tensor v, Tensor same, Tensor opposite, Tensor sin, Tensor cos, long tokens)
    {
        var qPositive = nn.functional.relu(q);
        var qNegative = nn.functional.relu(-q);
        var kSplit = cat([nn.functional.relu(k), nn.functional.relu(-k)], -1);
        // (B, h, 2, N, 2d): the same-signed and opposite-signed query features stacked on a stream axis.
        var queries = stack([cat([qPositive, qNegative], -1) * same, cat([qNegative, qPositive], -1) * opposite], 2).exp().Minus(1.0);
        var keys = kSplit.exp().Minus(1.0);
        var meanKey = keys.mean([-2], keepdim: true).transpose(-2, -1).unsqueeze(2);                 // (B, h, 1, 2d, 1)
        var rotatedKeys = RotaryEmbedding.ThetaShift(keys, sin, cos).unsqueeze(2);                    // (B, h, 1, N, 2d)
        long half = v.shape[^1] / 2;
        var values = v.unflatten(v.dim() - 1, [2, half]).permute(0, 1, 3, 2, 4);                               // (B, h, 2, N, d/2)
        var keyValue = rotatedKeys.transpose(-2, -1).matmul(values).Times(1.0 / tokens);              // (B, h, 2, 2d, d/2)
        var normaliser = queries.matmul(meanKey).Plus(Epsilon);                                        // (B, h, 2, N, 1)
        var output = RotaryEmbedding.ThetaShift(queries, sin, cos).matmul(keyValue) / normaliser;     // (B, h, 2, N, d/2)
        return output.permute(0, 1, 3, 2, 4).flatten(-2);                                             // (B, h, N, d)
    }

    private static void RejectPaddingMask(Tensor? paddingMask)
    {
        if (paddingMask is not null)
            throw new ArgumentException("paddingMask is not supported by PolaFormer++ attention (it attends over the whole map, never over padded windows); pass null.", nameof(paddingMask));
    }
}

/// <summary>Argument checks shared by the rotary attention layers.</summary>
internal static class RotaryChecks
{
    public static void Tables(Tensor sin, Tensor cos, long tokens, long width, string widthText)
    {
        ArgumentNullException.ThrowIfNull(sin);
        ArgumentNullException.ThrowIfNull(cos);
        if (sin.dim() != 2 || sin.shape[0] != tokens || sin.shape[1] != width)
            throw new ArgumentException(
                $"sin has shape {Check.Format(sin.shape)}; expected (N={tokens}, {widthText}={width}).", nameof(sin));
        if (!cos.shape.SequenceEqual(sin.shape))
            throw new ArgumentException(
                $"cos has shape {Check.Format(cos.shape)}; expected (N={tokens}, {widthText}={width}) like sin.", nameof(cos));
    }
}
