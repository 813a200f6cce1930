using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace PolaFormer.Tests.Checkpoints;

/// <summary>Writes pickle opcodes by hand, so that tests can build the exact (hostile) streams they need.</summary>
internal sealed class PickleBuilder
{
    private readonly List<byte> _bytes = [];

    public PickleBuilder Op(params byte[] bytes)
    {
        _bytes.AddRange(bytes);
        return this;
    }

    public PickleBuilder Proto(byte version = 2) => Op(0x80, version);
    public PickleBuilder Mark() => Op((byte)'(');
    public PickleBuilder Stop() => Op((byte)'.');
    public PickleBuilder None() => Op((byte)'N');
    public PickleBuilder EmptyDict() => Op((byte)'}');
    public PickleBuilder EmptyList() => Op((byte)']');
    public PickleBuilder EmptyTuple() => Op((byte)')');
    public PickleBuilder Tuple() => Op((byte)'t');
    public PickleBuilder Tuple1() => Op(0x85);
    public PickleBuilder Tuple2() => Op(0x86);
    public PickleBuilder List() => Op((byte)'l');
    public PickleBuilder Append() => Op((byte)'a');
    public PickleBuilder SetItem() => Op((byte)'s');
    public PickleBuilder SetItems() => Op((byte)'u');
    public PickleBuilder Reduce() => Op((byte)'R');
    public PickleBuilder Pop() => Op((byte)'0');
    public PickleBuilder BinPersId() => Op((byte)'Q');
    public PickleBuilder FrozenSet() => Op(0x91);
    public PickleBuilder NewFalse() => Op(0x89);

    public PickleBuilder Put(uint slot) => Op((byte)'r').Op(UInt32(slot));
    public PickleBuilder Get(uint slot) => Op((byte)'j').Op(UInt32(slot));

    /// <summary>The shortest integer opcode for <paramref name="value"/> (BININT1, BININT, else LONG1).</summary>
    public PickleBuilder Int(long value)
    {
        if (value is >= 0 and < 256) return Op((byte)'K', (byte)value);
        if (value is >= int.MinValue and <= int.MaxValue) return Op((byte)'J').Op(UInt32((uint)(int)value));
        return Long1(value);
    }

    /// <summary>LONG1: a length byte, then the value in little-endian two's complement (8 bytes here).</summary>
    public PickleBuilder Long1(long value)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, value);
        return Op(0x8a, 8).Op(bytes);
    }

    public PickleBuilder Str(string text)
    {
        var utf8 = Encoding.UTF8.GetBytes(text);
        return Op((byte)'X').Op(UInt32((uint)utf8.Length)).Op(utf8);
    }

    public PickleBuilder Global(string module, string name) => Op((byte)'c').Op(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

    /// <summary>The persistent id torch.save writes for a storage: ('storage', torch.&lt;type&gt;, key, 'cpu', numel).</summary>
    public PickleBuilder Storage(string type, string key, long numel) =>
        Mark().Str("storage").Global("torch", type).Str(key).Str("cpu").Int(numel).Tuple().BinPersId();

    /// <summary>torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {}).</summary>
    public PickleBuilder Tensor(string type, string key, long numel, long offset, long[] size, long[] stride)
    {
        Global("torch._utils", "_rebuild_tensor_v2").Mark();
        Storage(type, key, numel).Int(offset);
        Mark();
        foreach (var s in size) Int(s);
        Tuple().Mark();
        foreach (var s in stride) Int(s);
        return Tuple().NewFalse().EmptyDict().Tuple().Reduce();
    }

    public byte[] ToArray() => [.. _bytes];

    private static byte[] UInt32(uint value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, value);
        return bytes;
    }
}

/// <summary>Builds torch.save-shaped zips and safetensors files from parts, for tests that need damaged ones.</summary>
internal static class HostileFiles
{
    /// <summary>A torch.save archive: archive/data.pkl, archive/byteorder and archive/data/&lt;key&gt; per storage.</summary>
    public static byte[] Pth(byte[] pickle, params (string Key, byte[] Data)[] storages)
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        {
            Add(zip, "archive/data.pkl", pickle);
            Add(zip, "archive/byteorder", Encoding.ASCII.GetBytes("little"));
            foreach (var (key, data) in storages) Add(zip, $"archive/data/{key}", data);
        }
        return buffer.ToArray();
    }

    /// <summary>float32 values 0, 1, 2, ... as a storage's bytes.</summary>
    public static byte[] Floats(int count)
    {
        var bytes = new byte[count * 4];
        for (int i = 0; i < count; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), i);
        return bytes;
    }

    /// <summary>A safetensors file from its header JSON and data section, as given (no checks, no padding).</summary>
    public static byte[] SafeTensors(string headerJson, byte[] data)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        return bytes;
    }

    private static void Add(ZipArchive zip, string name, byte[] data)
    {
        using var stream = zip.CreateEntry(name, CompressionLevel.NoCompression).Open();
        stream.Write(data);
    }

    /// <summary>
    /// Runs <paramref name="action"/> on its own thread with a small stack and a deadline: a hang fails the test
    /// instead of hanging it, and a recursion deep enough to matter shows up here rather than only on bigger
    /// inputs. Returns the exception it threw, or null.
    /// </summary>
    public static Exception? RunBounded(Action action, TimeSpan deadline, string what, int stackBytes = 512 * 1024)
    {
        Exception? thrown = null;
        var thread = new Thread(() =>
        {
            try { action(); }
            catch (Exception e) { thrown = e; }
        }, stackBytes) { IsBackground = true };
        thread.Start();
        if (!thread.Join(deadline))
            throw new TimeoutException($"{what} did not finish within {deadline.TotalSeconds:0.#} s (a hang).");
        return thrown;
    }
}
