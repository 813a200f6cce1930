using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace PolaFormer.Checkpoints;

/// <summary>Builds what a call in a pickle (<c>REDUCE</c>, <c>NEWOBJ</c>) produces when the caller models the
/// callable; returns false to let the reader apply its own rules.</summary>
internal delegate bool PickleCallHandler(PickledGlobal callable, object?[] arguments, out object? result);

/// <summary>
/// A minimal pickle virtual machine (protocols 0-5, without out-of-band buffers or the extension registry) that
/// never executes anything: Python values become .NET values and every class or function call it does not model
/// becomes a <see cref="PickledObject"/>.
/// </summary>
/// <remarks>
/// Mapping: None → null, bool → bool, int → long (or <see cref="BigInteger"/> beyond 64 bits), float → double,
/// str → string, bytes/bytearray → byte[], tuple → object?[], list → List&lt;object?&gt;,
/// dict/OrderedDict → Dictionary&lt;object, object?&gt; (insertion order, tuples compared by value),
/// set/frozenset → HashSet&lt;object?&gt;, class reference → <see cref="PickledGlobal"/>.
/// </remarks>
internal sealed class PickleReader
{
    /// <summary>Most bytes in one LONG1/LONG4 integer or digits in one text integer: Python checkpoints hold
    /// small integers, and parsing a huge one costs time quadratic in its length.</summary>
    internal const int MaxIntegerBytes = 1024;

    /// <summary>Most tuple nodes (counting a tuple shared twice twice) in one dictionary key or set member: the
    /// key comparer hashes and compares tuples by value, so a key built from shared tuples (t = (t, t) eighty deep)
    /// would otherwise take exponential time.</summary>
    internal const int MaxKeyNodes = 4096;

    /// <summary>Deepest nesting of tuples in one dictionary key or set member (keeps the comparer's recursion
    /// shallow).</summary>
    internal const int MaxKeyDepth = 64;

    /// <summary>Elements every container may hold, all together, beyond four per byte of the pickle: each opcode
    /// adds at most a few elements, but calls such as list(x) copy a container, and a pickle that copies a large
    /// list thousands of times would otherwise take gigabytes from a few kilobytes.</summary>
    private const long ElementAllowance = 1 << 20;

    private readonly byte[] _data;
    private readonly string _source;
    private readonly Func<object?, object?> _persistentLoad;
    private readonly PickleCallHandler? _handler;
    private readonly List<object?> _stack = [];
    private readonly Stack<int> _marks = new();
    private readonly Dictionary<long, object?> _memo = [];
    private readonly HashSet<object?[]> _checkedKeys = new(ReferenceEqualityComparer.Instance);
    private readonly long _elementBudget;
    private long _elements;
    private int _position;

    /// <param name="data">The pickle stream.</param>
    /// <param name="source">Named in error messages.</param>
    /// <param name="persistentLoad">Resolves persistent ids (<c>PERSID</c>, <c>BINPERSID</c>).</param>
    /// <param name="handler">Models some callables; the others follow the reader's rules.</param>
    public PickleReader(byte[] data, string source, Func<object?, object?> persistentLoad, PickleCallHandler? handler = null)
    {
        _data = data;
        _source = source;
        _persistentLoad = persistentLoad;
        _handler = handler;
        _elementBudget = ElementAllowance + 4L * data.Length;
    }

