using PolaFormer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

// Field names (qkvg, dwc, power, scale, positional_encoding, proj) are the official PyTorch attribute names: they
// become the state-dict keys, so the authors' checkpoints load unchanged.
#pragma warning disable IDE1006

/// <summary>
/// Polarity-aware linear attention inside square windows (Swin style; official
/// <c>models.pola_swin.PolaLinearAttention</c>).
/// </summary>
/// <remarks>
/// Input is a batch of windows (B·nW, w·w, C). q, k, v and the output gate g come from one projection
/// <c>qkvg</c>; the positional encoding is added to k; the depthwise convolution on v runs over the w × w window
/// with one kernel shared by all heads. As in the official code the shift mask is accepted and ignored.
/// </remarks>
public sealed class PolaWindowAttention : PolarityTokenAttention
{
    private readonly Linear qkvg;
    private readonly Linear proj;
    private readonly Dropout proj_drop;
    private readonly Conv2d dwc;
    private readonly Parameter power;
    private readonly Parameter scale;
    private readonly Parameter positional_encoding;
    private readonly PositionalEncodingResizer _positionResizer;

    /// <summary>Creates the layer.</summary>
    /// <param name="dim">Channels C.</param>
    /// <param name="windowSize">Side w of the square window the positional encoding is built for (w·w rows).
    /// Windows of another side are served by bicubic resizing of the encoding.</param>
    /// <param name="numHeads">Heads; dim/numHeads must be even.</param>
    /// <param name="qkvBias">Bias in the qkvg projection.</param>
    /// <param name="alpha">Scale of the learnable power, power = 1 + alpha·sigmoid(p); must be positive.</param>
    /// <param name="kernelSize">Kernel of the depthwise convolution on v; odd.</param>
    /// <param name="projDrop">Dropout after the output projection.</param>
    /// <param name="implementation">Which formulation of the polarity maths to use.</param>
    /// <param name="device">Device of the parameters (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    public PolaWindowAttention(long dim, long windowSize, long numHeads, bool qkvBias = true, double alpha = 4,
        long kernelSize = 5, double projDrop = 0, PolarityImplementation implementation = PolarityImplementation.Fast,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(PolaWindowAttention), dim, numHeads, alpha, kernelSize, projDrop, implementation)
    {
        long headDim = HeadDim;
        Check.Positive(windowSize, nameof(windowSize));
        WindowSize = windowSize;

        qkvg = nn.Linear(dim, 4 * dim, hasBias: qkvBias, device: device, dtype: dtype);
        proj = nn.Linear(dim, dim, device: device, dtype: dtype);
        proj_drop = nn.Dropout(projDrop);
        dwc = nn.Conv2d(headDim, headDim, kernel_size: kernelSize, padding: kernelSize / 2, groups: headDim, device: device, dtype: dtype);
        power = new Parameter(zeros(1, numHeads, 1, headDim, dtype: dtype, device: device));
        scale = new Parameter(zeros(1, 1, dim, dtype: dtype, device: device));
        positional_encoding = new Parameter(zeros(1, windowSize * windowSize, dim, dtype: dtype, device: device));
        _positionResizer = new PositionalEncodingResizer(windowSize, windowSize);

        RegisterComponents();
        Initialization.TruncatedNormalLinears(this);
    }

    /// <inheritdoc />
    protected override string BuiltFor => $"{WindowSize} × {WindowSize} windows ({WindowSize * WindowSize} tokens)";

    /// <summary>Side of the window the positional encoding was built for.</summary>
    public long WindowSize { get; }

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

    /// <summary>Attention inside windows.</summary>
    /// <param name="x">(B·nW, w·w, C) windows.</param>
    /// <param name="height">Window side w (windows are square).</param>
    /// <param name="width">Window side w; must equal <paramref name="height"/>.</param>
    /// <param name="mask">Ignored, as in the official code: polarity blocks run shifted windows without the
    /// shift mask.</param>
    /// <param name="paddingMask">Optional (B·nW, w·w): 0 marks padding tokens of windows that overhang the map.
    /// Their keys drop out of the sums and their values are zeroed before the depthwise convolution, so a real
    /// token next to padding sees what it would see at the map border.</param>
    /// <returns>(B·nW, w·w, C).</returns>
    public override Tensor forward(Tensor x, long height, long width, Tensor? mask = null, Tensor? paddingMask = null)
    {
        if (height != width)
            throw new ArgumentException($"The window is {height} × {width}; polarity window attention needs square windows.", nameof(width));
        Check.TokenGrid(x, Dim, height, width);
        CheckPaddingMask(paddingMask, x);

        using var scope = NewDisposeScope();
        long batch = x.shape[0], tokens = x.shape[1], channels = Dim;
        var softScale = SoftScale();
        var projected = QueryKeyScaling.Project(qkvg, x, softScale, blocks: 4, scaledBlocks: 2, out bool folded);
        var parts = projected.reshape(batch, tokens, 4, channels).permute(2, 0, 1, 3).unbind(0);
        var (q, k, v, g) = (parts[0], parts[1], parts[2], parts[3]);
        var encoding = _positionResizer.Resize(positional_encoding, height, width);
        return Attend(q, k, v, g, encoding, softScale, folded, folded, height, width, paddingMask).MoveToOuterDisposeScope();
    }
}
