using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Infrastructure;

/// <summary>A test that needs a CUDA device: reported as skipped (not passed) where CUDA is not available.
/// Run them with <c>dotnet test -p:TorchBackend=cuda --filter Category=CUDA</c> on a machine with a GPU.</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (!CudaAvailable()) Skip = "CUDA is not available (this build uses the CPU LibTorch, or the machine has no GPU); build with -p:TorchBackend=cuda on a GPU machine.";
    }

    internal static bool CudaAvailable()
    {
        try { return cuda.is_available(); }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException) { return false; }
    }
}

/// <summary>The theory form of <see cref="CudaFactAttribute"/>.</summary>
public sealed class CudaTheoryAttribute : TheoryAttribute
{
    public CudaTheoryAttribute()
    {
        if (!CudaFactAttribute.CudaAvailable()) Skip = "CUDA is not available (this build uses the CPU LibTorch, or the machine has no GPU); build with -p:TorchBackend=cuda on a GPU machine.";
    }
}
