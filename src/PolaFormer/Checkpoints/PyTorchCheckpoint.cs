using System.Collections.Frozen;
using System.IO.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Checkpoints;

/// <summary>
/// Reads checkpoints written by PyTorch's <c>torch.save</c> (the zip format of PyTorch 1.6 and later) without
/// Python: the authors' released files (<c>{'model': state_dict, 'optimizer': ..., 'config': ...}</c>, as the
/// Swin-derived training code saves them) and bare state dicts. Nothing in the file is executed; classes the reader
/// does not model become <see cref="PickledObject"/>s. Tensors are read onto the CPU whatever device they were
/// saved from.
/// </summary>
public static class PyTorchCheckpoint
{
    private const string ModulePrefix = "module.";

    /// <summary>Entries searched, in order, for the model's weights in a training checkpoint.</summary>
    private static readonly string[] StateDictEntries = ["model", "state_dict"];

    private static readonly FrozenDictionary<string, (ScalarType Type, int Size)> StorageTypes = new Dictionary<string, (ScalarType Type, int Size)>
    {
        ["FloatStorage"] = (ScalarType.Float32, 4), ["DoubleStorage"] = (ScalarType.Float64, 8),
        ["HalfStorage"] = (ScalarType.Float16, 2), ["BFloat16Storage"] = (ScalarType.BFloat16, 2),
        ["LongStorage"] = (ScalarType.Int64, 8), ["IntStorage"] = (ScalarType.Int32, 4),
        ["ShortStorage"] = (ScalarType.Int16, 2), ["CharStorage"] = (ScalarType.Int8, 1),
        ["ByteStorage"] = (ScalarType.Byte, 1), ["BoolStorage"] = (ScalarType.Bool, 1),
        ["ComplexFloatStorage"] = (ScalarType.ComplexFloat32, 8), ["ComplexDoubleStorage"] = (ScalarType.ComplexFloat64, 16),
        ["UntypedStorage"] = (ScalarType.Byte, 1),
    }.ToFrozenDictionary();

    /// <summary>
    /// Reads the model weights of a PyTorch checkpoint: the dictionary of tensors under <c>model</c>, else under
    /// <c>state_dict</c>, else the root itself when it is a dictionary of tensors. A <c>module.</c> prefix
    /// (DataParallel / DistributedDataParallel) is removed when every key has it. The other entries (optimizer,
    /// scheduler, config) are read, so that they cannot break loading, and dropped.
    /// </summary>
    /// <param name="path">A <c>.pth</c>/<c>.pt</c> file written by <c>torch.save</c>.</param>
    /// <returns>Tensors by name in the file's order, contiguous and on the CPU; the caller owns them.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotSupportedException">The file uses the legacy (pre-1.6) format, or a storage type
    /// TorchSharp has no dtype for.</exception>
    /// <exception cref="InvalidDataException">The file is truncated or corrupted, or holds no state dict (the
    /// message lists the top-level entries found).</exception>
    public static Dictionary<string, Tensor> ReadStateDict(string path)
    {
        var root = ReadObject(path);
        Dictionary<string, Tensor>? result = null;
        try
        {
            result = TakeStateDict(root, path);
            return result;
        }
        finally
        {
            // The optimizer state and anything else not handed to the caller.
            var kept = result is null ? [] : result.Values.ToHashSet(ReferenceEqualityComparer.Instance);
            foreach (var t in Tensors(root))
                if (!kept.Contains(t)) t.Dispose();
        }
    }

    /// <summary>
    /// Reads everything a checkpoint holds. Python values map to .NET ones: None → null, bool → bool,
    /// int → long (<see cref="System.Numerics.BigInteger"/> beyond 64 bits), float → double, str → string,
    /// bytes → byte[], tuple → object?[], list → List&lt;object?&gt;, dict and OrderedDict →
    /// Dictionary&lt;object, object?&gt; (file order), set → HashSet&lt;object?&gt;, tensor → <see cref="Tensor"/>
    /// (contiguous, on the CPU), any other object → <see cref="PickledObject"/>, a class reference →
    /// <see cref="PickledGlobal"/>.
    /// </summary>
    /// <param name="path">A file written by <c>torch.save</c>.</param>
    /// <returns>The root object; the caller owns (and disposes) the tensors in it.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotSupportedException">The file uses the legacy (pre-1.6) format, or a storage type
    /// TorchSharp has no dtype for.</exception>
    /// <exception cref="InvalidDataException">The file is truncated, corrupted or not a PyTorch checkpoint.</exception>
    public static object? ReadObject(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"No PyTorch checkpoint at '{path}'.", path);
        using var stream = File.OpenRead(path);
        CheckZipMagic(stream, path);
        stream.Position = 0;

