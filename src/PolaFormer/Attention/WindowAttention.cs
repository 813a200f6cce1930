using PolaFormer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

// Field names (qkv, proj, relative_position_bias_table, relative_position_index) are the official PyTorch attribute
// names: they become the state-dict keys, so the authors' checkpoints load unchanged.
#pragma warning disable IDE1006

/// <summary>
/// Softmax self-attention inside square windows with a learnt relative position bias (Swin v1; official
/// <c>models.pola_swin.WindowAttention</c>), the 'S' counterpart of <see cref="PolaWindowAttention"/>.
/// </summary>
/// <remarks>
/// Windows of another side than the one the layer was built for are served by resizing the relative position
/// table bicubically from (2w−1)² to (2w′−1)² entries (as timm does when it loads Swin weights at another window)
/// and indexing it with the index of the new window; at the built side the table is used as is.
/// </remarks>
public sealed class WindowAttention : TokenAttention, Checkpoints.IDerivedStateCache
{
    private readonly Linear qkv;
    private readonly Dropout attn_drop;
    private readonly Linear proj;
    private readonly Dropout proj_drop;
    private readonly Parameter relative_position_bias_table;
    private readonly Tensor relative_position_index;
    private readonly double _scale;
    private readonly PositionalEncodingResizer _tableResizer;
    private readonly Dictionary<(long Window, DeviceType Type, int Index), Tensor> _indexCache = new();

