using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

/// <summary>
/// What the polarity-aware linear attention layers share once their projections have made q, k, v and the output
/// gate g: the learnable scale and power, the positional encoding of the keys, the depthwise term on v, the
/// polarity core (<see cref="PolarityAttention"/>) and the output projection.
/// </summary>
/// <remarks>
/// <para>A derived layer owns only how q, k, v and g are projected (one <c>qkvg</c> projection over windows in Swin;
/// <c>qg</c> and a possibly spatially reduced <c>kv</c> in PVT) and hands them to <see cref="Attend"/>.</para>
/// <para>The parameters themselves are fields of the derived layer, exposed here through abstract properties: field
/// names become state-dict keys (the official attribute names), and each layer creates its modules in the official
/// order, which fixes the random initialisation for a given seed.</para>
/// </remarks>
public abstract class PolarityTokenAttention : TokenAttention
{
    /// <summary>Validates the hyper-parameters every polarity layer shares.</summary>
    /// <param name="name">Module name.</param>
    /// <param name="dim">Channels C.</param>
    /// <param name="numHeads">Heads; C/heads must be even (v is split into two halves per head).</param>
    /// <param name="alpha">Scale of the learnable power, power = 1 + α·sigmoid(p); must be positive.</param>
    /// <param name="kernelSize">Kernel of the depthwise convolution on v; odd.</param>
    /// <param name="projDrop">Dropout after the output projection.</param>
    /// <param name="implementation">Which formulation of the polarity maths runs.</param>
    protected PolarityTokenAttention(string name, long dim, long numHeads, double alpha, long kernelSize, double projDrop,
        PolarityImplementation implementation)
        : base(name, dim, numHeads)
    {
        long headDim = Check.HeadDim(dim, numHeads);
        Check.EvenHeadDim(headDim, dim, numHeads);
        Check.Positive(alpha, nameof(alpha));
        Check.OddKernel(kernelSize);
        Check.Probability(projDrop, nameof(projDrop));
        Alpha = alpha;
        Implementation = implementation;
        _alpha = alpha.ToScalar();
    }

    // α as a Scalar held for the layer's lifetime (see ScalarArithmetic for why no Scalar here is a temporary).
    private readonly Scalar _alpha;

    /// <inheritdoc />
    public override char Letter => 'L';

    /// <summary>Scale of the learnable power.</summary>
    public double Alpha { get; }

    /// <summary>Which formulation of the polarity maths runs.</summary>
    public PolarityImplementation Implementation { get; set; }

    /// <summary>Precision of the polarity core when the layer runs in float16/bfloat16 (default: float32 core).</summary>
    public PolarityPrecision Precision { get; set; } = PolarityPrecision.Float32Core;

    /// <summary>The official <c>dwc</c>: a depthwise convolution over one head's d channels, shared by all heads.</summary>
    protected abstract Conv2d DepthwiseConvolution { get; }

    /// <summary>The official <c>power</c> (1, heads, 1, d): p in the exponent 1 + α·sigmoid(p).</summary>
    protected abstract Parameter Power { get; }

    /// <summary>The official <c>scale</c> (1, 1, C): q and k are divided by softplus(scale).</summary>
    protected abstract Parameter Scale { get; }

    /// <summary>The official <c>proj</c>.</summary>
    protected abstract Linear OutputProjection { get; }

    /// <summary>The official <c>proj_drop</c>.</summary>
    protected abstract Dropout OutputDropout { get; }

    /// <summary>softplus(scale), the divisor of q and k.</summary>
    protected Tensor SoftScale() => ScalarArithmetic.Softplus(Scale);

    /// <summary>
    /// The layer after its projections: scales q and k (adding the positional encoding to k), raises both streams
    /// to the learnable power, adds the depthwise term of v (<see cref="LocalTerm"/>), gates, and projects.
    /// </summary>
    /// <param name="q">(B, N, C) queries.</param>
    /// <param name="k">(B, n, C) keys, n = N without spatial reduction.</param>
    /// <param name="v">(B, n, C) values.</param>
    /// <param name="g">(B, N, C) output gate.</param>
    /// <param name="keyEncoding">Positional encoding added to the keys, broadcastable to k.</param>
    /// <param name="softScale"><see cref="SoftScale"/>.</param>
    /// <param name="queryScaled">Whether q was already divided by softScale (folded into its projection weights by
    /// <see cref="QueryKeyScaling"/>).</param>
    /// <param name="keyScaled">Whether k was already divided by softScale.</param>
    /// <param name="height">Rows of the query token grid.</param>
    /// <param name="width">Columns of the query token grid.</param>
    /// <param name="paddingMask">Optional (B, N) padding mask (1 real, 0 padding).</param>
    /// <returns>(B, N, C).</returns>
    protected Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor g, Tensor keyEncoding, Tensor softScale,
        bool queryScaled, bool keyScaled, long height, long width, Tensor? paddingMask)
    {
        long batch = q.shape[0], tokens = q.shape[1], keys = k.shape[1], heads = NumHeads;
        // The official q / s and (k + encoding) / s; where the division was folded into the projection only the
        // encoding still needs it.
        k = keyScaled ? k.Plus(keyEncoding / softScale) : k.Plus(keyEncoding) / softScale;
        if (!queryScaled) q = q / softScale;
        var exponent = sigmoid(Power).mul(_alpha).Plus(1.0);   // 1 + α·sigmoid(p)

        q = SplitHeads(q, batch, tokens, heads);
        k = SplitHeads(k, batch, keys, heads);
        v = SplitHeads(v, batch, keys, heads);
        if (paddingMask is not null) v = v * paddingMask.to_type(v.dtype).unsqueeze(1).unsqueeze(-1);

        var local = LocalTerm(v, tokens, height, width);
        var attended = PolarityAttention.ComputeGated(q, k, v, exponent, local, g, PolarityAttention.DefaultEpsilon,
            Implementation, paddingMask, Precision);
        return OutputDropout.call(OutputProjection.call(attended));
    }

    /// <summary>
    /// The depthwise term for every query token, (B, heads, N, d), from the values (B, heads, n, d). The default
    /// convolves v on the query grid (n = N); a layer whose keys and values live elsewhere (a reduced grid, prefix
    /// tokens) overrides this and calls <see cref="DepthwiseOverHeads"/> on the grid part.
    /// </summary>
    protected virtual Tensor LocalTerm(Tensor v, long tokens, long height, long width) =>
        DepthwiseOverHeads(v, height, width);

    /// <summary>
    /// The official depthwise convolution on v, one d-channel kernel shared by all heads: v (B, heads, H·W, d) is
    /// folded to (B·heads, d, H, W), convolved, and read back per head as (B, heads, H·W, d) (a view of the
    /// convolution's channels-last output; the official code merges the heads into channel h·d + c, which the
    /// polarity core does when it adds the term).
    /// </summary>
    protected Tensor DepthwiseOverHeads(Tensor v, long height, long width)
    {
        var dwc = DepthwiseConvolution;
        long batch = v.shape[0], heads = v.shape[1];
        return Kernels.DepthwiseConvolution.Apply(v.reshape(batch * heads, height, width, -1).permute(0, 3, 1, 2), dwc.weight!, dwc.bias)
            .permute(0, 2, 3, 1).reshape(batch, heads, height * width, -1);
    }
}
