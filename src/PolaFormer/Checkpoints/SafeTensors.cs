using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using static TorchSharp.torch;

namespace PolaFormer.Checkpoints;

/// <summary>A parsed safetensors file: named tensors (on the CPU) and the string metadata.</summary>
public sealed class SafeTensorsFile : IDisposable
{
    internal SafeTensorsFile(Dictionary<string, Tensor> tensors, Dictionary<string, string> metadata)
    {
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>Tensors by name, in the order of the file's header.</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors { get; }

    /// <summary>The <c>__metadata__</c> entries (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Disposes every tensor.</summary>
    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
    }
}

/// <summary>
/// Reads and writes the safetensors format (8-byte little-endian header length, JSON header, raw little-endian
/// row-major data) without any dependency beyond TorchSharp.
/// </summary>
public static class SafeTensors
{
    private const long MaxHeaderBytes = 100L * 1024 * 1024;

    private static readonly Dictionary<string, (ScalarType Type, int Size)> Dtypes = new()
    {
        ["F64"] = (ScalarType.Float64, 8), ["F32"] = (ScalarType.Float32, 4), ["F16"] = (ScalarType.Float16, 2),
        ["BF16"] = (ScalarType.BFloat16, 2), ["I64"] = (ScalarType.Int64, 8), ["I32"] = (ScalarType.Int32, 4),
        ["I16"] = (ScalarType.Int16, 2), ["I8"] = (ScalarType.Int8, 1), ["U8"] = (ScalarType.Byte, 1),
        ["BOOL"] = (ScalarType.Bool, 1),
    };

