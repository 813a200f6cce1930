using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention;

/// <summary>
/// The two-dimensional rotary position encoding of PolaFormer++ (official <c>RoPE</c> and <c>theta_shift</c>):
/// the first half of each head's channels rotates with the token's row, the second half with its column.
/// </summary>
/// <remarks>
/// For a table of width <c>d</c> per head there are <c>d/4</c> frequencies <c>base^(−t)</c>, t evenly spaced over
/// [0, 1]; each frequency serves one pair of adjacent channels. The tables are (H·W, d) with the tokens row-major,
/// the layout of the attention layers' tokens, and broadcast against (B, heads, H·W, d).
/// </remarks>
public static class RotaryEmbedding
{
    /// <summary>The default base of the frequencies (the official value).</summary>
    public const double DefaultBase = 10000;

    /// <summary>Width per head of the tables built for <paramref name="embedDim"/> channels over
    /// <paramref name="numHeads"/> heads: 4·⌊embedDim / numHeads / 4⌋.</summary>
    public static long TableWidth(long embedDim, long numHeads)
    {
        Check.Positive(embedDim, nameof(embedDim));
        Check.Positive(numHeads, nameof(numHeads));
        return 4 * (embedDim / numHeads / 4);
    }

    /// <summary>The (sin, cos) tables for a <paramref name="height"/> × <paramref name="width"/> token grid.</summary>
    /// <param name="embedDim">Channels the table is built for (the official constructor's <c>embed_dim</c>; the
    /// polarity layer uses twice its width because its keys are 2·head_dim wide).</param>
    /// <param name="numHeads">Heads; each head gets a table of <see cref="TableWidth"/> channels.</param>
    /// <param name="height">Rows of the token grid.</param>
    /// <param name="width">Columns of the token grid.</param>
    /// <param name="dtype">Dtype of the tables (default float32).</param>
    /// <param name="device">Device of the tables (default: the current default device).</param>
    /// <param name="rotaryBase">Base of the frequencies.</param>
    /// <returns>sin and cos, each (height·width, TableWidth).</returns>
    public static (Tensor Sin, Tensor Cos) Tables(long embedDim, long numHeads, long height, long width,
        ScalarType? dtype = null, Device? device = null, double rotaryBase = DefaultBase)
    {
        Check.Positive(height, nameof(height));
        Check.Positive(width, nameof(width));
        using var angle = Frequencies(embedDim, numHeads, dtype, device, rotaryBase);
        return Tables(angle, height, width);
    }

    /// <summary>The frequencies of the tables (the official <c>RoPE.angle</c> buffer): base^(−t) for t evenly
    /// spaced over [0, 1], each repeated twice, TableWidth / 2 values.</summary>
    /// <param name="embedDim">Channels the table is built for.</param>
    /// <param name="numHeads">Heads.</param>
    /// <param name="dtype">Dtype (default float32).</param>
    /// <param name="device">Device (default: the current default device).</param>
    /// <param name="rotaryBase">Base of the frequencies.</param>
    public static Tensor Frequencies(long embedDim, long numHeads, ScalarType? dtype = null, Device? device = null, double rotaryBase = DefaultBase)
    {
        long tableWidth = TableWidth(embedDim, numHeads);
        if (tableWidth == 0)
            throw new ArgumentException(
                $"embedDim / numHeads = {embedDim} / {numHeads} gives fewer than 4 channels per head; the rotary tables need at least 4.", nameof(embedDim));
        Check.Positive(rotaryBase, nameof(rotaryBase));
        var type = dtype ?? ScalarType.Float32;
        using var scope = NewDisposeScope();
        long frequencies = tableWidth / 4;
        // The official buffer is computed in its dtype as base ** linspace(0, 1, n); done the same way here so float32
        // tables agree with the official ones to the last bit or two.
        var exponents = linspace(0, 1, frequencies, dtype: type, device: device);
        using var baseScalar = rotaryBase.ToScalar();
        var angle = full(frequencies, baseScalar, dtype: type, device: device).pow(exponents).reciprocal();
        return angle.unsqueeze(-1).repeat(1, 2).flatten().MoveToOuterDisposeScope();
    }

