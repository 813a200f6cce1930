using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Training.Data;

/// <summary>What <see cref="Mixup"/> decided for one batch: λ, and for cutmix the pasted box [Top, Bottom) ×
/// [Left, Right) (after border clipping; λ then equals 1 − box area / image area when corrected).</summary>
internal readonly record struct MixDraw(double Lambda, bool Cutmix, int Top, int Bottom, int Left, int Right);

/// <summary>
/// timm's <c>Mixup</c> in mode 'batch', as a batch transform on tensors: one draw per batch decides whether it is
/// mixed (probability p), mixup or cutmix (switch probability), and λ ~ Beta(α, α). Mixup blends each image with the
/// batch reversed (x·λ + flip(x)·(1 − λ)); cutmix pastes a box of the reversed batch, the box side
/// √(1 − λ) of the image's, centred uniformly and clipped at the border, with λ corrected to the pasted area. The
/// targets are label-smoothed one-hots mixed the same way. The draw depends only on (seed, epoch, batch index).
/// </summary>
public sealed class Mixup
{
    private readonly long _seed;

    /// <summary>A mixer for <paramref name="numClasses"/> classes.</summary>
    /// <param name="options">The settings; <see cref="MixupOptions.ImageNet"/> is the official recipe.</param>
    /// <param name="numClasses">Number of classes of the soft targets.</param>
    /// <param name="seed">Seed of the per-batch draws (use the loader's).</param>
    public Mixup(MixupOptions options, int numClasses, long seed = 0)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (numClasses < 1) throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "numClasses must be at least 1.");
        if (!(options.LabelSmoothing >= 0 && options.LabelSmoothing < 1))
            throw new ArgumentOutOfRangeException(nameof(options), options.LabelSmoothing, "LabelSmoothing must be in [0, 1).");
        Options = options;
        NumClasses = numClasses;
        _seed = seed;
    }

    /// <summary>The settings.</summary>
    public MixupOptions Options { get; }

    /// <summary>Number of classes of the soft targets.</summary>
    public int NumClasses { get; }

    /// <summary>
    /// Mixes batch <paramref name="batchIndex"/> of <paramref name="epoch"/>. Returns tensors the caller owns (dispose
    /// them independently of the inputs): the images (same shape, dtype and device as <paramref name="images"/>; when
    /// the batch is not mixed, a new reference to the same storage) and the soft targets (B, classes), float32, each
    /// row summing to 1. The inputs are not modified.
    /// </summary>
    /// <param name="images">(B, C, H, W) floating point; B must be even when images are mixed.</param>
    /// <param name="labels">(B) int64 class indices.</param>
    /// <param name="epoch">The epoch.</param>
    /// <param name="batchIndex">The batch's position in the epoch.</param>
    public (Tensor Images, Tensor Targets) Apply(Tensor images, Tensor labels, int epoch, int batchIndex)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(labels);
        if (images.dim() != 4)
            throw new ArgumentException($"images has shape {Shape(images)}; expected (B, C, H, W).", nameof(images));
        if (labels.dim() != 1 || labels.shape[0] != images.shape[0])
            throw new ArgumentException($"labels has shape {Shape(labels)}; expected ({images.shape[0]}) to match images {Shape(images)}.", nameof(labels));
        if (labels.dtype != ScalarType.Int64)
            throw new ArgumentException($"labels has dtype {labels.dtype}; expected Int64 class indices.", nameof(labels));
        if (Options.MixesImages && images.shape[0] % 2 != 0)
            throw new ArgumentException($"images has an odd batch size {images.shape[0]}; mixup pairs sample i with B−1−i, so use an even batch size (drop the last batch).", nameof(images));

        using var scope = NewDisposeScope();
        var draw = Draw(epoch, batchIndex, (int)images.shape[2], (int)images.shape[3]);
        Tensor mixed;
        if (draw.Lambda == 1.0)
        {
            mixed = images.alias(); // a new reference, not a copy: nothing is mixed
        }
        else if (draw.Cutmix)
        {
            mixed = images.clone();
            int h = draw.Bottom - draw.Top, w = draw.Right - draw.Left;
            if (h > 0 && w > 0)
                mixed.narrow(2, draw.Top, h).narrow(3, draw.Left, w)
                    .copy_(images.flip(0).narrow(2, draw.Top, h).narrow(3, draw.Left, w));
        }
        else
        {
            mixed = images.Times(draw.Lambda).Plus(images.flip(0).Times(1.0 - draw.Lambda));
        }
        var targets = Targets(labels, NumClasses, Options.LabelSmoothing, draw.Lambda, images.device);
        return (mixed.MoveToOuterDisposeScope(), targets.MoveToOuterDisposeScope());
    }

    /// <summary>timm's <c>_params_per_batch</c> and <c>cutmix_bbox_and_lam</c> for one batch.</summary>
    internal MixDraw Draw(int epoch, int batchIndex, int height, int width)
    {
        var rng = SampleRng.For(_seed, epoch, batchIndex, RngStream.Mixup);
        var o = Options;
        double lambda = 1.0;
        bool cutmix = false;
        if (o.MixesImages && rng.NextDouble() < o.Probability)
        {
            if (o.MixupAlpha > 0 && o.CutmixAlpha > 0)
            {
                cutmix = rng.NextDouble() < o.SwitchProbability;
                lambda = cutmix ? rng.Beta(o.CutmixAlpha, o.CutmixAlpha) : rng.Beta(o.MixupAlpha, o.MixupAlpha);
            }
            else if (o.MixupAlpha > 0)
            {
                lambda = rng.Beta(o.MixupAlpha, o.MixupAlpha);
            }
            else
            {
                cutmix = true;
                lambda = rng.Beta(o.CutmixAlpha, o.CutmixAlpha);
            }
        }
        if (lambda == 1.0 || !cutmix) return new MixDraw(lambda, false, 0, 0, 0, 0);

        double ratio = Math.Sqrt(1 - lambda);
        int cutH = (int)(height * ratio), cutW = (int)(width * ratio);
        int cy = rng.Integer(0, height - 1), cx = rng.Integer(0, width - 1);
        int top = Math.Clamp(cy - cutH / 2, 0, height), bottom = Math.Clamp(cy + cutH / 2, 0, height);
        int left = Math.Clamp(cx - cutW / 2, 0, width), right = Math.Clamp(cx + cutW / 2, 0, width);
        if (o.CorrectLambda) lambda = 1.0 - (double)(bottom - top) * (right - left) / ((double)height * width);
        return new MixDraw(lambda, true, top, bottom, left, right);
    }

    /// <summary>timm's <c>mixup_target</c>: smoothed one-hots of the labels, λ-mixed with those of the reversed batch.</summary>
    internal static Tensor Targets(Tensor labels, int numClasses, double smoothing, double lambda, Device device)
    {
        using var scope = NewDisposeScope();
        double off = smoothing / numClasses, on = 1.0 - smoothing + off;
        long n = labels.shape[0];
        using var offValue = off.ToScalar();
        using var onValue = on.ToScalar();
        Tensor OneHot(Tensor l) =>
            full([n, numClasses], offValue, ScalarType.Float32, device).scatter_(1, l.to(device).view(-1, 1), full([n, 1], onValue, ScalarType.Float32, device));
        var y = OneHot(labels).Times(lambda).Plus(OneHot(labels.flip(0)).Times(1.0 - lambda));
        return y.MoveToOuterDisposeScope();
    }

    private static string Shape(Tensor t) => "(" + string.Join(", ", t.shape) + ")";
}
