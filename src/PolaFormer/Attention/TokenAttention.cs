using static TorchSharp.torch;

namespace PolaFormer.Attention;

/// <summary>
/// The contract every attention layer in this library shares, so a block can take either kind and users can swap
/// softmax attention for polarity attention without touching the rest of their model.
/// </summary>
/// <remarks>
/// Input and output are tokens (B, N, C) laid out row-major on a <c>height × width</c> grid (N = height·width).
/// Polarity attention needs the grid for its depthwise convolution over v; softmax attention ignores it except for
/// spatial reduction. The single-argument <see cref="forward(Tensor)"/> assumes a square grid.
/// </remarks>
public abstract class TokenAttention : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the layer.</summary>
    protected TokenAttention(string name, long dim, long numHeads) : base(name)
    {
        Dim = dim;
        NumHeads = numHeads;
    }

    /// <summary>The additive score bias that masks a key out, as the official Swin code writes it (−100, not −∞, so a
    /// fully masked row stays finite): shifted-window masks and padding masks use it alike.</summary>
    public const double MaskedScoreBias = -100.0;

    /// <summary>Channels in and out (C).</summary>
    public long Dim { get; }

    /// <summary>Number of heads.</summary>
    public long NumHeads { get; }

    /// <summary>Channels per head.</summary>
    public long HeadDim => Dim / NumHeads;

    /// <summary>The letter of this layer's kind in <see cref="AttentionRegistry"/> ('L' polarity, 'S' softmax).</summary>
    public abstract char Letter { get; }

    /// <summary>The built-in kind this layer is, or null for a kind registered from outside the library.</summary>
    public AttentionKind? Kind => Letter switch { 'L' => AttentionKind.Polarity, 'S' => AttentionKind.Softmax, _ => null };

    /// <summary>Whether shifted-window blocks should pass their −100 cross-window mask (softmax window attention
    /// does; polarity attention ignores it, as the official code does).</summary>
    public virtual bool UsesShiftMask => false;

    /// <summary>Tokens before the grid (e.g. a class token) that <see cref="forward(Tensor)"/> must skip when it
    /// infers the square grid.</summary>
    protected virtual long GridPrefix => 0;

    /// <summary>Describes the token grid the layer was built for, for error messages.</summary>
    protected virtual string BuiltFor => "any square grid";

    /// <summary>Attention over tokens on a grid.</summary>
    /// <param name="x">(B, N, C) tokens, N = <paramref name="height"/> · <paramref name="width"/>.</param>
    /// <param name="height">Rows of the token grid.</param>
    /// <param name="width">Columns of the token grid.</param>
    /// <param name="mask">Optional additive mask (nW, N, N) for shifted windows (0 keeps, −100 masks); window
    /// rows of the batch are ordered batch-major, window w of image b at row b·nW + w. Softmax attention applies it;
    /// polarity attention ignores it, as the official code does.</param>
    /// <param name="paddingMask">Optional (B, N) mask: 1 for a real token, 0 for padding added to fill a window.
    /// Padding tokens are never attended to (their outputs are computed and should be discarded).</param>
    /// <returns>(B, N, C).</returns>
    public abstract Tensor forward(Tensor x, long height, long width, Tensor? mask = null, Tensor? paddingMask = null);

    /// <summary>Attention over a square grid of tokens (B, N, C), N a square number.</summary>
    public override Tensor forward(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        Check.Tokens(x, Dim);
        long side = Check.SquareSide(x.shape[1] - GridPrefix, nameof(x),
            $"this layer was built for {BuiltFor}; call forward(x, height, width) to give the grid of a non-square token layout.");
        return forward(x, side, side);
    }

    /// <summary>(B, N, C) → (B, heads, N, C/heads).</summary>
    protected static Tensor SplitHeads(Tensor t, long batch, long tokens, long heads) =>
        t.reshape(batch, tokens, heads, -1).permute(0, 2, 1, 3);

    /// <summary>Softmax scores (B, heads, N, n) with the padded keys masked out: <see cref="MaskedScoreBias"/> added
    /// where the (B, n) <paramref name="paddingMask"/> is 0.</summary>
    protected static Tensor MaskPaddedKeys(Tensor scores, Tensor paddingMask) =>
        scores.Plus(paddingMask.to_type(scores.dtype).OneMinus().Times(MaskedScoreBias).unsqueeze(1).unsqueeze(1));

    /// <summary>Checks a padding mask is (B, N) for tokens x (B, N, C).</summary>
    protected static void CheckPaddingMask(Tensor? paddingMask, Tensor x)
    {
        if (paddingMask is null) return;
        if (paddingMask.dim() != 2 || paddingMask.shape[0] != x.shape[0] || paddingMask.shape[1] != x.shape[1])
            throw new ArgumentException(
                $"paddingMask has shape {Check.Format(paddingMask.shape)}; expected (B={x.shape[0]}, N={x.shape[1]}) to match x.", nameof(paddingMask));
    }
}
