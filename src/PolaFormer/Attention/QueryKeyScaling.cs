using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

/// <summary>
/// The learnable scale of the polarity layers: the official code divides q and k by <c>softplus(scale)</c> after
/// the projection (k after its positional encoding is added). Where the token rows outnumber the projection's weight
/// rows, dividing the weight's q and k rows instead gives the same q and k (to float rounding) without two passes
/// over the activations, forward and backward; for small token maps dividing the activations stays cheaper.
/// </summary>
internal static class QueryKeyScaling
{
    /// <summary>
    /// <paramref name="linear"/> applied to x, its output read as <paramref name="blocks"/> blocks of C channels of
    /// which the first <paramref name="scaledBlocks"/> are divided by <paramref name="softScale"/> (1, 1, C) when
    /// <paramref name="folded"/> comes back true; when false the caller divides them itself.
    /// </summary>
    public static Tensor Project(Linear linear, Tensor x, Tensor softScale, int blocks, int scaledBlocks, out bool folded)
    {
        var weight = linear.weight!;
        long rows = x.numel() / x.shape[^1];
        folded = rows >= weight.shape[0];
        if (!folded) return linear.call(x);

        using var scope = NewDisposeScope();
        var inverse = softScale.reciprocal().reshape(-1);
        var kept = ones((blocks - scaledBlocks) * inverse.shape[0], dtype: inverse.dtype, device: inverse.device);
        var rowScale = cat([.. Enumerable.Repeat(inverse, scaledBlocks), kept]);
        var bias = linear.bias is null ? null : linear.bias * rowScale;
        return nn.functional.linear(x, weight * rowScale.unsqueeze(1), bias).MoveToOuterDisposeScope();
    }
}
