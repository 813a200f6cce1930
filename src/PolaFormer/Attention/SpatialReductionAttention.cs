using PolaFormer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

// Field names (q, kv, sr, norm, proj) are the official PyTorch attribute names: they become the state-dict keys,
// so the authors' checkpoints load unchanged.
#pragma warning disable IDE1006

/// <summary>
/// Softmax attention with spatially reduced keys and values (PVT v1; official <c>models.pola_pvt.Attention</c>),
/// the 'S' counterpart of <see cref="PolaLinearAttention"/>.
/// </summary>
public sealed class SpatialReductionAttention : TokenAttention
{
    private readonly Linear q;
    private readonly Linear kv;
    private readonly Conv2d? sr;
    private readonly LayerNorm? norm;
    private readonly Dropout attn_drop;
    private readonly Linear proj;
    private readonly Dropout proj_drop;
    private readonly double _scale;

    /// <summary>Creates the layer.</summary>
    /// <param name="dim">Channels C.</param>
    /// <param name="numHeads">Heads; must divide dim.</param>
    /// <param name="qkvBias">Bias in the q and kv projections.</param>
    /// <param name="qkScale">Scale of q·k; default head_dim^-0.5.</param>
    /// <param name="srRatio">Spatial reduction of keys and values (1 = none).</param>
    /// <param name="attnDrop">Dropout on the attention weights.</param>
    /// <param name="projDrop">Dropout after the output projection.</param>
    /// <param name="prefixTokens">Tokens before the grid (a class token); needs srRatio = 1.</param>
    /// <param name="device">Device of the parameters (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    public SpatialReductionAttention(long dim, long numHeads = 8, bool qkvBias = false, double? qkScale = null,
        long srRatio = 1, double attnDrop = 0, double projDrop = 0, long prefixTokens = 0,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(SpatialReductionAttention), dim, numHeads)
    {
        long headDim = Check.HeadDim(dim, numHeads);
        Check.Positive(srRatio, nameof(srRatio));
        Check.Probability(attnDrop, nameof(attnDrop));
        Check.Probability(projDrop, nameof(projDrop));
        if (qkScale is { } s) Check.Positive(s, nameof(qkScale));

        if (prefixTokens < 0) throw new ArgumentOutOfRangeException(nameof(prefixTokens), prefixTokens, "prefixTokens must be 0 or more.");
        if (prefixTokens > 0 && srRatio > 1)
            throw new ArgumentException($"prefixTokens = {prefixTokens} needs srRatio = 1 (got {srRatio}): spatial reduction works on the grid only.", nameof(prefixTokens));
        PrefixTokens = prefixTokens;
        SrRatio = srRatio;
        _scale = qkScale ?? Math.Pow(headDim, -0.5);
        q = nn.Linear(dim, dim, hasBias: qkvBias, device: device, dtype: dtype);
        kv = nn.Linear(dim, 2 * dim, hasBias: qkvBias, device: device, dtype: dtype);
        attn_drop = nn.Dropout(attnDrop);
        proj = nn.Linear(dim, dim, device: device, dtype: dtype);
        proj_drop = nn.Dropout(projDrop);
        if (srRatio > 1)
        {
            sr = nn.Conv2d(dim, dim, kernel_size: srRatio, stride: srRatio, device: device, dtype: dtype);
            norm = nn.LayerNorm(dim, eps: 1e-5, device: device, dtype: dtype);
        }
        RegisterComponents();
        Initialization.TruncatedNormalLinears(this);
    }

    /// <inheritdoc />
    public override char Letter => 'S';

    /// <summary>Spatial reduction ratio of keys and values.</summary>
    public long SrRatio { get; }

    /// <summary>Tokens before the grid (e.g. a class token).</summary>
    public long PrefixTokens { get; }

    /// <inheritdoc />
    protected override long GridPrefix => PrefixTokens;

    /// <remarks>The shift <paramref name="mask"/> does not apply to whole-map attention and must be null; a
    /// <paramref name="paddingMask"/> is supported without spatial reduction only.</remarks>
    public override Tensor forward(Tensor x, long height, long width, Tensor? mask = null, Tensor? paddingMask = null)
    {
        Check.TokenGrid(x, Dim, height, width, PrefixTokens);
        CheckPaddingMask(paddingMask, x);
        if (mask is not null)
            throw new ArgumentException("Spatial-reduction attention attends over the whole map and takes no window shift mask; pass null.", nameof(mask));
        if (paddingMask is not null && SrRatio > 1)
            throw new ArgumentException($"paddingMask is not supported with spatial reduction (srRatio = {SrRatio}).", nameof(paddingMask));
        if (height < SrRatio || width < SrRatio)
            throw new ArgumentException($"The token grid {height} × {width} is smaller than srRatio = {SrRatio}.", nameof(height));

        using var scope = NewDisposeScope();
        long batch = x.shape[0], tokens = x.shape[1], channels = Dim, heads = NumHeads, headDim = channels / heads;
        var query = q.call(x).reshape(batch, tokens, heads, headDim).permute(0, 2, 1, 3);
        Tensor kvInput = x;
        if (sr is not null)
        {
            var reduced = sr.call(x.permute(0, 2, 1).reshape(batch, channels, height, width));
            kvInput = norm!.call(reduced.reshape(batch, channels, -1).permute(0, 2, 1));
        }
        var parts = kv.call(kvInput).reshape(batch, -1, 2, heads, headDim).permute(2, 0, 3, 1, 4).unbind(0);
        var (key, value) = (parts[0], parts[1]);

        var attn = query.matmul(key.transpose(-2, -1)).Times(_scale);
        if (paddingMask is not null)
            attn = MaskPaddedKeys(attn, paddingMask);
        attn = attn_drop.call(attn.softmax(-1));
        var output = attn.matmul(value).transpose(1, 2).reshape(batch, tokens, channels);
        return proj_drop.call(proj.call(output)).MoveToOuterDisposeScope();
    }
}
