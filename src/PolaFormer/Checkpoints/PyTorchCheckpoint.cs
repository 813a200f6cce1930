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
/// <remarks>
/// A hostile file gets an <see cref="InvalidDataException"/> naming it, never a crash or a hang: every size the
/// archive declares is checked against the file before its buffer is allocated; every tensor view must lie within
/// its storage, and all views together (expanded stride-0 ones included) may take at most four times the bytes of
/// the storages plus 64 MB; one storage has one dtype and size; dictionary keys and set members may hold at most
/// 4096 tuple elements nested at most 64 deep; integers at most 1024 bytes; containers at most four elements per
/// byte of pickle plus about a million in all; tied weights are copied up to the size of the distinct tensors or
/// 64 MB. Nesting depth is not limited: the reader and its walks over the result are iterative.
/// </remarks>
public static class PyTorchCheckpoint
{
    private const string ModulePrefix = "module.";

    /// <summary>Top-level entries named in a "no state dict" message; a hostile root can have millions.</summary>
    private const int MaxListedEntries = 20;

    /// <summary>Bytes of copies for tied weights allowed whatever the distinct tensors' size.</summary>
    private const long MaxClonedBytes = 64L << 20;

    /// <summary>Copies of views allowed, in bytes, beyond <see cref="ViewBytesPerStorageByte"/> per storage byte.</summary>
    private const long ViewAllowanceBytes = 64L << 20;

    /// <summary>Bytes of tensors materialized per byte of storage read: views of one storage (slices, a transpose,
    /// q/k/v of one projection) copy it a few times over, never thousands of times.</summary>
    private const long ViewBytesPerStorageByte = 4;

    /// <summary>Most dimensions of one tensor (PyTorch itself refuses more than 64 in most kernels).</summary>
    private const int MaxDimensions = 64;

