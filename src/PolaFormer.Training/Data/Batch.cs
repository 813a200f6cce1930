using static TorchSharp.torch;

namespace PolaFormer.Training.Data;

/// <summary>
/// One batch from a <see cref="BatchLoader"/>, owning its tensors (on the CPU). Its tensors were attached on the
/// consumer's thread, so they belong to the consumer's current dispose scope if one is open; otherwise dispose the
/// batch (disposing both is harmless).
/// </summary>
public sealed class Batch : IDisposable
{
    internal Batch(int epoch, int index, Tensor images, Tensor labels, int[] indices)
    {
        Epoch = epoch;
        Index = index;
        Images = images;
        Labels = labels;
        Indices = indices;
    }

    /// <summary>The epoch this batch belongs to.</summary>
    public int Epoch { get; }

    /// <summary>Position of the batch within its epoch, from 0.</summary>
    public int Index { get; }

    /// <summary>(B, 3, size, size) float32, normalised.</summary>
    public Tensor Images { get; }

    /// <summary>(B) int64 class labels.</summary>
    public Tensor Labels { get; }

    /// <summary>Dataset index of each sample (an unreadable image's substitute shows as the substitute's index).</summary>
    public IReadOnlyList<int> Indices { get; }

    /// <summary>Number of samples, B.</summary>
    public int Count => Indices.Count;

    /// <summary>Releases the tensors.</summary>
    public void Dispose()
    {
        Images.Dispose();
        Labels.Dispose();
    }
}
