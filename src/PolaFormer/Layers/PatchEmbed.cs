using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Layers;

// Field names (proj, norm) are the official PyTorch attribute names (state-dict keys).
#pragma warning disable IDE1006

/// <summary>Image (or feature map) to patch tokens: a strided convolution, flattened to (B, N, C), optionally
/// followed by a LayerNorm.</summary>
public sealed class PatchEmbed : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d proj;
    private readonly LayerNorm? norm;

    /// <summary>Creates the layer.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="embedDim">Output channels.</param>
    /// <param name="patchSize">Kernel and stride of the convolution.</param>
    /// <param name="normalize">Apply a LayerNorm to the tokens.</param>
    /// <param name="normEps">Epsilon of that LayerNorm.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public PatchEmbed(long inChannels, long embedDim, long patchSize, bool normalize = true, double normEps = 1e-5,
        Device? device = null, ScalarType? dtype = null) : base(nameof(PatchEmbed))
    {
        Check.Positive(inChannels, nameof(inChannels));
        Check.Positive(embedDim, nameof(embedDim));
        Check.Positive(patchSize, nameof(patchSize));
        InChannels = inChannels;
        EmbedDim = embedDim;
        PatchSize = patchSize;
        proj = nn.Conv2d(inChannels, embedDim, kernel_size: patchSize, stride: patchSize, device: device, dtype: dtype);
        if (normalize) norm = nn.LayerNorm(embedDim, eps: normEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Input channels.</summary>
    public long InChannels { get; }

    /// <summary>Output channels.</summary>
    public long EmbedDim { get; }

    /// <summary>Kernel and stride.</summary>
    public long PatchSize { get; }

    /// <summary>(B, C, H, W) → (B, (H/p)·(W/p), embedDim).</summary>
    public override Tensor forward(Tensor x) => Embed(x).Tokens;

    /// <summary>The projection's weight: the first parameter an image meets (its dtype and device are the model's).</summary>
    internal Tensor Weight => proj.weight!;

    /// <summary>(B, C, H, W) → tokens (B, ⌊H/p⌋·⌊W/p⌋, embedDim) and their grid (⌊H/p⌋, ⌊W/p⌋); a remainder
    /// of rows or columns is dropped, as the strided convolution does.</summary>
    /// <exception cref="ArgumentException">x is not (B, inChannels, H, W) with H, W ≥ the patch size.</exception>
    public (Tensor Tokens, long Height, long Width) Embed(Tensor x)
    {
        Check.Images(x, InChannels);
        long h = x.shape[2], w = x.shape[3];
        if (h < PatchSize || w < PatchSize)
            throw new ArgumentException($"x is {h} × {w}; both sides must be at least the patch size {PatchSize}.", nameof(x));
        using var scope = NewDisposeScope();
        var tokens = proj.call(x).flatten(2).transpose(1, 2);
        if (norm is not null) tokens = norm.call(tokens);
        return (tokens.MoveToOuterDisposeScope(), h / PatchSize, w / PatchSize);
    }
}
