using System.Globalization;
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

/// <summary>
/// The checks an options record's <c>Validate</c> runs. Every failure is an <see cref="ArgumentException"/> whose
/// <see cref="ArgumentException.ParamName"/> is the options argument (<c>options</c> in the model constructors) and
/// whose message names <c>options.Property</c>, the value and what was expected.
/// </summary>
/// <param name="paramName">The options argument's name.</param>
internal sealed class OptionsCheck(string paramName)
{
    /// <summary>The options argument's name.</summary>
    public string ParamName => paramName;

    /// <summary>"options.Property", as messages name a property.</summary>
    public string Name(string property) => $"{paramName}.{property}";

    /// <summary>The exception for <paramref name="property"/> holding <paramref name="value"/>.</summary>
    public ArgumentException Fail(string property, object? value, string expected) =>
        new($"{Name(property)} is {Show(value)}; expected {expected}.", paramName);

    /// <summary>An exception with a message of the caller's (which names the property).</summary>
    public ArgumentException Fail(string message) => new(message, paramName);

    /// <summary>Throws <see cref="Fail(string, object?, string)"/> unless <paramref name="ok"/>.</summary>
    public void That(bool ok, string property, object? value, string expected)
    {
        if (!ok) throw Fail(property, value, expected);
    }

    public void Positive(long value, string property) => That(value > 0, property, value, "a positive number");

    public void Positive(double value, string property, string expected = "a positive finite number") =>
        That(value > 0 && double.IsFinite(value), property, value, expected);

    public void PositiveOrNull(double? value, string property) =>
        That(value is null || (value > 0 && double.IsFinite(value.Value)), property, value, "a positive finite number or null");

    public void NumClasses(long value, string property = "NumClasses") =>
        That(value >= 0, property, value, "0 (no classifier) or more");

    public void Probability(double value, string property) =>
        That(value >= 0 && value < 1, property, value, "a probability in [0, 1)");

    public void OddKernel(long value, string property) =>
        That(value > 0 && value % 2 == 1, property, value, "a positive odd number (the depthwise convolution keeps the grid size)");

    public void Defined<TEnum>(TEnum value, string property) where TEnum : struct, Enum =>
        That(Enum.IsDefined(value), property, value, string.Join(" or ", Enum.GetNames<TEnum>()));

    /// <summary>Checks that a per-stage list has one entry per stage.</summary>
    public void PerStage<T>(IReadOnlyList<T>? list, string property, int stages)
    {
        if (list is null || list.Count != stages)
            throw Fail($"{Name(property)} has {(list is null ? "no" : list.Count.ToString(CultureInfo.InvariantCulture))} entries ({Show(list)}); expected one per stage ({stages}).");
    }

    /// <summary>Checks an image size: both sides positive multiples of <paramref name="multiple"/>, which
    /// <paramref name="why"/> explains (e.g. "options.PatchSize = 16").</summary>
    public void ImageSize((long Height, long Width) size, string property, long multiple = 1, string? why = null) =>
        That(size.Height > 0 && size.Width > 0 && size.Height % multiple == 0 && size.Width % multiple == 0, property, size,
            multiple == 1 ? "a positive height and width" : $"a positive height and width, both multiples of {multiple} ({why})");

    /// <summary>Parses one attention letter per stage (<see cref="Attention.AttentionRegistry.ParseStages"/>),
    /// reporting a bad string as this property.</summary>
    public char[] Stages(string? types, int stages, string property) =>
        Rethrow(() => Attention.AttentionRegistry.ParseStages(types, stages, Name(property)));

    /// <summary>Parses the attention letter of every block (<see cref="Attention.AttentionRegistry.ParseBlocks"/>),
    /// reporting a bad string as this property.</summary>
    public char[][] Blocks(string? types, IReadOnlyList<long> depths, string property) =>
        Rethrow(() => Attention.AttentionRegistry.ParseBlocks(types, depths, Name(property)));

    private T Rethrow<T>(Func<T> parse)
    {
        try
        {
            return parse();
        }
        catch (ArgumentException e) when (e.ParamName != paramName)
        {
            // The parser names the property; the exception names the options argument like every other check.
            throw new ArgumentException(e.Message.Split(" (Parameter '")[0], paramName, e);
        }
    }

    /// <summary>A value as messages show it: numbers in invariant culture, sizes as H × W, lists in brackets,
    /// strings quoted.</summary>
    public static string Show(object? value) => value switch
    {
        null => "null",
        string s => $"\"{s}\"",
        ValueTuple<long, long> size => $"{size.Item1} × {size.Item2}",
        System.Collections.IEnumerable list => "[" + string.Join(", ", list.Cast<object?>().Select(Show)) + "]",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