    /// <summary>Runs the pickle to its <c>STOP</c> and returns the object it built.</summary>
    /// <exception cref="InvalidDataException">The pickle is truncated or malformed.</exception>
    public object? Load()
    {
        while (true)
        {
            if (_position >= _data.Length) throw Corrupt("it ends without a STOP opcode (truncated)");
            int opcodeAt = _position;
            byte op = _data[_position++];
            switch (op)
            {
                case 0x80: // PROTO
                    if (ReadByte() > 5) throw Corrupt($"pickle protocol {_data[_position - 1]} is newer than 5");
                    break;
                case 0x95: // FRAME: frames only group opcodes for buffered reading
                    Take(8);
                    break;
                case (byte)'.': // STOP
                    if (_stack.Count != 1 || _marks.Count != 0) throw Corrupt($"STOP at byte {opcodeAt} leaves {_stack.Count} values on the stack");
                    return Pop();
                case (byte)'(': _marks.Push(_stack.Count); break; // MARK
                case (byte)'0': Pop(); break; // POP
                case (byte)'1': PopToMark(); break; // POP_MARK
                case (byte)'2': Push(Peek()); break; // DUP

                case (byte)'N': Push(null); break; // NONE
                case 0x88: Push(true); break; // NEWTRUE
                case 0x89: Push(false); break; // NEWFALSE
                case (byte)'I': // INT (protocol 0; "00"/"01" are False/True)
                {
                    var line = ReadLine();
                    Push(line switch { "00" => false, "01" => true, _ => ParseInteger(line) });
                    break;
                }
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break; // BININT
                case (byte)'K': Push((long)ReadByte()); break; // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break; // BININT2
                case (byte)'L': Push(ParseInteger(ReadLine().TrimEnd('L'))); break; // LONG
                case 0x8a: Push(ReadLittleEndianInteger(ReadByte(), "LONG1", opcodeAt)); break; // LONG1
                case 0x8b: Push(ReadLittleEndianInteger(ReadLength(4), "LONG4", opcodeAt)); break; // LONG4
                case (byte)'F': Push(ParseFloat(ReadLine())); break; // FLOAT
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break; // BINFLOAT

                case (byte)'S': Push(ParseQuotedString(ReadLine())); break; // STRING (protocol 0 repr)
                case (byte)'T': Push(Encoding.Latin1.GetString(Take(ReadLength(4)))); break; // BINSTRING
                case (byte)'U': Push(Encoding.Latin1.GetString(Take(ReadByte()))); break; // SHORT_BINSTRING
                case (byte)'V': Push(DecodeRawUnicodeEscape(ReadLine())); break; // UNICODE
                case (byte)'X': Push(Utf8(Take(ReadLength(4)))); break; // BINUNICODE
                case 0x8c: Push(Utf8(Take(ReadByte()))); break; // SHORT_BINUNICODE
                case 0x8d: Push(Utf8(Take(ReadLength(8)))); break; // BINUNICODE8
                case (byte)'B': Push(Take(ReadLength(4)).ToArray()); break; // BINBYTES
                case (byte)'C': Push(Take(ReadByte()).ToArray()); break; // SHORT_BINBYTES
                case 0x8e: // BINBYTES8
                case 0x96: // BYTEARRAY8
                    Push(Take(ReadLength(8)).ToArray());
                    break;

                case (byte)']': Push(new List<object?>()); break; // EMPTY_LIST
                case (byte)'}': Push(NewDictionary()); break; // EMPTY_DICT
                case (byte)')': Push(Array.Empty<object?>()); break; // EMPTY_TUPLE
                case 0x8f: Push(new HashSet<object?>(PickleKeyComparer.Instance)); break; // EMPTY_SET
                case (byte)'l': Push(new List<object?>(PopToMark())); break; // LIST
                case (byte)'t': Push(PopToMark()); break; // TUPLE
                case 0x85: Push(new[] { Pop() }); break; // TUPLE1
                case 0x86: // TUPLE2
                {
                    var b = Pop();
                    Push(new[] { Pop(), b });
                    break;
                }
                case 0x87: // TUPLE3
                {
                    var c = Pop();
                    var b = Pop();
                    Push(new[] { Pop(), b, c });
                    break;
                }
                case (byte)'d': // DICT
                {
                    var dict = NewDictionary();
                    SetItems(dict, PopToMark());
                    Push(dict);
                    break;
                }
                case 0x91: Push(NewSet(PopToMark())); break; // FROZENSET
                case 0x90: // ADDITEMS
                {
                    var items = PopToMark();
                    if (Peek() is not HashSet<object?> set) throw Corrupt($"ADDITEMS at byte {opcodeAt} targets a {Describe(Peek())}, not a set");
                    foreach (var item in items) set.Add(CheckKey(item));
                    break;
                }
                case (byte)'a': // APPEND
                {
                    var item = Pop();
                    Append(Peek(), item, opcodeAt);
                    break;
                }
                case (byte)'e': // APPENDS
                {
                    var items = PopToMark();
                    var target = Peek();
                    foreach (var item in items) Append(target, item, opcodeAt);
                    break;
                }
                case (byte)'s': // SETITEM
                {
                    var value = Pop();
                    var key = Pop();
                    SetItems(Peek(), [key, value]);
                    break;
                }
                case (byte)'u': // SETITEMS
                {
                    var items = PopToMark();
                    SetItems(Peek(), items);
                    break;
                }

                case (byte)'c': Push(new PickledGlobal(ReadLine(), ReadLine())); break; // GLOBAL
                case 0x93: // STACK_GLOBAL
                {
                    var name = Pop();
                    var module = Pop();
                    if (module is not string m || name is not string n) throw Corrupt($"STACK_GLOBAL at byte {opcodeAt} needs two strings");
                    Push(new PickledGlobal(m, n));
                    break;
                }
                case (byte)'R': // REDUCE
                {
                    var arguments = Pop();
                    var callable = Pop();
                    Push(Call(callable, AsTuple(arguments, "REDUCE", opcodeAt), null));
                    break;
                }
                case 0x81: // NEWOBJ
                {
                    var arguments = Pop();
                    var cls = Pop();
                    Push(Call(cls, AsTuple(arguments, "NEWOBJ", opcodeAt), null));
                    break;
                }
                case 0x92: // NEWOBJ_EX
                {
                    var keywords = Pop() as Dictionary<object, object?>;
                    var arguments = Pop();
                    var cls = Pop();
                    Push(Call(cls, AsTuple(arguments, "NEWOBJ_EX", opcodeAt), keywords));
                    break;
                }
                case (byte)'i': // INST
                {
                    var cls = new PickledGlobal(ReadLine(), ReadLine());
                    Push(Call(cls, PopToMark(), null));
                    break;
                }
                case (byte)'o': // OBJ
                {
                    var items = PopToMark();
                    if (items.Length == 0) throw Corrupt($"OBJ at byte {opcodeAt} has no class");
                    Push(Call(items[0], items[1..], null));
                    break;
                }
                case (byte)'b': // BUILD
                {
                    var state = Pop();
                    // Dictionaries (an OrderedDict's attributes such as a state dict's _metadata) and tensors keep
                    // what they are; only opaque objects record their state.
                    if (Peek() is PickledObject o) o.State = state;
                    break;
                }

                case (byte)'p': _memo[ParseIndex(ReadLine())] = Peek(); break; // PUT
                case (byte)'q': _memo[ReadByte()] = Peek(); break; // BINPUT
                case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = Peek(); break; // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(); break; // MEMOIZE
                case (byte)'g': Push(Recall(ParseIndex(ReadLine()), opcodeAt)); break; // GET
                case (byte)'h': Push(Recall(ReadByte(), opcodeAt)); break; // BINGET
                case (byte)'j': Push(Recall(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)), opcodeAt)); break; // LONG_BINGET

