using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

// Field names (qkvo, lepe, proj) are the official PolaFormer++ attribute names: they become the state-dict keys.
#pragma warning disable IDE1006

/// <summary>
/// Softmax attention with rotary position encoding, a 5×5 depthwise convolution of v and an output gate: the
/// softmax ('v') blocks of PolaFormer++ (official <c>models.pola.VanillaSelfAttention</c>).
/// </summary>
/// <remarks>
/// One projection <c>qkvo</c> gives q, k, v and the gate o; q and k are rotated with
/// <c>RotaryEmbedding.Tables</c>(dim, heads) before softmax(q·kᵀ/√d)·v; the depthwise convolution of v
/// (lepe) is added and the sum, times the gate, goes through <c>proj</c>. The head width must be a multiple of 4.
/// </remarks>
public sealed class VanillaSelfAttention : TokenAttention, IRotaryAttention
{
    private readonly Linear qkvo;
    private readonly Conv2d lepe;
    private readonly Linear proj;
    private readonly double _scale;

    /// <summary>Creates the layer.</summary>
    /// <param name="dim">Channels C.</param>
    /// <param name="numHeads">Heads; dim/numHeads must be a multiple of 4 (the rotary tables' width).</param>
    /// <param name="device">Device of the parameters (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    public VanillaSelfAttention(long dim, long numHeads, Device? device = null, ScalarType? dtype = null)
        : base(nameof(VanillaSelfAttention), dim, numHeads)
    {
        long headDim = Check.HeadDim(dim, numHeads);
        if (headDim % 4 != 0)
            throw new ArgumentException(
                $"dim / numHeads = {dim} / {numHeads} = {headDim} channels per head; the rotary encoding needs a multiple of 4.", nameof(numHeads));
        _scale = 1.0 / Math.Sqrt(headDim);
        qkvo = nn.Linear(dim, 4 * dim, device: device, dtype: dtype);
        lepe = nn.Conv2d(dim, dim, kernel_size: 5, padding: 2, groups: dim, device: device, dtype: dtype);
        proj = nn.Linear(dim, dim, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>'V', the letter of softmax-with-RoPE stages in <see cref="Models.PolaPlusPlusOptions.AttentionTypes"/>. Not a kind of
    /// <see cref="AttentionRegistry"/>: the layer takes its rotary tables from its stage and has none of the
    /// AttentionSpec's options (bias switch, α, kernel size, spatial reduction, prefix tokens, windows), so the
    /// PolaFormer++ blocks build it directly.</summary>
    public override char Letter => 'V';

    /// <summary>The rotary tables this layer needs on a height × width grid: <c>RotaryEmbedding.Tables</c>(dim, heads).</summary>
    public (Tensor Sin, Tensor Cos) RotaryTables(long height, long width, ScalarType? dtype = null, Device? device = null) =>
        RotaryEmbedding.Tables(Dim, NumHeads, height, width, dtype, device);

    /// <inheritdoc />
    /// <remarks>Builds the rotary tables from the grid. Neither mask is supported (the layer attends over the
    /// whole map); both must be null.</remarks>
    public override Tensor forward(Tensor x, long height, long width, Tensor? mask = null, Tensor? paddingMask = null)
    {
        Check.TokenGrid(x, Dim, height, width);
        if (mask is not null)
            throw new ArgumentException("mask is not supported by PolaFormer++ softmax attention (it attends over the whole map, never over shifted windows); pass null.", nameof(mask));
        if (paddingMask is not null)
            throw new ArgumentException("paddingMask is not supported by PolaFormer++ softmax attention; pass null.", nameof(paddingMask));
        var (sin, cos) = RotaryTables(height, width, x.dtype, x.device);
        using (sin)
        using (cos)
            return ForwardWithTables(x, height, width, sin, cos);
    }

    /// <summary>Attention over tokens on a grid with the caller's rotary tables.</summary>
    /// <param name="x">(B, N, C) tokens, N = height · width, row-major.</param>
    /// <param name="height">Rows of the token grid.</param>
    /// <param name="width">Columns of the token grid.</param>
    /// <param name="sin">(N, C/heads) sin table (<see cref="RotaryTables"/>).</param>
    /// <param name="cos">(N, C/heads) cos table.</param>
    /// <returns>(B, N, C).</returns>
    public Tensor ForwardWithTables(Tensor x, long height, long width, Tensor sin, Tensor cos)
    {
        Check.TokenGrid(x, Dim, height, width);
        RotaryChecks.Tables(sin, cos, height * width, HeadDim, "dim/numHeads");

        using var scope = NewDisposeScope();
        long batch = x.shape[0], tokens = x.shape[1], channels = Dim, heads = NumHeads;
        var parts = qkvo.call(x).reshape(batch, tokens, 4, channels).unbind(2);
        var (q, k, v, o) = (parts[0], parts[1], parts[2], parts[3]);
        var local = lepe.call(v.reshape(batch, height, width, channels).permute(0, 3, 1, 2))
            .flatten(2).transpose(1, 2);

        q = RotaryEmbedding.ThetaShift(SplitHeads(q, batch, tokens, heads), sin, cos);
        k = RotaryEmbedding.ThetaShift(SplitHeads(k, batch, tokens, heads), sin, cos);
        v = SplitHeads(v, batch, tokens, heads);
        var weights = softmax(q.Times(_scale).matmul(k.transpose(-1, -2)), -1);
        var attended = weights.matmul(v).transpose(1, 2).reshape(batch, tokens, channels).Plus(local);
        return proj.call(attended * o).MoveToOuterDisposeScope();
    }
}
