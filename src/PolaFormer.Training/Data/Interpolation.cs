namespace PolaFormer.Training.Data;

/// <summary>The resampling filter of resizes and geometric augmentations (PIL's names and kernels).</summary>
public enum Interpolation
{
    /// <summary>Cubic convolution: a = -0.5 with PIL's antialiasing for resizes (support widened by the downscale
    /// factor), PIL's 4×4 cubic for rotations, shears and translations. The official recipe's choice.</summary>
    Bicubic,

    /// <summary>Linear (triangle) filter, antialiased in resizes like PIL.</summary>
    Bilinear,
}