                case (byte)'P': Push(_persistentLoad(ReadLine())); break; // PERSID
                case (byte)'Q': Push(_persistentLoad(Pop())); break; // BINPERSID

                case 0x82 or 0x83 or 0x84: // EXT1, EXT2, EXT4
                    throw Corrupt($"it uses the copyreg extension registry (opcode 0x{op:X2} at byte {opcodeAt}), which PyTorch checkpoints never do");
                case 0x97 or 0x98: // NEXT_BUFFER, READONLY_BUFFER
                    throw Corrupt($"it uses out-of-band buffers (opcode 0x{op:X2} at byte {opcodeAt}), which PyTorch checkpoints never do");
                default:
                    throw Corrupt($"unknown opcode 0x{op:X2} at byte {opcodeAt}");
            }
        }
    }

    internal static Dictionary<object, object?> NewDictionary() => new(PickleKeyComparer.Instance);

    private object? Call(object? callable, object?[] arguments, Dictionary<object, object?>? keywords)
    {
        if (callable is not PickledGlobal global)
            // Calling something that is not a named class (e.g. a bound method object): keep it opaque.
            return new PickledObject(new PickledGlobal("<call>", Describe(callable)), arguments, keywords);
        if (_handler is not null && _handler(global, arguments, out var handled)) return handled;
        switch (global.FullName)
        {
            case "collections.OrderedDict" or "builtins.dict" or "__builtin__.dict":
            {
                var dict = NewDictionary();
                if (arguments.Length > 0 && arguments[0] is IEnumerable<object?> pairs)
                    foreach (var pair in Copy(pairs))
                        if (pair is object?[] { Length: 2 } kv) SetItems(dict, kv);
                return dict;
            }
            case "builtins.list" or "__builtin__.list":
                return arguments.Length > 0 && arguments[0] is IEnumerable<object?> items ? new List<object?>(Copy(items)) : new List<object?>();
            case "builtins.set" or "builtins.frozenset" or "__builtin__.set" or "__builtin__.frozenset":
                return arguments.Length > 0 && arguments[0] is IEnumerable<object?> members
                    ? NewSet(Copy(members))
                    : new HashSet<object?>(PickleKeyComparer.Instance);
            // Protocol 2 has no bytes opcode: Python 3 writes bytes as _codecs.encode(text, 'latin1').
            case "_codecs.encode" when arguments is [string text, string encoding]:
                // A call copies its text: charged (a pointer's worth per 8 characters) so repeated calls stay bounded.
                Charge(text.Length / 8);
                return encoding.Replace("-", "").Replace("_", "").ToLowerInvariant() is "latin1" or "iso88591"
                    ? Encoding.Latin1.GetBytes(text)
                    : Encoding.UTF8.GetBytes(text);
            case "_codecs.encode" when arguments is [string text]:
                return Encoding.UTF8.GetBytes(text);
            case "builtins.bytearray" or "builtins.bytes" when arguments is [byte[] bytes, ..]:
                return bytes;
            case "builtins.bytearray" or "builtins.bytes" when arguments is [string text, ..]:
                return Encoding.Latin1.GetBytes(text);
            // Protocols 0 and 1 write new-style instances as copyreg._reconstructor(cls, base, state).
            case "copyreg._reconstructor" when arguments is [PickledGlobal cls, ..]:
                return new PickledObject(cls, arguments[1..]);
            default:
                return new PickledObject(global, arguments, keywords);
        }
    }

    private void Append(object? target, object? item, int opcodeAt)
    {
        switch (target)
        {
            case List<object?> list: list.Add(item); break;
            case PickledObject o: o.Append(item); break;
            default: throw Corrupt($"APPEND at byte {opcodeAt} targets a {Describe(target)}, not a list");
        }
    }

    private void SetItems(object? target, object?[] keysAndValues)
    {
        if (keysAndValues.Length % 2 != 0) throw Corrupt($"a dictionary update has {keysAndValues.Length} items, not key/value pairs");
        for (int i = 0; i < keysAndValues.Length; i += 2)
        {
            var key = keysAndValues[i] ?? throw new NotSupportedException($"'{_source}' has a dictionary keyed by None, which this reader does not represent.");
            CheckKey(key);
            switch (target)
            {
                case Dictionary<object, object?> dict: dict[key] = keysAndValues[i + 1]; break;
                case PickledObject o: o.SetItem(key, keysAndValues[i + 1]); break;
                default: throw Corrupt($"SETITEM targets a {Describe(target)}, not a dictionary");
            }
        }
    }

    private object?[] AsTuple(object? value, string opcode, int opcodeAt) => value switch
    {
        object?[] tuple => tuple,
        List<object?> list => Copy(list),
        _ => throw Corrupt($"{opcode} at byte {opcodeAt} expects an argument tuple, found a {Describe(value)}"),
    };

    /// <summary>Copies a container's elements, charging them to the element budget first.</summary>
    private object?[] Copy(IEnumerable<object?> items)
    {
        var copy = new List<object?>();
        foreach (var item in items)
        {
            Charge(1);
            copy.Add(item);
        }
        return copy.ToArray();
    }

    private void Charge(long count)
    {
        _elements += count;
        if (_elements > _elementBudget)
            throw Corrupt($"its containers hold more than {_elementBudget} elements in all (four per byte of pickle plus {ElementAllowance}); " +
                          "a checkpoint's pickle adds a few elements per opcode, so this one copies containers over and over");
    }

    private HashSet<object?> NewSet(object?[] members)
    {
        var set = new HashSet<object?>(PickleKeyComparer.Instance);
        foreach (var member in members) set.Add(CheckKey(member));
        return set;
    }

    /// <summary>Refuses a dictionary key or set member whose tuples are too many or too deep to hash and compare in
    /// bounded time; other values hash in constant time (lists, dicts and objects by reference).</summary>
    private object? CheckKey(object? key)
    {
        // A tuple used as a key many times (through the memo) is walked once.
        if (key is not object?[] root || _checkedKeys.Contains(root)) return key;
        long nodes = 0;
        var pending = new Stack<(object?[] Tuple, int Depth)>();
        pending.Push((root, 1));
        while (pending.Count > 0)
        {
            var (tuple, depth) = pending.Pop();
            if (depth > MaxKeyDepth)
                throw Corrupt($"a dictionary key or set member is a tuple nested more than {MaxKeyDepth} deep; expected a flat key such as a string or a short tuple");
            // Counted as the comparer walks it: a tuple referenced twice is hashed twice.
            nodes += 1 + tuple.Length;
            if (nodes > MaxKeyNodes)
                throw Corrupt($"a dictionary key or set member is a tuple of more than {MaxKeyNodes} elements (shared sub-tuples counted each time they appear); expected a flat key such as a string or a short tuple");
            foreach (var item in tuple)
                if (item is object?[] inner) pending.Push((inner, depth + 1));
        }
        _checkedKeys.Add(root);
        return key;
    }

    private object? Recall(long index, int opcodeAt) =>
        _memo.TryGetValue(index, out var value) ? value : throw Corrupt($"GET at byte {opcodeAt} recalls memo slot {index}, which was never stored");

    private void Push(object? value)
    {
        Charge(1);
        _stack.Add(value);
    }

    private object? Peek()
    {
        if (_stack.Count == 0 || (_marks.Count > 0 && _marks.Peek() == _stack.Count))
            throw Corrupt($"stack underflow at byte {_position - 1}");
        return _stack[^1];
    }

    private object? Pop()
    {
        var value = Peek();
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private object?[] PopToMark()
    {
        if (_marks.Count == 0) throw Corrupt($"an opcode at byte {_position - 1} needs a MARK and there is none");
        int start = _marks.Pop();
        var items = _stack.GetRange(start, _stack.Count - start).ToArray();
        _stack.RemoveRange(start, _stack.Count - start);
        return items;
    }

    private byte ReadByte()
    {
        if (_position >= _data.Length) throw Corrupt("it is truncated");
        return _data[_position++];
    }

    private ReadOnlySpan<byte> Take(long count)
    {
        if (count < 0 || count > _data.Length - _position)
            throw Corrupt($"a {count}-byte field at byte {_position} runs past its end ({_data.Length} bytes)");
        var span = _data.AsSpan(_position, (int)count);
        _position += (int)count;
        return span;
    }

    private long ReadLength(int size)
    {
        var bytes = Take(size);
        return size switch
        {
            4 => BinaryPrimitives.ReadUInt32LittleEndian(bytes),
            _ => (long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(bytes), long.MaxValue),
        };
    }

    private string ReadLine()
    {
        int end = Array.IndexOf(_data, (byte)'\n', _position);
        if (end < 0) throw Corrupt($"a text field at byte {_position} has no end of line");
        var line = Encoding.UTF8.GetString(_data, _position, end - _position);
        _position = end + 1;
        return line;
    }

    private string Utf8(ReadOnlySpan<byte> bytes)
    {
        try { return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes); }
        catch (DecoderFallbackException) { throw Corrupt($"a string ending at byte {_position} is not valid UTF-8"); }
    }

    private object ReadLittleEndianInteger(long length, string opcode, int opcodeAt)
    {
        if (length > MaxIntegerBytes)
            throw Corrupt($"{opcode} at byte {opcodeAt} holds a {length}-byte integer; expected at most {MaxIntegerBytes} bytes");
        var bytes = Take(length);
        // Python writes the shortest two's-complement form; an empty one is zero.
        return bytes.Length == 0 ? 0L : Normalize(new BigInteger(bytes, isUnsigned: false, isBigEndian: false));
    }

    private object ParseInteger(string text) =>
        text.Length > MaxIntegerBytes
            ? throw Corrupt($"a text integer has {text.Length} characters; expected at most {MaxIntegerBytes}")
            : BigInteger.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value)
            ? Normalize(value)
            : throw Corrupt($"'{text}' is not an integer");

    private long ParseIndex(string text) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : throw Corrupt($"'{text}' is not a memo index");

    private double ParseFloat(string text) => text switch
    {
        "inf" => double.PositiveInfinity,
        "-inf" => double.NegativeInfinity,
        "nan" => double.NaN,
        _ => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) ? value : throw Corrupt($"'{text}' is not a float"),
    };

    // The cast to object matters: without it the conditional's type is BigInteger, and every integer read through
    // here (LONG1, LONG4, text integers) came out as a BigInteger that the tensor and storage checks refused.
    private static object Normalize(BigInteger value) =>
        value >= long.MinValue && value <= long.MaxValue ? (object)(long)value : value;

    private string ParseQuotedString(string text)
    {
        if (text.Length < 2 || text[0] != text[^1] || text[0] is not ('\'' or '"'))
            throw Corrupt($"STRING argument {text} is not quoted");
        try { return System.Text.RegularExpressions.Regex.Unescape(text[1..^1]); }
        catch (ArgumentException e) { throw Corrupt($"STRING argument {text} has an invalid escape ({e.Message})"); }
    }

    private string DecodeRawUnicodeEscape(string text) =>
        System.Text.RegularExpressions.Regex.Replace(text, @"\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})", m =>
        {
            long code = long.Parse(m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            // Lone surrogates and values past U+10FFFF are no characters .NET strings can decode to.
            if (code > 0x10FFFF || code is >= 0xD800 and <= 0xDFFF)
                throw Corrupt($"UNICODE argument has escape {m.Value}, which is not a Unicode scalar value");
            return char.ConvertFromUtf32((int)code);
        });

    internal static string Describe(object? value) => value switch
    {
        null => "None",
        bool => "bool",
        long or BigInteger => "int",
        double => "float",
        string => "str",
        byte[] => "bytes",
        object?[] t => $"tuple of {t.Length}",
        List<object?> l => $"list of {l.Count}",
        Dictionary<object, object?> d => $"dict of {d.Count}",
        HashSet<object?> => "set",
        PickledObject o => o.ClassName,
        PickledGlobal g => $"reference to {g.FullName}",
        _ => value.GetType().Name,
    };

    private InvalidDataException Corrupt(string why) => new($"'{_source}' is corrupted: {why}.");
}

/// <summary>Dictionary-key equality as Python sees it for the values a pickle produces: tuples compare by value.</summary>
internal sealed class PickleKeyComparer : IEqualityComparer<object?>
{
    public static readonly PickleKeyComparer Instance = new();

    // Tuples reach here only after PickleReader.CheckKey bounded their size and depth, so the recursion is bounded.
    public new bool Equals(object? x, object? y) => (x, y) switch
    {
        (object?[] a, object?[] b) => ReferenceEquals(a, b) || (a.Length == b.Length && a.Zip(b).All(p => Equals(p.First, p.Second))),
        _ => object.Equals(x, y),
    };

    public int GetHashCode(object? value) => value switch
    {
        null => 0,
        // HashCode is seeded per process, so a file cannot choose tuples whose hashes collide by arithmetic.
        object?[] tuple => tuple.Aggregate(new HashCode(), (h, item) => { h.Add(GetHashCode(item)); return h; }).ToHashCode(),
        _ => value.GetHashCode(),
    };
}
