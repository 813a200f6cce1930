using System.Text;
using static TorchSharp.torch;

namespace PolaFormer.Training.Distributed;

/// <summary>Collectives on values other than tensors, built from the tensor ones.</summary>
internal static class ProcessGroupExtensions
{
    /// <summary>Rank <paramref name="root"/>'s <paramref name="text"/> (null included) on every rank.</summary>
    public static string? BroadcastText(this ProcessGroup group, string? text, string label, int root = 0)
    {
        if (group.WorldSize == 1) return text;
        using var scope = NewDisposeScope();
        var bytes = text is null ? [] : Encoding.UTF8.GetBytes(text);
        var length = tensor(new long[] { text is null ? -1 : bytes.Length }, device: group.Device);
        group.Broadcast(length, root, label + " (length)");
        long n = length.cpu().item<long>();
        if (n < 0) return null;
        var data = (group.Rank == root ? tensor(bytes, ScalarType.Byte) : zeros(n, ScalarType.Byte)).to(group.Device);
        group.Broadcast(data, root, label);
        return Encoding.UTF8.GetString(data.cpu().bytes);
    }
}
