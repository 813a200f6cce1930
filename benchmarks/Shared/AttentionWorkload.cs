using PolaFormer.Attention;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks.Shared;

// Compiled into both benchmarks/PolaFormer.Benchmarks and benchmarks/PolaFormer.GpuCheck (linked source), so the CPU and
// GPU attention benchmarks time exactly the same work.

/// <summary>One attention layer of the benchmark (PVT style, no spatial reduction, q/k/v biases) on a side × side grid,
/// with its input and a fixed random cotangent; <see cref="Step"/> is one timed iteration.</summary>
internal sealed class AttentionWorkload : IDisposable
{
    public const string Implementations = "pola, pola-reference or softmax";

    private readonly Tensor _x, _cotangent;

    public AttentionWorkload(string impl, long tokens, long dim, long heads, long batch, string mode, Device? device = null)
    {
        if (mode is not ("fwd" or "fwdbwd")) throw new ArgumentException($"mode is '{mode}'; expected fwd or fwdbwd.", nameof(mode));
        Side = (long)Math.Round(Math.Sqrt(tokens));
        if (Side * Side != tokens)
            throw new ArgumentException($"tokens is {tokens}; expected a square number (the layer runs on a side × side grid).", nameof(tokens));
        Mode = mode;
        Layer = impl switch
        {
            "pola" => new PolaLinearAttention(dim, (Side, Side), heads, qkvBias: true, implementation: PolarityImplementation.Fast, device: device),
            "pola-reference" => new PolaLinearAttention(dim, (Side, Side), heads, qkvBias: true, implementation: PolarityImplementation.Reference, device: device),
            "softmax" => new SpatialReductionAttention(dim, heads, qkvBias: true, device: device),
            _ => throw new ArgumentException($"impl is '{impl}'; expected {Implementations}.", nameof(impl)),
        };
        // The polarity parameters start at zero; spread them as trained ones are, so the power is not the trivial 3
        // everywhere (the Python scripts do the same).
        if (impl != "softmax")
        {
            using var noGrad = no_grad();
            foreach (var (name, p) in Layer.named_parameters())
                if (name is "power" or "scale" or "positional_encoding") p.copy_(randn_like(p) * (name == "power" ? 1.0 : 0.5));
        }
        _x = randn(batch, tokens, dim, device: device);
        _cotangent = randn(batch, tokens, dim, device: device);
        if (mode == "fwd") Layer.eval(); else Layer.train();
    }

    public TokenAttention Layer { get; }
    public long Side { get; }
    public string Mode { get; }

    /// <summary>fwd: a forward without gradients; fwdbwd: forward, sum(y · r), backward to the input and every parameter.</summary>
    public void Step()
    {
        using var scope = NewDisposeScope();
        if (Mode == "fwd")
        {
            using var noGrad = no_grad();
            Layer.forward(_x, Side, Side);
            return;
        }
        var input = _x.detach().requires_grad_(true);
        (Layer.forward(input, Side, Side) * _cotangent).sum().backward();
        Layer.zero_grad();
    }

    public void Dispose()
    {
        Layer.Dispose();
        _x.Dispose();
        _cotangent.Dispose();
    }
}
