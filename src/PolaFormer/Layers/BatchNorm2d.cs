using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Layers;

/// <summary>
/// PyTorch's <c>nn.BatchNorm2d(features)</c> with its defaults (affine, running statistics, momentum 0.1, eps 1e-5)
/// and its state-dict names (<c>weight</c>, <c>bias</c>, <c>running_mean</c>, <c>running_var</c>,
/// <c>num_batches_tracked</c>).
/// </summary>
/// <remarks>TorchSharp's own BatchNorm2d counts the batches with an implicit Scalar on every training step, which
/// its finalizer can free while LibTorch reads it (see <see cref="ScalarArithmetic"/>); this one counts with a held
/// Scalar and otherwise runs the same <c>batch_norm</c>.</remarks>
internal sealed class BatchNorm2d : nn.Module<Tensor, Tensor>
{
    private const double Momentum = 0.1;
    private const double Epsilon = 1e-5;

    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly Tensor running_mean;
    private readonly Tensor running_var;
    private readonly Tensor num_batches_tracked;

    /// <summary>Creates the layer for maps of <paramref name="features"/> channels.</summary>
    public BatchNorm2d(long features, Device? device = null, ScalarType? dtype = null) : base(nameof(BatchNorm2d))
    {
        Check.Positive(features, nameof(features));
        Features = features;
        weight = new Parameter(ones(features, dtype: dtype, device: device));
        bias = new Parameter(zeros(features, dtype: dtype, device: device));
        running_mean = zeros(features, dtype: dtype, device: device);
        running_var = ones(features, dtype: dtype, device: device);
        num_batches_tracked = zeros(Array.Empty<long>(), dtype: ScalarType.Int64, device: device);
        RegisterComponents();
    }

    /// <summary>Channels normalised.</summary>
    public long Features { get; }

    /// <summary>(B, C, H, W) → (B, C, H, W); in training, also updates the running statistics.</summary>
    public override Tensor forward(Tensor x)
    {
        if (x.dim() != 4 || x.shape[1] != Features)
            throw new ArgumentException(
                $"x has shape {Check.Format(x.shape)}; expected (B, C={Features}, H, W).", nameof(x));
        if (training)
        {
            using var noGrad = no_grad();
            num_batches_tracked.add_(ScalarArithmetic.One, ScalarArithmetic.One);
        }
        return nn.functional.batch_norm(x, running_mean, running_var, weight, bias, training, Momentum, Epsilon);
    }
}
