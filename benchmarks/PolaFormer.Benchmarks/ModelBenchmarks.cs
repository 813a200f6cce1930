using BenchmarkDotNet.Attributes;
using PolaFormer.Models;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>Whole-model inference at 224 × 224 (2 threads) for the tiny presets and their softmax counterparts.
/// For images/s tables and training steps use the <c>model</c> command and benchmarks/scripts/run-models.sh.</summary>
[MemoryDiagnoser(displayGenColumns: false)]
public class ModelBenchmarks
{
    private Backbone _model = null!;
    private Tensor _images = null!;

    /// <summary>A preset or a softmax baseline (see <c>ModelZoo</c>).</summary>
    [Params("pola_pvt_tiny", "pvt_tiny_softmax", "pola_swin_tiny", "swin_tiny_softmax")]
    public string Name { get; set; } = "pola_pvt_tiny";

    /// <summary>Images per forward.</summary>
    [Params(1, 8)]
    public long Batch { get; set; }

    /// <summary>Builds the model in eval mode and a random batch.</summary>
    [GlobalSetup]
    public void Setup()
    {
        TorchSharp.torch.set_num_threads(2);
        manual_seed(0);
        _model = ModelZoo.Create(Name);
        _model.eval();
        _images = randn(Batch, 3, 224, 224);
    }

    /// <summary>Releases the model and inputs.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _model.Dispose();
        _images.Dispose();
    }

    /// <summary>One inference forward of the batch.</summary>
    [Benchmark]
    public void Inference()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        _model.forward(_images);
    }
}
