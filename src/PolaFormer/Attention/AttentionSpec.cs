using static TorchSharp.torch;

namespace PolaFormer.Attention;

/// <summary>
/// Everything a block tells its attention layer, whatever the kind: an attention kind is built from this alone
/// (<see cref="AttentionRegistry"/>), so blocks never name a layer class.
/// </summary>
public sealed record AttentionSpec
{
    /// <summary>Channels in and out (C).</summary>
    public required long Dim { get; init; }

    /// <summary>Number of heads.</summary>
    public required long NumHeads { get; init; }

    /// <summary>The token grid the layer is built for: the whole map (Pola-PVT, Pola-ViT) or one window
    /// (Pola-Swin, with <see cref="Windowed"/>).</summary>
    public required (long Height, long Width) Grid { get; init; }

    /// <summary>Whether the layer attends within square windows of <see cref="Grid"/> (the caller partitions the
    /// map into windows) rather than over the whole token grid.</summary>
    public bool Windowed { get; init; }

    /// <summary>Spatial reduction of keys and values (PVT's sr_ratio; 1 = none).</summary>
    public long ReductionRatio { get; init; } = 1;

    /// <summary>Tokens before the grid, such as a class token.</summary>
    public long PrefixTokens { get; init; }

    /// <summary>Bias in the query/key/value projections.</summary>
    public bool QkvBias { get; init; }

    /// <summary>Softmax scale override (null: head_dim^−½).</summary>
    public double? QkScale { get; init; }

    /// <summary>Dropout on attention probabilities (softmax kinds).</summary>
    public double AttnDrop { get; init; }

    /// <summary>Dropout after the output projection.</summary>
    public double ProjDrop { get; init; }

    /// <summary>Polarity attention's α in the learnable power 1 + α·sigmoid(p).</summary>
    public double Alpha { get; init; } = 4;

    /// <summary>Kernel size of polarity attention's depthwise convolution on v.</summary>
    public long KernelSize { get; init; } = 5;

    /// <summary>Which formulation of the polarity maths to run.</summary>
    public PolarityImplementation Implementation { get; init; } = PolarityImplementation.Fast;

    /// <summary>Device of the parameters (null: the default device).</summary>
    public Device? Device { get; init; }

    /// <summary>Dtype of the parameters (null: the default dtype).</summary>
    public ScalarType? Dtype { get; init; }
}
