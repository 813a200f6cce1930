using PolaFormer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

// Field names (qg, kv, sr, norm, dwc, power, scale, positional_encoding, proj) are the official PyTorch attribute
// names: they become the state-dict keys, so the authors' checkpoints load unchanged.
#pragma warning disable IDE1006

/// <summary>
/// Polarity-aware linear attention over a whole token map with optional spatial reduction of keys and values
/// (PVT style; official <c>models.pola_pvt.PolaLinearAttention</c>).
/// </summary>
/// <remarks>
/// q and the output gate g come from <c>qg</c>; k and v from <c>kv</c>, on the map reduced by a
/// <c>sr × sr</c> strided convolution and a LayerNorm when <c>srRatio &gt; 1</c>. With spatial reduction, v is
/// stretched back to N tokens by 1-D linear interpolation over the flattened token index (as the official code
/// does) before the depthwise convolution.
/// </remarks>
public sealed class PolaLinearAttention : PolarityTokenAttention
{
    private readonly Linear qg;
    private readonly Linear kv;
    private readonly Conv2d? sr;
    private readonly LayerNorm? norm;
    private readonly Conv2d dwc;
    private readonly Parameter power;
    private readonly Parameter scale;
    private readonly Parameter positional_encoding;
    private readonly Linear proj;
    private readonly Dropout proj_drop;
    private readonly PositionalEncodingResizer _positionResizer;