    /// <summary>Deflate expands at most 1032-fold; an entry declaring more than that is a lie (or a bomb) and is
    /// refused before its buffer is allocated.</summary>
    private const long MaxCompressionRatio = 1032;

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
    /// <exception cref="InvalidDataException">The file is truncated, corrupted or not a PyTorch checkpoint, or exceeds
    /// one of the bounds above (the message says which and what was expected).</exception>
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
            root = new ArchiveReader(zip, path, stream.Length).Read();
        }
        // What ZipArchive and the streams throw on a damaged file does not name it; this reader's own messages do.
        // NotSupportedException: what ZipArchive says of a zip feature it lacks (this reader's own messages name
        // the file; a big-endian machine's PlatformNotSupportedException is not the file's fault).
        catch (Exception e) when ((e is IOException or InvalidDataException or ArgumentException or OverflowException
                                   || e is NotSupportedException and not PlatformNotSupportedException)
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
        long distinctBytes = found.Values.Cast<Tensor>().Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>().Sum(Bytes);
        long clonedBytes = 0;
        try
        {
            foreach (var key in keys)
            {
                var tensor = (Tensor)found[key]!;
                if (taken.Add(tensor))
                {
                    result[strip ? key[ModulePrefix.Length..] : key] = tensor;
                    continue;
                }
                // The same tensor may appear under two names (tied weights); each name gets its own copy. A few
                // bytes of pickle can name one large tensor thousands of times, so the copies are bounded.
                clonedBytes += Bytes(tensor);
                if (clonedBytes > Math.Max(distinctBytes, MaxClonedBytes))
                    throw new InvalidDataException(
                        $"'{path}' is truncated or corrupted: its state dict names the same tensors so often that copying them would take more than " +
                        $"{Math.Max(distinctBytes, MaxClonedBytes)} bytes (tied weights repeat a few tensors; expected at most the size of the distinct tensors).");
                result[strip ? key[ModulePrefix.Length..] : key] = tensor.clone();
            }
        }
        catch
        {
            // The clones are not in the tree the caller's finally disposes.
            foreach (var t in result.Values)
                if (!taken.Contains(t)) t.Dispose();
            throw;
        }
        return result;
    }

    private static long Bytes(Tensor t) => t.numel() * t.ElementSize;

    private static bool IsTensorDictionary(object? value) =>
        value is Dictionary<object, object?> dict && dict.All(kv => kv.Key is string && kv.Value is Tensor);

    private static string DescribeRoot(object? root)
    {
        const string expected = "expected a dictionary of tensors, or one under " + "'model' or 'state_dict'";
        return root switch
        {
            Dictionary<object, object?> dict => $"{expected}; its top-level entries are " +
                (dict.Count == 0 ? "none" : string.Join(", ", dict.Take(MaxListedEntries).Select(kv => $"'{kv.Key}' ({DescribeEntry(kv.Value)})"))) +
                (dict.Count > MaxListedEntries ? $" and {dict.Count - MaxListedEntries} more" : "") + ".",
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

    /// <summary>Every tensor reachable from <paramref name="root"/>, each once. Iterative: a pickle can nest
    /// containers tens of thousands deep in a few kilobytes, which a recursive walk would answer with a stack
    /// overflow that kills the process.</summary>
    private static void Walk(object? root, HashSet<object> seen, List<Tensor> found)
    {
        var pending = new Stack<object?>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            var value = pending.Pop();
            if (value is null or string or byte[] or long or double or bool || !seen.Add(value)) continue;
            switch (value)
            {
                case Tensor t: found.Add(t); break;
                case Dictionary<object, object?> dict:
                    foreach (var (k, v) in dict)
                    {
                        pending.Push(k);
                        pending.Push(v);
                    }
                    break;
                case PickledObject o:
                    foreach (var a in o.Arguments) pending.Push(a);
                    foreach (var a in o.KeywordArguments.Values) pending.Push(a);
                    foreach (var a in o.ListItems) pending.Push(a);
                    foreach (var (k, v) in o.DictItems)
                    {
                        pending.Push(k);
                        pending.Push(v);
                    }
                    pending.Push(o.State);
                    break;
                case System.Collections.IEnumerable items:
                    foreach (var item in items) pending.Push(item);
                    break;
            }
        }
    }

    /// <summary>A storage named by a persistent id, read from the archive when a tensor first needs it.</summary>
    private sealed record StorageReference(string Key, string TypeName, ScalarType Type, int ElementSize, long Count);

    /// <summary>One pass over one archive: runs data.pkl and materializes the storages it references.</summary>
    private sealed class ArchiveReader(ZipArchive zip, string path, long _fileLength)
    {
        private readonly Dictionary<string, Tensor> _storages = [];
        private readonly Dictionary<string, StorageReference> _declared = [];
        private long _storageBytes;
        private long _viewBytes;
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
            var reference = new StorageReference(key, type.FullName, info.Type, info.Size, count);
            // One storage is one block of bytes of one dtype: read as two, one of its tensors would silently get
            // the other's bits.
            if (_declared.TryGetValue(key, out var earlier))
            {
                if (earlier.TypeName != reference.TypeName || earlier.Count != reference.Count)
                    throw Invalid($"storage '{key}' is declared as {earlier.Count} elements of {earlier.TypeName} and again as {count} elements of {type.FullName}; expected one dtype and size per storage");
                return earlier;
            }
            _declared[key] = reference;
            return reference;
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
            if (size.Length > MaxDimensions)
                throw Invalid($"a tensor of storage '{storage.Key}' has {size.Length} dimensions; expected at most {MaxDimensions}");
            if (offset < 0 || size.Any(s => s < 0) || stride.Any(s => s < 0))
                throw Invalid($"a tensor of storage '{storage.Key}' has offset {offset}, size {Check.Format(size)}, stride {Check.Format(stride)}; none may be negative");
            if (offset > storage.Count)
                throw Invalid($"a tensor of storage '{storage.Key}' starts at element {offset}; the storage has {storage.Count}");
            Int128 last = offset;
            if (!size.Contains(0))
                for (int i = 0; i < size.Length && last < storage.Count; i++) last += (Int128)(size[i] - 1) * stride[i];
            if (last > storage.Count || (last == storage.Count && !size.Contains(0)))
                throw Invalid($"a tensor of size {Check.Format(size)}, stride {Check.Format(stride)} at offset {offset} reaches element {last} of storage '{storage.Key}', " +
                              $"which has {storage.Count}; expected every element within the storage");
            if (size.Contains(0))
            {
                // Empty, but its strides are products of the other sizes, which LibTorch refuses (with an
                // exception of its own) when they overflow.
                Int128 strides = 1;
                for (int i = 0; i < size.Length && strides <= long.MaxValue; i++) strides *= Math.Max(size[i], 1);
                if (strides > long.MaxValue)
                    throw Invalid($"an empty tensor of storage '{storage.Key}' has size {Check.Format(size)}, whose sizes multiply past 2^63; expected sizes whose strides fit in 64 bits");
                return zeros(size, dtype: storage.Type);
            }

            var flat = Storage(storage);
            // A view may hold more elements than its storage (an expand: stride 0), and many views may share one
            // storage; together they are bounded by the bytes the archive really holds, before anything is
            // allocated, so a few hundred bytes of pickle cannot ask for gigabytes. In 128 bits and stopped once
            // past the budget, so the product cannot overflow.
            long budget = ViewAllowanceBytes + ViewBytesPerStorageByte * _storageBytes;
            Int128 bytes = storage.ElementSize;
            for (int i = 0; i < size.Length && bytes <= budget; i++) bytes *= size[i];
            if (_viewBytes + bytes > budget)
                throw Invalid($"a tensor of size {Check.Format(size)}, stride {Check.Format(stride)} from storage '{storage.Key}' needs " +
                              $"{(bytes > budget ? $"more than {budget}" : bytes.ToString())} bytes; with the {_viewBytes} bytes of tensors before it that exceeds {budget} bytes, " +
                              $"{ViewBytesPerStorageByte} times the {_storageBytes} bytes of its storages plus {ViewAllowanceBytes}; " +
                              "expected views (slices, transposes, expanded stride-0 views) that copy each storage a few times at most");
            _viewBytes += (long)bytes;
            // A view into a shared storage (a slice, a transpose, tied weights) becomes its own contiguous tensor.
            using var view = flat.as_strided(size, stride, offset);
            return view.is_contiguous() ? view.clone() : view.contiguous();
        }

        private Tensor Storage(StorageReference storage)
        {
            if (_storages.TryGetValue(storage.Key, out var cached)) return cached;
            var entry = zip.GetEntry($"{_prefix}data/{storage.Key}")
                ?? throw Invalid($"storage '{storage.Key}' ({storage.TypeName}) is missing from the archive");
            if (storage.Count > entry.Length / storage.ElementSize)
                throw Invalid($"storage '{storage.Key}' holds {entry.Length} bytes; {storage.Count} elements of {storage.TypeName} need {(decimal)storage.Count * storage.ElementSize}");
            long bytes = storage.Count * storage.ElementSize;
            var data = ReadEntry(entry);
            if (_bigEndian) SwapBytes(data, storage.ElementSize, storage.Type);
            else if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Reading PyTorch checkpoints needs a little-endian machine.");
            var flat = empty([storage.Count], dtype: storage.Type);
            if (bytes > 0) flat.bytes = data.AsSpan(0, (int)bytes);
            _storages[storage.Key] = flat;
            _storageBytes += bytes;
            return flat;
        }

        private byte[] ReadEntry(ZipArchiveEntry entry)
        {
            if (entry.Length > Array.MaxLength) throw new NotSupportedException($"'{path}': entry '{entry.FullName}' is larger than 2 GB.");
            // The central directory's sizes are claims: checked against the file before the buffer is allocated.
            if (entry.CompressedLength > _fileLength)
                throw Invalid($"entry '{entry.FullName}' claims {entry.CompressedLength} stored bytes; the whole file has {_fileLength}");
            if (entry.Length > MaxCompressionRatio * Math.Max(entry.CompressedLength, 1))
                throw Invalid($"entry '{entry.FullName}' claims to expand from {entry.CompressedLength} to {entry.Length} bytes; expected at most {MaxCompressionRatio} times (deflate's limit)");
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