    /// <summary>Creates the layer.</summary>
    /// <param name="dim">Channels C.</param>
    /// <param name="windowSize">Side w of the square window.</param>
    /// <param name="numHeads">Heads; must divide dim.</param>
    /// <param name="qkvBias">Bias in the qkv projection.</param>
    /// <param name="qkScale">Scale of q·k; default head_dim^-0.5.</param>
    /// <param name="attnDrop">Dropout on the attention weights.</param>
    /// <param name="projDrop">Dropout after the output projection.</param>
    /// <param name="device">Device of the parameters (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    public WindowAttention(long dim, long windowSize, long numHeads, bool qkvBias = true, double? qkScale = null,
        double attnDrop = 0, double projDrop = 0, Device? device = null, ScalarType? dtype = null)
        : base(nameof(WindowAttention), dim, numHeads)
    {
        long headDim = Check.HeadDim(dim, numHeads);
        Check.Positive(windowSize, nameof(windowSize));
        Check.Probability(attnDrop, nameof(attnDrop));
        Check.Probability(projDrop, nameof(projDrop));
        if (qkScale is { } s) Check.Positive(s, nameof(qkScale));

        WindowSize = windowSize;
        _scale = qkScale ?? Math.Pow(headDim, -0.5);
        long tableSide = 2 * windowSize - 1;
        relative_position_bias_table = new Parameter(zeros(tableSide * tableSide, numHeads, dtype: dtype, device: device));
        relative_position_index = RelativePositionIndex(windowSize).to(device ?? get_default_device());
        _tableResizer = new PositionalEncodingResizer(tableSide, tableSide);
        qkv = nn.Linear(dim, 3 * dim, hasBias: qkvBias, device: device, dtype: dtype);
        attn_drop = nn.Dropout(attnDrop);
        proj = nn.Linear(dim, dim, device: device, dtype: dtype);
        proj_drop = nn.Dropout(projDrop);

        Initialization.TruncatedNormal_(relative_position_bias_table, std: 0.02);
        RegisterComponents();
        Initialization.TruncatedNormalLinears(this);
    }

    /// <inheritdoc />
    public override char Letter => 'S';

    /// <inheritdoc />
    public override bool UsesShiftMask => true;

    /// <inheritdoc />
    protected override string BuiltFor => $"{WindowSize} × {WindowSize} windows ({WindowSize * WindowSize} tokens)";

    /// <summary>Side of the window the relative position table was built for.</summary>
    public long WindowSize { get; }

    /// <summary>Attention inside windows.</summary>
    /// <param name="x">(B·nW, w·w, C) windows.</param>
    /// <param name="height">Window side w′ (windows are square). When it differs from <see cref="WindowSize"/> the
    /// relative position table is resized bicubically to the new window.</param>
    /// <param name="width">Window side; must equal <paramref name="height"/>.</param>
    /// <param name="mask">Optional additive shift mask (nW, w·w, w·w): window w of image b is row b·nW + w.</param>
    /// <param name="paddingMask">Optional (B·nW, w·w): 0 marks padding tokens, which are masked out as keys.</param>
    /// <returns>(B·nW, w·w, C).</returns>
    public override Tensor forward(Tensor x, long height, long width, Tensor? mask = null, Tensor? paddingMask = null)
    {
        if (height != width)
            throw new ArgumentException($"The window is {height} × {width}; window attention needs square windows.", nameof(width));
        Check.TokenGrid(x, Dim, height, width);
        CheckPaddingMask(paddingMask, x);
        long batch = x.shape[0], tokens = x.shape[1], channels = Dim, heads = NumHeads;
        if (mask is not null)
        {
            if (mask.dim() != 3 || mask.shape[1] != tokens || mask.shape[2] != tokens)
                throw new ArgumentException($"mask has shape {Check.Format(mask.shape)}; expected (nW, {tokens}, {tokens}).", nameof(mask));
            if (batch % mask.shape[0] != 0)
                throw new ArgumentException(
                    $"mask has nW = {mask.shape[0]} windows per image but x holds {batch} windows, not a multiple of nW.", nameof(mask));
        }

        using var scope = NewDisposeScope();
        var parts = qkv.call(x).reshape(batch, tokens, 3, heads, channels / heads).permute(2, 0, 3, 1, 4).unbind(0);
        var (q, k, v) = (parts[0], parts[1], parts[2]);
        var attn = q.Times(_scale).matmul(k.transpose(-2, -1));

        var (table, index) = height == WindowSize
            ? (relative_position_bias_table, relative_position_index)
            : ResizedTable(height, x.device);
        var bias = table.index_select(0, index.view(-1)).view(tokens, tokens, -1).permute(2, 0, 1);
        attn = attn.Plus(bias.unsqueeze(0));
        if (mask is not null)
        {
            long windows = mask.shape[0];
            attn = attn.view(batch / windows, windows, heads, tokens, tokens).Plus(mask.unsqueeze(1).unsqueeze(0))
                .view(-1, heads, tokens, tokens);
        }
        if (paddingMask is not null)
            attn = MaskPaddedKeys(attn, paddingMask);
        attn = attn_drop.call(attn.softmax(-1));
        var output = attn.matmul(v).transpose(1, 2).reshape(batch, tokens, channels);
        return proj_drop.call(proj.call(output)).MoveToOuterDisposeScope();
    }

    // The table for a window of side `window`, and the index into it (cached per window and device).
    private (Tensor Table, Tensor Index) ResizedTable(long window, Device device)
    {
        long side = 2 * window - 1;
        var table = _tableResizer.Resize(relative_position_bias_table.unsqueeze(0), side, side).squeeze(0);
        var key = (window, device.type, device.index);
        if (!_indexCache.TryGetValue(key, out var index))
        {
            using (var scope = NewDisposeScope())
                index = RelativePositionIndex(window).to(device).MoveToOuterDisposeScope();
            index = index.DetachFromDisposeScope();
            _indexCache[key] = index;
        }
        return (table, index);
    }

    void Checkpoints.IDerivedStateCache.InvalidateDerivedState() => _tableResizer.Invalidate();

    /// <inheritdoc />
    public override void train(bool train = true)
    {
        _tableResizer.Invalidate();
        base.train(train);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _tableResizer.Dispose();
            foreach (var index in _indexCache.Values) index.Dispose();
            _indexCache.Clear();
        }
        base.Dispose(disposing);
    }

    /// <summary>Swin's pair-wise relative position index for a w × w window, (w², w²) int64.</summary>
    internal static Tensor RelativePositionIndex(long windowSize)
    {
        using var scope = NewDisposeScope();
        var axis = ScalarArithmetic.Arange(windowSize);
        var coords = stack(meshgrid([axis, axis], indexing: "ij")).flatten(1);                                 // (2, w²)
        var relative = (coords.unsqueeze(2) - coords.unsqueeze(1)).permute(1, 2, 0).Plus(windowSize - 1);     // (w², w², 2)
        var index = relative.select(-1, 0).Times(2 * windowSize - 1).Plus(relative.select(-1, 1));
        return index.to(int64).contiguous().MoveToOuterDisposeScope();
    }
}
