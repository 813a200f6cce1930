using PolaFormer;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Infrastructure;

/// <summary>Base of every test that touches TorchSharp: fails with an actionable message when LibTorch cannot load,
/// and runs on the CPU in float32 with a fixed thread count and a verified convolution.</summary>
public abstract class TorchTest
{
    private static readonly Lazy<Exception?> LoadFailure = new(() =>
    {
        try
        {
            TorchRuntime.EnsureLoaded();
            set_num_threads(Math.Max(1, Math.Min(2, Environment.ProcessorCount)));
            // What the training program does at start-up (CpuRuntimeOptions.VerifyConvolution): on CPUs where LibTorch's
            // oneDNN convolution is wrong, oneDNN is switched off, so the tests check this library, not that fault.
            var convolution = TorchRuntime.VerifyCpuConvolution();
            if (!convolution.Correct) return new PlatformNotSupportedException(convolution.ToString());
            return null;
        }
        catch (PlatformNotSupportedException e)
        {
            return e;
        }
    });

    protected TorchTest()
    {
        if (LoadFailure.Value is { } failure) throw new InvalidOperationException(failure.Message, failure);
    }
}
