using static TorchSharp.torch;

namespace PolaFormer;

/// <summary>Argument checks that turn shape mistakes into <see cref="ArgumentException"/>s naming the argument,
/// the value and the expectation, before libtorch sees them.</summary>
internal static class Check
{
    public static string Format(ReadOnlySpan<long> shape) => "(" + string.Join(", ", shape.ToArray()) + ")";

    public static void Rank(Tensor t, int rank, string name, string expected)
    {
        if (t.dim() != rank)
            throw new ArgumentException($"{name} has shape {Format(t.shape)} (rank {t.dim()}); expected rank {rank}: {expected}.", name);
    }

    public static void Positive(long value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive.");
    }

    public static void Positive(double value, string name)
    {
        if (!(value > 0) || double.IsInfinity(value))
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be a positive finite number.");
    }

    public static void Probability(double value, string name)
    {
        if (!(value >= 0 && value < 1))
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be in [0, 1).");
    }

    public static long HeadDim(long dim, long numHeads, string dimName = "dim", string headsName = "numHeads")
    {
        Positive(dim, dimName);
        Positive(numHeads, headsName);
        if (dim % numHeads != 0)
            throw new ArgumentException($"{dimName} = {dim} is not divisible by {headsName} = {numHeads}.", dimName);
        return dim / numHeads;
    }

    public static void EvenHeadDim(long headDim, long dim, long numHeads, string dimName = "dim")
    {
        if (headDim % 2 != 0)
            throw new ArgumentException(
                $"{dimName} = {dim} with {numHeads} heads gives a head dimension of {headDim}; polarity attention needs an even head dimension (each stream takes half of v).", dimName);
    }

    public static void OddKernel(long kernelSize, string name = "kernelSize")
    {
        if (kernelSize <= 0 || kernelSize % 2 == 0)
            throw new ArgumentOutOfRangeException(name, kernelSize,
                $"{name} must be a positive odd number so the depthwise convolution keeps the token grid size.");
    }

    /// <summary>Checks x is (B, N, C) with the expected channel count, at least one item and a floating-point dtype.</summary>
    public static void Tokens(Tensor x, long channels, string name = "x")
    {
        ArgumentNullException.ThrowIfNull(x, name);
        if (x.dim() != 3)
            throw new ArgumentException($"{name} has shape {Format(x.shape)}; expected (B, N, C={channels}).", name);
        if (x.shape[2] != channels)
            throw new ArgumentException($"{name} has {x.shape[2]} channels (shape {Format(x.shape)}); expected C = {channels}.", name);
        NonEmptyFloatingPoint(x, name);
    }

    /// <summary>Checks that x holds at least one batch item and a floating-point dtype, before LibTorch sees it (whose
    /// errors for these carry native stack frames).</summary>
    public static void NonEmptyFloatingPoint(Tensor x, string name)
    {
        if (x.shape[0] == 0)
            throw new ArgumentException($"{name} has batch size 0 (shape {Format(x.shape)}); expected at least one item.", name);
        if (!x.is_floating_point())
            throw new ArgumentException($"{name} has dtype {x.dtype}; expected a floating-point tensor (float32, float16, bfloat16 or float64).", name);
    }

    /// <summary>Checks that x has the dtype and device of <paramref name="first"/>, the weight that meets it first (a
    /// single tensor: enumerating a model's parameters on every forward would cost host time on the hot path).</summary>
    public static void MatchesParameters(Tensor x, Tensor first, string name)
    {
        if (x.dtype != first.dtype)
            throw new ArgumentException(
                $"{name} has dtype {x.dtype} but the model's parameters are {first.dtype}; convert the input (x.to({first.dtype})) or the model (model.to({x.dtype})).", name);
        if (x.device.ToString() != first.device.ToString())
            throw new ArgumentException(
                $"{name} is on {x.device} but the model's parameters are on {first.device}; move the input or the model.", name);
    }

    /// <summary>Checks x is (B, N, C) with N = prefix + height·width.</summary>
    public static void TokenGrid(Tensor x, long channels, long height, long width, long prefix = 0, string name = "x")
    {
        Tokens(x, channels, name);
        Positive(height, nameof(height));
        Positive(width, nameof(width));
        if (x.shape[1] != prefix + height * width)
            throw new ArgumentException(
                $"{name} has N = {x.shape[1]} tokens (shape {Format(x.shape)}) but " +
                (prefix == 0 ? $"height × width = {height} × {width} = {height * width}." : $"{prefix} prefix tokens + {height} × {width} = {prefix + height * width}."), name);
    }

    /// <summary>Checks x is an image batch (B, C, H, W) with the expected channel count.</summary>
    public static void Images(Tensor x, long channels, string name = "x")
    {
        ArgumentNullException.ThrowIfNull(x, name);
        if (x.dim() != 4)
            throw new ArgumentException($"{name} has shape {Format(x.shape)}; expected an image batch (B, C={channels}, H, W).", name);
        if (x.shape[1] != channels)
            throw new ArgumentException($"{name} has {x.shape[1]} channels (shape {Format(x.shape)}); expected C = {channels}.", name);
        NonEmptyFloatingPoint(x, name);
    }

    public static bool BroadcastsTo(ReadOnlySpan<long> shape, ReadOnlySpan<long> target)
    {
        if (shape.Length > target.Length) return false;
        int offset = target.Length - shape.Length;
        for (int i = 0; i < shape.Length; i++)
            if (shape[i] != 1 && shape[i] != target[offset + i]) return false;
        return true;
    }

    /// <summary>Returns the side of a square token count, or throws naming what was expected.</summary>
    public static long SquareSide(long tokens, string name, string context)
    {
        long side = (long)Math.Round(Math.Sqrt(tokens));
        if (side * side != tokens)
            throw new ArgumentException($"{name} has N = {tokens} tokens, which is not a square number; {context}", name);
        return side;
    }
}