    /// <summary>Reads every tensor of a safetensors file onto the CPU.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is truncated, corrupted or not safetensors; the message says
    /// which tensor or which part of the header is wrong.</exception>
    public static SafeTensorsFile Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"No safetensors file at '{path}'.", path);
        using var stream = File.OpenRead(path);
        return Load(stream, path);
    }

    /// <summary>Reads every tensor of a safetensors stream onto the CPU.</summary>
    /// <param name="stream">A readable stream positioned at the start of the file.</param>
    /// <param name="sourceName">Named in error messages.</param>
    public static SafeTensorsFile Load(Stream stream, string sourceName = "stream")
    {
        ArgumentNullException.ThrowIfNull(stream);
        Span<byte> lengthBytes = stackalloc byte[8];
        if (stream.ReadAtLeast(lengthBytes, 8, throwOnEndOfStream: false) != 8)
            throw new InvalidDataException($"'{sourceName}' is not a safetensors file: shorter than its 8-byte header length.");
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength <= 0 || headerLength > MaxHeaderBytes)
            throw new InvalidDataException($"'{sourceName}' is not a safetensors file: header length {headerLength} is out of range.");
        var header = new byte[headerLength];
        if (stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false) != header.Length)
            throw new InvalidDataException($"'{sourceName}' is truncated: its {headerLength}-byte header is cut short.");

        JsonDocument json;
        try { json = JsonDocument.Parse(header); }
        catch (JsonException e) { throw new InvalidDataException($"'{sourceName}' has a corrupted safetensors header: {e.Message}", e); }

        var metadata = new Dictionary<string, string>();
        var entries = new List<(string Name, ScalarType Type, int Size, long[] Shape, long Begin, long End)>();
        using (json)
        {
            foreach (var property in json.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    foreach (var m in property.Value.EnumerateObject()) metadata[m.Name] = m.Value.GetString() ?? "";
                    continue;
                }
                try
                {
                    string dtype = property.Value.GetProperty("dtype").GetString() ?? "";
                    if (!Dtypes.TryGetValue(dtype, out var info))
                        throw new InvalidDataException($"'{sourceName}': tensor '{property.Name}' has unsupported dtype '{dtype}'.");
                    var shape = property.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                    var offsets = property.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                    if (offsets.Length != 2) throw new InvalidDataException($"'{sourceName}': tensor '{property.Name}' has {offsets.Length} data offsets; expected 2.");
                    entries.Add((property.Name, info.Type, info.Size, shape, offsets[0], offsets[1]));
                }
                catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
                {
                    throw new InvalidDataException($"'{sourceName}': header entry '{property.Name}' is malformed: {e.Message}", e);
                }
            }
        }

        var dataStart = 8 + headerLength;
        long dataLength = stream.CanSeek ? stream.Length - dataStart : long.MaxValue;
        var tensors = new Dictionary<string, Tensor>();
        try
        {
            // Tensors are stored in header order by convention, but read by offset so any order works.
            foreach (var e in entries.OrderBy(e => e.Begin))
            {
                long count = e.Shape.Aggregate(1L, (a, b) => a * b);
                long bytes = count * e.Size;
                if (e.End - e.Begin != bytes || e.Begin < 0)
                    throw new InvalidDataException(
                        $"'{sourceName}': tensor '{e.Name}' {Check.Format(e.Shape)} needs {bytes} bytes but its offsets [{e.Begin}, {e.End}) span {e.End - e.Begin}.");
                if (e.End > dataLength)
                    throw new InvalidDataException(
                        $"'{sourceName}' is truncated: tensor '{e.Name}' ends at byte {e.End} of the data section, which has only {dataLength}.");
                var buffer = new byte[bytes];
                if (stream.CanSeek) stream.Position = dataStart + e.Begin;
                if (stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false) != buffer.Length)
                    throw new InvalidDataException($"'{sourceName}' is truncated inside tensor '{e.Name}'.");
                tensors[e.Name] = FromBytes(buffer, e.Type, e.Shape);
            }
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
        var ordered = entries.ToDictionary(e => e.Name, e => tensors[e.Name]);
        return new SafeTensorsFile(ordered, metadata);
    }

    /// <summary>
    /// Writes tensors to a safetensors file atomically: the data goes to a temporary file beside the target,
    /// is flushed to disk, then renamed over the target, so a crash never leaves a half-written file behind.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        AtomicFile.Write(path, stream => Save(stream, tensors, metadata));
    }

    /// <summary>Writes tensors in safetensors format to a stream.</summary>
    public static void Save(Stream stream, IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var list = tensors.ToList();
        var names = new HashSet<string>();
        var header = new Dictionary<string, object>();
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        var blobs = new List<byte[]>();
        foreach (var (name, tensor) in list)
        {
            if (!names.Add(name)) throw new ArgumentException($"The tensor name '{name}' appears twice.", nameof(tensors));
            var dtype = Dtypes.FirstOrDefault(d => d.Value.Type == tensor.dtype);
            if (dtype.Key is null)
                throw new ArgumentException($"Tensor '{name}' has dtype {tensor.dtype}, which safetensors cannot store here.", nameof(tensors));
            var bytes = ToBytes(tensor);
            header[name] = new Dictionary<string, object>
            {
                ["dtype"] = dtype.Key,
                ["shape"] = tensor.shape,
                ["data_offsets"] = new[] { offset, offset + bytes.Length },
            };
            offset += bytes.Length;
            blobs.Add(bytes);
        }
        var json = JsonSerializer.SerializeToUtf8Bytes(header);
        int padded = (json.Length + 7) / 8 * 8;
        var headerBytes = new byte[padded];
        json.CopyTo(headerBytes, 0);
        for (int i = json.Length; i < padded; i++) headerBytes[i] = (byte)' ';
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(headerBytes);
        foreach (var blob in blobs) stream.Write(blob);
    }

    private static Tensor FromBytes(byte[] data, ScalarType type, long[] shape)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors reading needs a little-endian machine.");
        var result = empty(shape, dtype: type);
        if (data.Length > 0) result.bytes = data;
        return result;
    }

    private static byte[] ToBytes(Tensor t)
    {
        using var scope = NewDisposeScope();
        var cpu = t.detach().to(CPU).contiguous();
        return cpu.numel() == 0 ? [] : cpu.bytes.ToArray();
    }
}
