using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer;

/// <summary>
/// Tensor arithmetic with numbers, written so that every TorchSharp <see cref="Scalar"/> stays reachable until
/// LibTorch has read it.
/// </summary>
/// <remarks>
/// TorchSharp 0.107 hands numbers to LibTorch as native <see cref="Scalar"/> objects. Where one is made implicitly
/// (<c>tensor * 0.5</c>, <c>x.gt(0)</c>) or inside TorchSharp (<c>a + b</c> passes <c>alpha = 1</c>,
/// <c>torch.arange(n)</c> passes start and step, <c>BatchNorm2d</c> counts batches with <c>add_(1)</c>), nothing
/// references it once its handle has been read, so a garbage collection during the native call may run its finalizer,
/// which frees the native Scalar while LibTorch still reads it: the call then fails at random ("Unknown scalar type",
/// "Expected false to be true … toFloat") or reads a wrong value. This library therefore makes no such temporary:
/// constants live here for the life of the process, other numbers are made explicitly and disposed after the call
/// (<c>using var s = x.ToScalar()</c> keeps <c>s</c> alive until then). <c>NoTemporaryScalarTests</c> reads the
/// library's sources and TorchSharp's IL and fails on any call that would make one.
/// This file is compiled into PolaFormer and PolaFormer.Training (each gets an internal copy).
/// </remarks>
internal static class ScalarArithmetic
{
    /// <summary>0 as an integer Scalar, held for the life of the process.</summary>
    internal static readonly Scalar Zero = 0L.ToScalar();

    /// <summary>1 as an integer Scalar (the alpha of every addition), held for the life of the process.</summary>
    internal static readonly Scalar One = 1L.ToScalar();

    /// <summary><c>a + b</c>, computed as LibTorch's <c>add(a, b, alpha: 1)</c>.</summary>
    internal static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary><c>a += b</c> in place.</summary>
    internal static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, One);

    /// <summary><c>a + b</c> for a floating-point number b.</summary>
    internal static Tensor Plus(this Tensor a, double b)
    {
        using var value = b.ToScalar();
        return a.add(value, One);
    }

    /// <summary><c>a + b</c> for an integer b (an integer tensor stays integer).</summary>
    internal static Tensor Plus(this Tensor a, long b)
    {
        using var value = b.ToScalar();
        return a.add(value, One);
    }

    /// <summary><c>a − b</c> for a floating-point number b.</summary>
    internal static Tensor Minus(this Tensor a, double b)
    {
        using var value = b.ToScalar();
        return a.sub(value);
    }

    /// <summary><c>a · b</c> for a floating-point number b.</summary>
    internal static Tensor Times(this Tensor a, double b)
    {
        using var value = b.ToScalar();
        return a.mul(value);
    }

    /// <summary><c>a · b</c> for an integer b (an integer tensor stays integer).</summary>
    internal static Tensor Times(this Tensor a, long b)
    {
        using var value = b.ToScalar();
        return a.mul(value);
    }

    /// <summary><c>a / b</c> for a floating-point number b.</summary>
    internal static Tensor DividedBy(this Tensor a, double b)
    {
        using var value = b.ToScalar();
        return a.div(value);
    }

    /// <summary><c>1 − a</c>, as TorchSharp's <c>1 - a</c> computes it (−a, then + 1).</summary>
    internal static Tensor OneMinus(this Tensor a) => a.negative().add(One, One);

    /// <summary><c>torch.arange(end)</c>: 0, 1, …, end − 1.</summary>
    internal static Tensor Arange(long end, ScalarType? dtype = null, Device? device = null)
    {
        using var stop = end.ToScalar();
        return arange(Zero, stop, One, dtype, device);
    }

    /// <summary>
    /// <c>torch.nn.functional.softplus(x)</c> with its defaults (β = 1, threshold 20): x where x &gt; 20, else
    /// log(1 + eˣ), the expression LibTorch's kernel evaluates. Written out because TorchSharp's softplus makes its β and
    /// threshold Scalars implicitly. The exponential's input is capped at the threshold so that the branch not taken
    /// stays finite (an infinite one would turn its zero gradient into NaN).
    /// </summary>
    internal static Tensor Softplus(Tensor x)
    {
        using var threshold = 20L.ToScalar();
        return where(x.gt(threshold), x, x.clamp_max(threshold).exp().log1p());
    }
}