    /// <summary>Creates the layer.</summary>
    /// <param name="dim">Channels C.</param>
    /// <param name="inputResolution">Token grid (height, width) the layer is built for; sizes the positional
    /// encoding of the keys, (height/sr)·(width/sr) rows. Other grids are served by bicubic resizing.</param>
    /// <param name="numHeads">Heads; dim/numHeads must be even.</param>
    /// <param name="qkvBias">Bias in the q/g and k/v projections.</param>
    /// <param name="srRatio">Spatial reduction of keys and values (1 = none).</param>
    /// <param name="alpha">Scale of the learnable power, power = 1 + alpha·sigmoid(p); must be positive.</param>
    /// <param name="kernelSize">Kernel of the depthwise convolution on v; odd.</param>
    /// <param name="projDrop">Dropout after the output projection.</param>
    /// <param name="implementation">Which formulation of the polarity maths to use.</param>
    /// <param name="prefixTokens">Tokens before the grid (a class token): they take part in q/k/v like any other
    /// token but have no positional encoding here and no depthwise-convolution term (that convolution sees the
    /// grid only). Needs srRatio = 1. Not part of the official PVT layer (which has 0).</param>
    /// <param name="device">Device of the parameters (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    public PolaLinearAttention(long dim, (long Height, long Width) inputResolution, long numHeads = 8,
        bool qkvBias = false, long srRatio = 1, double alpha = 4, long kernelSize = 5, double projDrop = 0,
        PolarityImplementation implementation = PolarityImplementation.Fast, long prefixTokens = 0,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(PolaLinearAttention), dim, numHeads, alpha, kernelSize, projDrop, implementation)
    {
        long headDim = HeadDim;
        Check.Positive(inputResolution.Height, nameof(inputResolution));
        Check.Positive(inputResolution.Width, nameof(inputResolution));
        Check.Positive(srRatio, nameof(srRatio));
        if (inputResolution.Height < srRatio || inputResolution.Width < srRatio)
            throw new ArgumentException(
                $"inputResolution {inputResolution} is smaller than srRatio = {srRatio}; the spatial reduction would leave no tokens.", nameof(inputResolution));

        if (prefixTokens < 0) throw new ArgumentOutOfRangeException(nameof(prefixTokens), prefixTokens, "prefixTokens must be 0 or more.");
        if (prefixTokens > 0 && srRatio > 1)
            throw new ArgumentException($"prefixTokens = {prefixTokens} needs srRatio = 1 (got {srRatio}): spatial reduction works on the grid only.", nameof(prefixTokens));
        PrefixTokens = prefixTokens;
        SrRatio = srRatio;
        InputResolution = inputResolution;

        qg = nn.Linear(dim, 2 * dim, hasBias: qkvBias, device: device, dtype: dtype);
        kv = nn.Linear(dim, 2 * dim, hasBias: qkvBias, device: device, dtype: dtype);
        if (srRatio > 1)
        {
            sr = nn.Conv2d(dim, dim, kernel_size: srRatio, stride: srRatio, device: device, dtype: dtype);
            norm = nn.LayerNorm(dim, eps: 1e-5, device: device, dtype: dtype);
        }
        dwc = nn.Conv2d(headDim, headDim, kernel_size: kernelSize, padding: kernelSize / 2, groups: headDim, device: device, dtype: dtype);
        proj = nn.Linear(dim, dim, device: device, dtype: dtype);
        proj_drop = nn.Dropout(projDrop);

        long reducedHeight = inputResolution.Height / srRatio, reducedWidth = inputResolution.Width / srRatio;
        power = new Parameter(zeros(1, numHeads, 1, headDim, dtype: dtype, device: device));
        scale = new Parameter(zeros(1, 1, dim, dtype: dtype, device: device));
        positional_encoding = new Parameter(zeros(1, reducedHeight * reducedWidth, dim, dtype: dtype, device: device));
        _positionResizer = new PositionalEncodingResizer(reducedHeight, reducedWidth);

        RegisterComponents();
        Initialization.TruncatedNormalLinears(this);
    }

    /// <inheritdoc />
    protected override string BuiltFor =>
        $"a {InputResolution.Height} × {InputResolution.Width} token grid ({InputResolution.Height * InputResolution.Width} tokens)";

    /// <summary>Spatial reduction ratio of keys and values.</summary>
    public long SrRatio { get; }

    /// <summary>Tokens before the grid (e.g. a class token).</summary>
    public long PrefixTokens { get; }

    /// <inheritdoc />
    protected override long GridPrefix => PrefixTokens;

    /// <summary>The token grid the positional encoding was built for.</summary>
    public (long Height, long Width) InputResolution { get; }

    /// <inheritdoc />
    protected override Conv2d DepthwiseConvolution => dwc;

    /// <inheritdoc />
    protected override Parameter Power => power;

    /// <inheritdoc />
    protected override Parameter Scale => scale;

    /// <inheritdoc />
    protected override Linear OutputProjection => proj;

    /// <inheritdoc />
    protected override Dropout OutputDropout => proj_drop;

    /// <inheritdoc />
    /// <remarks>The shift <paramref name="mask"/> is ignored (polarity attention never applies it); a
    /// <paramref name="paddingMask"/> is supported without spatial reduction only.</remarks>
    public override Tensor forward(Tensor x, long height, long width, Tensor? mask = null, Tensor? paddingMask = null)
    {
        Check.TokenGrid(x, Dim, height, width, PrefixTokens);
        CheckPaddingMask(paddingMask, x);
        if (paddingMask is not null && SrRatio > 1)
            throw new ArgumentException($"paddingMask is not supported with spatial reduction (srRatio = {SrRatio}).", nameof(paddingMask));
        if (height < SrRatio || width < SrRatio)
            throw new ArgumentException($"The token grid {height} × {width} is smaller than srRatio = {SrRatio}.", nameof(height));

        using var scope = NewDisposeScope();
        long batch = x.shape[0], tokens = x.shape[1], channels = Dim;
        var softScale = SoftScale();
        var qgOut = QueryKeyScaling.Project(qg, x, softScale, blocks: 2, scaledBlocks: 1, out bool qFolded)
            .reshape(batch, tokens, 2, channels).unbind(2);
        var (q, g) = (qgOut[0], qgOut[1]);

        long reducedHeight = height, reducedWidth = width;
        Tensor kvInput = x;
        if (sr is not null)
        {
            var grid = x.permute(0, 2, 1).reshape(batch, channels, height, width);
            var reduced = sr.call(grid);
            (reducedHeight, reducedWidth) = (reduced.shape[2], reduced.shape[3]);
            kvInput = norm!.call(reduced.reshape(batch, channels, -1).permute(0, 2, 1));
        }
        var kvOut = QueryKeyScaling.Project(kv, kvInput, softScale, blocks: 2, scaledBlocks: 1, out bool kFolded)
            .reshape(batch, -1, 2, channels).permute(2, 0, 1, 3);
        var (k, v) = (kvOut[0], kvOut[1]);

        var encoding = _positionResizer.Resize(positional_encoding, reducedHeight, reducedWidth);
        if (PrefixTokens > 0) encoding = nn.functional.pad(encoding, [0, 0, PrefixTokens, 0]);
        return Attend(q, k, v, g, encoding, softScale, qFolded, kFolded, height, width, paddingMask).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The depthwise term sees v on the full grid: stretched back to N tokens by linear interpolation over the
    /// flattened token index when keys were reduced (as the official code does), and without the prefix tokens,
    /// whose term is zero.
    /// </summary>
    protected override Tensor LocalTerm(Tensor v, long tokens, long height, long width)
    {
        var gridValues = v;
        if (sr is not null)
        {
            long batch = v.shape[0], heads = v.shape[1], keys = v.shape[2];
            gridValues = nn.functional.interpolate(v.transpose(-2, -1).reshape(batch * heads, -1, keys), size: [tokens],
                    mode: InterpolationMode.Linear, align_corners: false)
                .reshape(batch, heads, -1, tokens).transpose(-2, -1);
        }
        if (PrefixTokens == 0) return DepthwiseOverHeads(gridValues, height, width);
        var local = DepthwiseOverHeads(gridValues[.., .., (int)PrefixTokens.., ..], height, width);
        return nn.functional.pad(local, [0, 0, PrefixTokens, 0]);
    }
}
