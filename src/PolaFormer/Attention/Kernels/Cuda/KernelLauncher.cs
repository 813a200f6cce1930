using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels.Cuda;

/// <summary>
/// The arguments of one kernel launch, in the kernel's parameter order: tensor addresses, 64-bit integers
/// (<c>long long</c>) and floats. Each value sits in an 8-byte slot; a launch passes a pointer to each slot, which is
/// what <c>cuLaunchKernel</c>'s <c>kernelParams</c> expects (the driver copies as many bytes as the parameter's type
/// has: 8 for pointers and <c>long long</c>, 4 for <c>float</c>, read from the slot's start, little-endian).
/// </summary>
internal unsafe struct KernelArguments
{
    public const int Capacity = 24;
    private fixed ulong _slots[Capacity];
    private int _count;

    public readonly int Count => _count;

    /// <summary>The address of <paramref name="t"/>'s first element (storage offset included). The tensor must stay
    /// alive until the launch is queued; LibTorch's caching allocator keeps the memory from being reused by other
    /// streams after that, and everything here runs on the one default stream.</summary>
    public void Add(Tensor t) => Push((ulong)DevicePointer.Of(t));

    public void Add(long value) => Push((ulong)value);

    public void Add(float value)
    {
        ulong slot = 0;
        *(float*)&slot = value;
        Push(slot);
    }

    private void Push(ulong value)
    {
        if (_count == Capacity) throw new InvalidOperationException($"A kernel launch takes at most {Capacity} arguments.");
        _slots[_count++] = value;
    }

    /// <summary>Fills <paramref name="pointers"/> (at least <see cref="Count"/> long) with the address of each slot.
    /// The struct must not move while they are used: call it on a local (stack) variable.</summary>
    public void Pointers(void** pointers)
    {
        fixed (ulong* slots = _slots)
            for (int i = 0; i < _count; i++) pointers[i] = slots + i;
    }
}

/// <summary>Device addresses of tensors.</summary>
internal static partial class DevicePointer
{
    // LibTorchSharp's export: tensor->data_ptr(), the storage offset applied. It works for CUDA tensors (where
    // TorchSharp's storage&lt;T&gt;() would not be the way: it can copy) and for CPU tensors alike.
    [LibraryImport("LibTorchSharp")]
    private static partial nint THSTensor_data(nint handle);

    public static nint Of(Tensor t)
    {
        var address = THSTensor_data(t.Handle);
        if (address == 0) throw new InvalidOperationException($"LibTorch returned no data pointer for a tensor of shape {Check.Format(t.shape)} on {t.device}.");
        return address;
    }
}

/// <summary>
/// Queues kernels by name on one device. <see cref="CudaDeviceKernels"/> launches the NVRTC-compiled kernels with the
/// driver API; the tests put a CPU emulation of the same CUDA source behind this class to check its index arithmetic
/// without a GPU.
/// </summary>
/// <remarks>Every kernel here is written as a grid-stride loop over its work items (one thread may take several),
/// so any grid size is correct; <see cref="Launch"/> picks enough 256-thread blocks for one item per thread, capped.</remarks>
internal abstract unsafe class KernelLauncher
{
    public const uint ThreadsPerBlock = 256;
    public const long MaxBlocks = 1 << 20;

    /// <summary>Queues <paramref name="kernel"/> over <paramref name="workItems"/> items (nothing for zero).</summary>
    public void Launch(string kernel, long workItems, ref KernelArguments arguments)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(workItems);
        if (workItems == 0) return;
        long blocks = Math.Min(MaxBlocks, (workItems + ThreadsPerBlock - 1) / ThreadsPerBlock);
        void** pointers = stackalloc void*[KernelArguments.Capacity];
        fixed (KernelArguments* args = &arguments)
        {
            args->Pointers(pointers);
            LaunchCore(kernel, (uint)blocks, ThreadsPerBlock, pointers, args->Count);
        }
    }

    /// <summary>Called by the kernels' callers on every output buffer they allocate, before the launch that fills it.
    /// Fills it with NaN when <see cref="CudaKernels.PoisonOutputs"/> is set (the checks use it: an element no thread
    /// writes then shows up as NaN instead of as stale memory); otherwise does nothing.</summary>
    public virtual void PrepareOutput(Tensor output)
    {
        if (!CudaKernels.PoisonOutputs) return;
        using var nan = double.NaN.ToScalar();
        output.fill_(nan);
    }

    /// <summary>Runs or queues the kernel; <paramref name="parameters"/> points at each argument's value.</summary>
    protected abstract void LaunchCore(string kernel, uint blocks, uint threadsPerBlock, void** parameters, int count);
}
