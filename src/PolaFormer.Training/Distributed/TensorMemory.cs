using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>
/// The address of a tensor's first element (CPU memory or CUDA device memory), from LibTorchSharp's
/// <c>THSTensor_data</c> (storage pointer plus offset). TorchSharp keeps that export internal, so it is looked up
/// in the LibTorchSharp library TorchSharp itself loaded.
/// </summary>
internal static unsafe class TensorMemory
{
    private static readonly Lazy<IntPtr> DataExport = new(() =>
    {
        if (!NativeLibrary.TryLoad("LibTorchSharp", typeof(torch).Assembly, null, out var library)
            || !NativeLibrary.TryGetExport(library, "THSTensor_data", out var export))
            throw new PlatformNotSupportedException("LibTorchSharp's THSTensor_data export was not found; is TorchSharp's native library loaded?");
        return export;
    });

    /// <summary>The address of <paramref name="tensor"/>'s first element; the tensor must be contiguous and stay
    /// alive while the address is used.</summary>
    public static IntPtr Address(Tensor tensor)
    {
        if (!tensor.is_contiguous()) throw new ArgumentException("The tensor must be contiguous.", nameof(tensor));
        if (tensor.numel() == 0) return IntPtr.Zero;
        var data = (delegate* unmanaged<IntPtr, IntPtr>)DataExport.Value;
        var address = data(tensor.Handle);
        if (address == IntPtr.Zero) throw new InvalidOperationException("THSTensor_data returned a null address for a non-empty tensor.");
        return address;
    }

    /// <summary>Bytes per element.</summary>
    public static long ElementSize(Tensor tensor) => tensor.ElementSize;
}