        using var scope = NewDisposeScope();
        object? root;
        try
        {
            using var zip = new ZipArchive(stream, ZipArchiveMode.Read);
            root = new ArchiveReader(zip, path).Read();
        }
        // What ZipArchive and the streams throw on a damaged file does not name it; this reader's own messages do.
        catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or OverflowException
                                  && !e.Message.StartsWith($"'{path}'", StringComparison.Ordinal))
        {
            throw new InvalidDataException($"'{path}' is truncated or corrupted: {e.Message}", e);
        }
        scope.MoveToOuter(Tensors(root));
        return root;
    }

    /// <summary>Whether <paramref name="header"/> (the first bytes of a file) starts a zip archive.</summary>
    internal static bool IsZip(ReadOnlySpan<byte> header) =>
        header.Length >= 4 && header[0] == 'P' && header[1] == 'K' && header[2] is 3 or 5 && header[3] is 4 or 6;

    /// <summary>Whether <paramref name="header"/> starts a legacy (pre-1.6) <c>torch.save</c> file: a raw pickle
    /// whose first value is PyTorch's 10-byte magic number (PROTO n, LONG1 10). A safetensors file cannot start
    /// so: its header length would exceed 100 MB.</summary>
    internal static bool IsLegacy(ReadOnlySpan<byte> header) =>
        header.Length >= 4 && header[0] == 0x80 && header[1] is >= 2 and <= 5 && header[2] == 0x8A && header[3] == 0x0A;

    private static void CheckZipMagic(Stream stream, string path)
    {
        Span<byte> header = stackalloc byte[4];
        int read = stream.ReadAtLeast(header, 4, throwOnEndOfStream: false);
        if (IsZip(header[..read])) return;
        if (IsLegacy(header[..read]))
            throw new NotSupportedException(
                $"'{path}' uses PyTorch's legacy (pre-1.6) serialization format, which this reader does not support. " +
                "Re-save it with a newer PyTorch (torch.save(torch.load(path), new_path)) or convert it to safetensors.");
        throw new InvalidDataException($"'{path}' is not a PyTorch checkpoint: it does not start with a zip header (torch.save of PyTorch 1.6 or later).");
    }

    private static Dictionary<string, Tensor> TakeStateDict(object? root, string path)
    {
        Dictionary<object, object?>? found = null;
        if (root is Dictionary<object, object?> top)
        {
            foreach (var entry in StateDictEntries)
                if (top.TryGetValue(entry, out var candidate) && IsTensorDictionary(candidate))
                {
                    found = (Dictionary<object, object?>)candidate!;
                    break;
                }
            if (found is null && IsTensorDictionary(top)) found = top;
        }
        if (found is null) throw new InvalidDataException($"'{path}' holds no state dict: {DescribeRoot(root)}");

        var keys = found.Keys.Cast<string>().ToList();
        bool strip = keys.Count > 0 && keys.All(k => k.StartsWith(ModulePrefix, StringComparison.Ordinal));
        var result = new Dictionary<string, Tensor>();
        var taken = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var key in keys)
        {
            var tensor = (Tensor)found[key]!;
            // The same tensor may appear under two names (tied weights); each name gets its own.
            result[strip ? key[ModulePrefix.Length..] : key] = taken.Add(tensor) ? tensor : tensor.clone();
        }
        return result;
    }

    private static bool IsTensorDictionary(object? value) =>
        value is Dictionary<object, object?> dict && dict.All(kv => kv.Key is string && kv.Value is Tensor);

    private static string DescribeRoot(object? root)
    {
        const string expected = "expected a dictionary of tensors, or one under " + "'model' or 'state_dict'";
        return root switch
        {
            Dictionary<object, object?> dict => $"{expected}; its top-level entries are " +
                (dict.Count == 0 ? "none" : string.Join(", ", dict.Select(kv => $"'{kv.Key}' ({DescribeEntry(kv.Value)})"))) + ".",
            PickledObject o => $"{expected}; it holds a pickled {o.ClassName} (torch.save of a whole object?): save its state_dict() instead.",
            _ => $"{expected}; its root is a {PickleReader.Describe(root)}.",
        };
    }

    private static string DescribeEntry(object? value) => value switch
    {
        Dictionary<object, object?> dict when dict.Count > 0 && IsTensorDictionary(dict) => $"dict of {dict.Count} tensors",
        Dictionary<object, object?> dict => $"dict of {dict.Count}" +
            (dict.Any(kv => kv.Value is not Tensor) ? $", non-tensor values under {string.Join(", ", dict.Where(kv => kv.Value is not Tensor).Take(3).Select(kv => $"'{kv.Key}'"))}" : "") +
            (dict.Keys.Any(k => k is not string) ? ", non-string keys" : ""),
        Tensor t => $"tensor {Check.Format(t.shape)}",
        _ => PickleReader.Describe(value),
    };

    private static List<Tensor> Tensors(object? root)
    {
        var found = new List<Tensor>();
        Walk(root, new HashSet<object>(ReferenceEqualityComparer.Instance), found);
        return found;
    }

    private static void Walk(object? value, HashSet<object> seen, List<Tensor> found)
    {
        if (value is null or string or byte[] or long or double or bool || !seen.Add(value)) return;
        switch (value)
        {
            case Tensor t: found.Add(t); break;
            case Dictionary<object, object?> dict:
                foreach (var (k, v) in dict)
                {
                    Walk(k, seen, found);
                    Walk(v, seen, found);
                }
                break;
            case PickledObject o:
                foreach (var a in o.Arguments) Walk(a, seen, found);
                foreach (var a in o.KeywordArguments.Values) Walk(a, seen, found);
                foreach (var a in o.ListItems) Walk(a, seen, found);
                foreach (var (k, v) in o.DictItems)
                {
                    Walk(k, seen, found);
                    Walk(v, seen, found);
                }
                Walk(o.State, seen, found);
                break;
            case System.Collections.IEnumerable items:
                foreach (var item in items) Walk(item, seen, found);
                break;
        }
    }

    /// <summary>A storage named by a persistent id, read from the archive when a tensor first needs it.</summary>
    private sealed record StorageReference(string Key, string TypeName, ScalarType Type, int ElementSize, long Count);

    /// <summary>One pass over one archive: runs data.pkl and materializes the storages it references.</summary>
    private sealed class ArchiveReader(ZipArchive zip, string path)
    {
        private readonly Dictionary<string, Tensor> _storages = [];
        private string _prefix = "";
        private bool _bigEndian;

        public object? Read()
        {
            if (zip.Entries.Any(e => e.FullName.EndsWith("/constants.pkl", StringComparison.Ordinal)))
                throw new InvalidDataException($"'{path}' is a TorchScript archive (torch.jit.save), not a torch.save checkpoint: save the model's state_dict() with torch.save instead.");
            var pickles = zip.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) && e.FullName.Count(c => c == '/') == 1).ToList();
            if (pickles.Count != 1)
                throw Invalid($"a torch.save archive has exactly one '<name>/data.pkl'; this zip has {pickles.Count} (entries: {string.Join(", ", zip.Entries.Take(5).Select(e => e.FullName))}{(zip.Entries.Count > 5 ? ", ..." : "")})");
            _prefix = pickles[0].FullName[..^"data.pkl".Length];
            var byteOrder = zip.GetEntry(_prefix + "byteorder");
            if (byteOrder is not null)
            {
                var order = System.Text.Encoding.ASCII.GetString(ReadEntry(byteOrder)).Trim();
                _bigEndian = order switch
                {
                    "little" => false,
                    "big" => true,
                    _ => throw Invalid($"its byteorder entry says '{order}', neither 'little' nor 'big'"),
                };
            }
            var data = ReadEntry(pickles[0]);
            return new PickleReader(data, path, PersistentLoad, Rebuild).Load();
        }

        private object? PersistentLoad(object? id)
        {
            if (id is not object?[] { Length: 5 } tuple || tuple[0] is not "storage")
                throw Invalid($"a persistent id is {PickleReader.Describe(id)}; torch.save writes ('storage', type, key, location, numel)");
            if (tuple[1] is not PickledGlobal type || tuple[2] is not string key || tuple[4] is not long count || count < 0)
                throw Invalid("a storage's persistent id is malformed");
            if (!StorageTypes.TryGetValue(type.Name, out var info))
                throw new NotSupportedException($"'{path}' holds a storage of type {type.FullName}, for which TorchSharp has no dtype.");
            return new StorageReference(key, type.FullName, info.Type, info.Size, count);
        }

        private bool Rebuild(PickledGlobal callable, object?[] arguments, out object? result)
        {
            result = null;
            switch (callable.FullName)
            {
                // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
                case "torch._utils._rebuild_tensor_v2" or "torch._utils._rebuild_tensor":
                    if (arguments.Length < 4 || arguments[0] is not StorageReference storage)
                        throw Invalid($"{callable.FullName} has arguments ({string.Join(", ", arguments.Select(PickleReader.Describe))}); expected a storage, an offset, a size and a stride");
                    result = Tensor(storage, arguments[1], arguments[2], arguments[3], callable.FullName);
                    return true;
                // (data, requires_grad, backward_hooks[, state]): a saved nn.Parameter is its data here.
                case "torch._utils._rebuild_parameter" or "torch._utils._rebuild_parameter_with_state"
                    when arguments.Length > 0 && arguments[0] is Tensor:
                    result = arguments[0];
                    return true;
                // (func, type, args, state): a tensor subclass; its data is what func rebuilds.
                case "torch._tensor._rebuild_from_type_v2" or "torch._tensor._rebuild_from_type"
                    when arguments.Length > 2 && arguments[2] is object?[] { Length: > 0 } inner && inner[0] is Tensor:
                    result = inner[0];
                    return true;
                default:
                    return false;
            }
        }

        private Tensor Tensor(StorageReference storage, object? offsetValue, object? sizeValue, object? strideValue, string function)
        {
            if (offsetValue is not long offset || sizeValue is not object?[] sizeItems || strideValue is not object?[] strideItems
                || sizeItems.Any(s => s is not long) || strideItems.Any(s => s is not long) || sizeItems.Length != strideItems.Length)
                throw Invalid($"{function} has a malformed offset, size or stride for storage '{storage.Key}'");
            var size = sizeItems.Cast<long>().ToArray();
            var stride = strideItems.Cast<long>().ToArray();
            if (offset < 0 || size.Any(s => s < 0) || stride.Any(s => s < 0))
                throw Invalid($"a tensor of storage '{storage.Key}' has offset {offset}, size {Check.Format(size)}, stride {Check.Format(stride)}; none may be negative");
            var flat = Storage(storage);
            if (size.All(s => s > 0))
            {
                long last = checked(offset + size.Zip(stride).Sum(p => (p.First - 1) * p.Second));
                if (last >= storage.Count)
                    throw Invalid($"a tensor of size {Check.Format(size)}, stride {Check.Format(stride)} at offset {offset} reaches element {last} of storage '{storage.Key}', which has {storage.Count}");
            }
            // A view into a shared storage (a slice, a transpose, tied weights) becomes its own contiguous tensor.
            using var view = flat.as_strided(size, stride, offset);
            return view.is_contiguous() ? view.clone() : view.contiguous();
        }

        private Tensor Storage(StorageReference storage)
        {
            if (_storages.TryGetValue(storage.Key, out var cached)) return cached;
            var entry = zip.GetEntry($"{_prefix}data/{storage.Key}")
                ?? throw Invalid($"storage '{storage.Key}' ({storage.TypeName}) is missing from the archive");
            long bytes = checked(storage.Count * storage.ElementSize);
            if (entry.Length < bytes)
                throw Invalid($"storage '{storage.Key}' holds {entry.Length} bytes; {storage.Count} elements of {storage.TypeName} need {bytes}");
            var data = ReadEntry(entry);
            if (_bigEndian) SwapBytes(data, storage.ElementSize, storage.Type);
            else if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Reading PyTorch checkpoints needs a little-endian machine.");
            var flat = empty([storage.Count], dtype: storage.Type);
            if (bytes > 0) flat.bytes = data.AsSpan(0, (int)bytes);
            _storages[storage.Key] = flat;
            return flat;
        }

        private byte[] ReadEntry(ZipArchiveEntry entry)
        {
            if (entry.Length > Array.MaxLength) throw new NotSupportedException($"'{path}': entry '{entry.FullName}' is larger than 2 GB.");
            var data = new byte[entry.Length];
            using (var stream = entry.Open())
            {
                if (stream.ReadAtLeast(data, data.Length, throwOnEndOfStream: false) != data.Length)
                    throw Invalid($"entry '{entry.FullName}' is cut short");
            }
            // ZipArchive does not check the CRC: without this, a flipped byte would load as a wrong weight.
            if (Crc32.Compute(data) != entry.Crc32)
                throw Invalid($"entry '{entry.FullName}' fails its CRC check");
            return data;
        }

        private static void SwapBytes(byte[] data, int elementSize, ScalarType type)
        {
            // Complex numbers swap each of their two parts.
            int part = type is ScalarType.ComplexFloat32 or ScalarType.ComplexFloat64 ? elementSize / 2 : elementSize;
            if (part == 1) return;
            for (int i = 0; i + part <= data.Length; i += part) Array.Reverse(data, i, part);
        }

        private InvalidDataException Invalid(string why) => new($"'{path}' is truncated or corrupted: {why}.");
    }
}