    /// <summary>The (sin, cos) tables for a <paramref name="height"/> × <paramref name="width"/> grid from the
    /// frequencies <paramref name="angle"/> (<see cref="Frequencies"/>), in its dtype and on its device.</summary>
    /// <returns>sin and cos, each (height·width, 2·angle length): rows' phases then columns' phases.</returns>
    public static (Tensor Sin, Tensor Cos) Tables(Tensor angle, long height, long width)
    {
        ArgumentNullException.ThrowIfNull(angle);
        if (angle.dim() != 1 || angle.shape[0] % 2 != 0)
            throw new ArgumentException($"angle has shape {Check.Format(angle.shape)}; expected a 1-D tensor of even length (each frequency twice).", nameof(angle));
        Check.Positive(height, nameof(height));
        Check.Positive(width, nameof(width));
        using var scope = NewDisposeScope();
        long tableWidth = 2 * angle.shape[0];
        var rows = ScalarArithmetic.Arange(height, angle.dtype, angle.device).unsqueeze(-1) * angle;   // (H, w/2)
        var columns = ScalarArithmetic.Arange(width, angle.dtype, angle.device).unsqueeze(-1) * angle; // (W, w/2)
        var rowPhase = rows.unsqueeze(1).expand(height, width, -1);
        var columnPhase = columns.unsqueeze(0).expand(height, width, -1);
        var sin = cat([rowPhase.sin(), columnPhase.sin()], -1).reshape(height * width, tableWidth);
        var cos = cat([rowPhase.cos(), columnPhase.cos()], -1).reshape(height * width, tableWidth);
        return (sin.MoveToOuterDisposeScope(), cos.MoveToOuterDisposeScope());
    }

    /// <summary>Rotates each pair of adjacent channels (2i, 2i+1) of <paramref name="x"/> to (−x[2i+1], x[2i]).</summary>
    public static Tensor RotateEveryTwo(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        long last = x.shape[^1];
        if (last % 2 != 0)
            throw new ArgumentException($"x has {last} channels in its last dimension (shape {Check.Format(x.shape)}); expected an even number.", nameof(x));
        var pairs = x.unflatten(x.dim() - 1, [last / 2, 2]); // TorchSharp's unflatten takes no negative dim
        var even = pairs.select(-1, 0);
        var odd = pairs.select(-1, 1);
        return stack([-odd, even], -1).flatten(-2);
    }

    /// <summary>Applies the rotation: x·cos + rotate_every_two(x)·sin (official <c>theta_shift</c>).</summary>
    /// <param name="x">(…, N, d) with d equal to the tables' width.</param>
    /// <param name="sin">(N, d) sin table.</param>
    /// <param name="cos">(N, d) cos table.</param>
    public static Tensor ThetaShift(Tensor x, Tensor sin, Tensor cos)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(sin);
        ArgumentNullException.ThrowIfNull(cos);
        if (sin.dim() != 2 || !sin.shape.SequenceEqual(cos.shape))
            throw new ArgumentException(
                $"sin has shape {Check.Format(sin.shape)} and cos {Check.Format(cos.shape)}; expected both (N, d).", nameof(sin));
        if (x.dim() < 2 || x.shape[^1] != sin.shape[1] || x.shape[^2] != sin.shape[0])
            throw new ArgumentException(
                $"x has shape {Check.Format(x.shape)}; expected (…, N={sin.shape[0]}, d={sin.shape[1]}) to match the rotary tables.", nameof(x));
        return (x * cos).Plus(RotateEveryTwo(x) * sin);
    }
}

/// <summary>An attention layer that takes the rotary tables from its caller (a PolaFormer++ stage builds them once
/// for all its blocks).</summary>
public interface IRotaryAttention
{
    /// <summary>Attention over tokens (B, N, C) on a height × width grid with the caller's (N, d) sin and cos tables.</summary>
    Tensor ForwardWithTables(Tensor x, long height, long width, Tensor sin, Tensor cos);
}
