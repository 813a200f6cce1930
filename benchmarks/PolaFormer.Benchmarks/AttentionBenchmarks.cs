using BenchmarkDotNet.Attributes;
using PolaFormer.Attention;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>One PVT-style attention layer (no spatial reduction) on a square grid, forward and forward+backward,
/// 2 threads: polarity attention (fast and reference formulations) against softmax attention. For side-by-side
/// runs against PyTorch use the <c>attention</c> command and benchmarks/scripts/run-attention-sweep.sh.</summary>
[MemoryDiagnoser(displayGenColumns: false)]
public class AttentionBenchmarks
{
    private TokenAttention _layer = null!;
    private Tensor _x = null!, _r = null!;
    private long _side;

    /// <summary>Tokens N (a square).</summary>
    [Params(784, 3136)]
    public long Tokens { get; set; }

    /// <summary>pola, pola-reference or softmax.</summary>
    [Params("pola", "pola-reference", "softmax")]
    public string Impl { get; set; } = "pola";

    /// <summary>Builds the layer (dim 64, 2 heads, batch 1) and its inputs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(2);
        manual_seed(0);
        _side = (long)Math.Round(Math.Sqrt(Tokens));
        _layer = Impl switch
        {
            "softmax" => new SpatialReductionAttention(64, 2, qkvBias: true),
            _ => new PolaLinearAttention(64, (_side, _side), 2, qkvBias: true,
                implementation: Impl == "pola" ? PolarityImplementation.Fast : PolarityImplementation.Reference),
        };
        _x = randn(1, Tokens, 64);
        _r = randn(1, Tokens, 64);
    }

    /// <summary>Releases the layer and inputs.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _layer.Dispose();
        _x.Dispose();
        _r.Dispose();
    }

    /// <summary>Inference forward (no gradients).</summary>
    [Benchmark]
    public void Forward()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        _layer.forward(_x, _side, _side);
    }

    /// <summary>Forward and backward of sum(y · r), gradients of the input and every parameter.</summary>
    [Benchmark]
    public void ForwardBackward()
    {
        using var scope = NewDisposeScope();
        var input = _x.detach().requires_grad_(true);
        (_layer.forward(input, _side, _side) * _r).sum().backward();
        _layer.zero_grad();
    }
}
