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

    /// <summary>Most dimensions of one tensor.</summary>
    private const int MaxDimensions = 64;

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
    /// which tensor or which part of the header is wrong and what was expected (see
    /// <see cref="Load(Stream, string)"/>).</exception>
    /// <exception cref="NotSupportedException">A tensor larger than 2 GB.</exception>
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
    /// <exception cref="InvalidDataException">The stream is truncated, corrupted or not safetensors: a header
    /// length beyond the data, malformed JSON, a duplicate or malformed entry, an unknown dtype, a negative
    /// dimension, a shape whose bytes differ from its offsets, or offsets that overlap, leave gaps or do not cover
    /// the data exactly.</exception>
    /// <exception cref="NotSupportedException">A tensor larger than 2 GB.</exception>
    public static SafeTensorsFile Load(Stream stream, string sourceName = "stream")
    {
        ArgumentNullException.ThrowIfNull(stream);
        // A stream of unknown length is read whole first, so that every declared size is checked against real
        // bytes before any buffer is allocated.
        if (!stream.CanSeek)
        {
            var copy = new MemoryStream();
            stream.CopyTo(copy);
            copy.Position = 0;
            stream = copy;
        }
        long available = stream.Length - stream.Position;
        long start = stream.Position;
        Span<byte> lengthBytes = stackalloc byte[8];
        if (stream.ReadAtLeast(lengthBytes, 8, throwOnEndOfStream: false) != 8)
            throw new InvalidDataException($"'{sourceName}' is not a safetensors file: shorter than its 8-byte header length.");
        ulong declared = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (declared == 0 || declared > MaxHeaderBytes)
            throw new InvalidDataException($"'{sourceName}' is not a safetensors file: header length {declared} is out of range; expected 1 to {MaxHeaderBytes} bytes.");
        long headerLength = (long)declared;
        if (headerLength > available - 8)
            throw new InvalidDataException($"'{sourceName}' is truncated: its header claims {headerLength} bytes but only {available - 8} follow the length.");
        var header = new byte[headerLength];
        stream.ReadExactly(header);

        var metadata = new Dictionary<string, string>();
        var entries = new List<Entry>();
        try
        {
            using var json = JsonDocument.Parse(header);
            if (json.RootElement.ValueKind != JsonValueKind.Object)
                throw Malformed(sourceName, $"the header is a JSON {json.RootElement.ValueKind}; expected an object of tensors");
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in json.RootElement.EnumerateObject())
            {
                // JSON allows a name twice; which one a reader keeps differs between readers, so neither is taken.
                if (!names.Add(property.Name))
                    throw Malformed(sourceName, $"the header names '{property.Name}' twice; expected each tensor once");
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        throw Malformed(sourceName, $"__metadata__ is a JSON {property.Value.ValueKind}; expected an object of strings");
                    foreach (var m in property.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw Malformed(sourceName, $"__metadata__ entry '{m.Name}' is a JSON {m.Value.ValueKind}; expected a string");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!))
                            throw Malformed(sourceName, $"__metadata__ names '{m.Name}' twice");
                    }
                    continue;
                }
                entries.Add(ParseEntry(property, sourceName));
            }
        }
        // InvalidOperationException: a name or string that is not valid UTF-8, found only when it is read.
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new InvalidDataException($"'{sourceName}' has a corrupted safetensors header: {e.Message}", e);
        }

        // The data section is laid out in offset order with no gaps, overlaps or trailing bytes (what the
        // safetensors library itself requires): overlapping entries would alias one another and unaccounted bytes
        // mean the header and the data disagree.
        long dataLength = available - 8 - headerLength;
        long expectedBegin = 0;
        var byOffset = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
        foreach (var e in byOffset)
        {
            if (e.Begin != expectedBegin)
                throw new InvalidDataException(
                    $"'{sourceName}': tensor '{e.Name}' starts at byte {e.Begin} of the data section; expected {expectedBegin} " +
                    (e.Begin < expectedBegin ? "(it overlaps the tensor before it)." : "(the bytes before it belong to no tensor)."));
            if (e.End > dataLength)
                throw new InvalidDataException(
                    $"'{sourceName}' is truncated: tensor '{e.Name}' ends at byte {e.End} of the data section, which has only {dataLength}.");
            expectedBegin = e.End;
        }
        if (expectedBegin != dataLength)
            throw new InvalidDataException(
                $"'{sourceName}': its tensors cover {expectedBegin} bytes of the data section, which has {dataLength}; expected them to cover it exactly (trailing bytes belong to no tensor).");

        var dataStart = start + 8 + headerLength;
        var tensors = new Dictionary<string, Tensor>();
        try
        {
            foreach (var e in byOffset)
            {
                long bytes = e.End - e.Begin;
                if (bytes > Array.MaxLength)
                    throw new NotSupportedException($"'{sourceName}': tensor '{e.Name}' holds {bytes} bytes; this reader reads at most {Array.MaxLength} per tensor.");
                var buffer = new byte[bytes];
                stream.Position = dataStart + e.Begin;
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

    private sealed record Entry(string Name, ScalarType Type, long[] Shape, long Begin, long End);

    /// <summary>Reads one tensor's header entry and checks it on its own: known dtype, dimensions that are not
    /// negative, and offsets whose span is exactly the shape's bytes (computed without overflow).</summary>
    private static Entry ParseEntry(JsonProperty property, string sourceName)
    {
        string name = property.Name;
        try
        {
            if (property.Value.ValueKind != JsonValueKind.Object)
                throw Malformed(sourceName, $"tensor '{name}' is a JSON {property.Value.ValueKind}; expected an object with dtype, shape and data_offsets");
            var dtypeElement = property.Value.GetProperty("dtype");
            string dtype = dtypeElement.ValueKind == JsonValueKind.String ? dtypeElement.GetString()! : dtypeElement.ToString();
            if (!Dtypes.TryGetValue(dtype, out var info))
                throw Malformed(sourceName, $"tensor '{name}' has unsupported dtype '{dtype}'; expected one of {string.Join(", ", Dtypes.Keys)}");
            var shapeElement = property.Value.GetProperty("shape");
            if (shapeElement.ValueKind != JsonValueKind.Array)
                throw Malformed(sourceName, $"tensor '{name}' has a shape that is a JSON {shapeElement.ValueKind}; expected an array of sizes");
            if (shapeElement.GetArrayLength() > MaxDimensions)
                throw Malformed(sourceName, $"tensor '{name}' has {shapeElement.GetArrayLength()} dimensions; expected at most {MaxDimensions}");
            var shape = shapeElement.EnumerateArray().Select(e => e.GetInt64()).ToArray();
            if (shape.Any(d => d < 0))
                throw Malformed(sourceName, $"tensor '{name}' has shape {Check.Format(shape)}; expected no negative size");
            // An empty tensor's strides are still products of its other sizes; LibTorch refuses to create one
            // whose strides overflow (with an exception of its own), so such a shape is refused here.
            Int128 strides = 1;
            for (int i = 0; i < shape.Length && strides <= long.MaxValue; i++) strides *= Math.Max(shape[i], 1);
            if (strides > long.MaxValue)
                throw Malformed(sourceName, $"tensor '{name}' has shape {Check.Format(shape)}, whose sizes multiply past 2^63; expected a shape whose strides fit in 64 bits");
            var offsetsElement = property.Value.GetProperty("data_offsets");
            if (offsetsElement.ValueKind != JsonValueKind.Array)
                throw Malformed(sourceName, $"tensor '{name}' has data_offsets that are a JSON {offsetsElement.ValueKind}; expected [begin, end]");
            var offsets = offsetsElement.EnumerateArray().Select(e => e.GetInt64()).ToArray();
            if (offsets.Length != 2) throw Malformed(sourceName, $"tensor '{name}' has {offsets.Length} data offsets; expected 2");
            var (begin, end) = (offsets[0], offsets[1]);
            if (begin < 0 || end < begin)
                throw Malformed(sourceName, $"tensor '{name}' has data offsets [{begin}, {end}); expected 0 <= begin <= end");
            // In 128 bits, stopped once past any 64-bit size, so a shape of huge sizes cannot wrap into a match.
            Int128 needed = shape.Any(d => d == 0) ? 0 : info.Size;
            for (int i = 0; i < shape.Length && needed <= long.MaxValue; i++) needed *= shape[i];
            if (needed != end - begin)
                throw Malformed(sourceName,
                    $"tensor '{name}' {Check.Format(shape)} of {dtype} needs {(needed > long.MaxValue ? $"more than {long.MaxValue}" : needed.ToString())} bytes but its offsets [{begin}, {end}) span {end - begin}");
            return new Entry(name, info.Type, shape, begin, end);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"'{sourceName}': header entry '{name}' is malformed: {e.Message}", e);
        }
    }

    private static InvalidDataException Malformed(string sourceName, string why) => new($"'{sourceName}': {why}.");

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
