using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels;

/// <summary>Raw access to a CPU tensor's elements for the C# kernels.</summary>
internal static class TensorMemory
{
    /// <summary>Address of t's first element, strided views included (storage base plus storage offset). The caller
    /// keeps t alive while it uses the pointer, and calls this inside a dispose scope: TorchSharp makes an alias of t
    /// to reach its storage.</summary>
    public static unsafe float* Floats(Tensor t)
    {
        using var storage = t.storage<float>();
        return (float*)storage.data_ptr() + t.storage_offset();
    }
}
