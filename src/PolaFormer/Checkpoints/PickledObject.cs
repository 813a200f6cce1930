namespace PolaFormer.Checkpoints;

/// <summary>
/// A Python object that a checkpoint's pickle builds from a class or function this reader does not model (e.g.
/// <c>yacs.config.CfgNode</c>, <c>argparse.Namespace</c>, numpy scalars, <c>torch.device</c>): kept opaque with what
/// the pickle said about it, so that a checkpoint carrying such entries still loads.
/// </summary>
public sealed class PickledObject
{
    private readonly List<object?> _listItems = [];
    private readonly Dictionary<object, object?> _dictItems = new(PickleKeyComparer.Instance);

    internal PickledObject(PickledGlobal callable, IReadOnlyList<object?> arguments,
        IReadOnlyDictionary<object, object?>? keywordArguments = null)
    {
        Callable = callable;
        Arguments = arguments;
        KeywordArguments = keywordArguments ?? new Dictionary<object, object?>();
    }

    /// <summary>The class or function that built the object.</summary>
    public PickledGlobal Callable { get; }

    /// <summary>Fully qualified Python name of <see cref="Callable"/>, e.g. <c>yacs.config.CfgNode</c>.</summary>
    public string ClassName => Callable.FullName;

    /// <summary>The positional arguments the pickle passed to <see cref="Callable"/>.</summary>
    public IReadOnlyList<object?> Arguments { get; }

    /// <summary>The keyword arguments (protocol 4's <c>NEWOBJ_EX</c> only; empty otherwise).</summary>
    public IReadOnlyDictionary<object, object?> KeywordArguments { get; }

    /// <summary>What the pickle's <c>BUILD</c> set (usually the instance's <c>__dict__</c> as a dictionary), or
    /// null.</summary>
    public object? State { get; internal set; }

    /// <summary>Items appended to the object (a <c>list</c> subclass).</summary>
    public IReadOnlyList<object?> ListItems => _listItems;

    /// <summary>Items set on the object (a <c>dict</c> subclass such as <c>yacs.config.CfgNode</c>), in pickle
    /// order.</summary>
    public IReadOnlyDictionary<object, object?> DictItems => _dictItems;

    internal void Append(object? item) => _listItems.Add(item);

    internal void SetItem(object key, object? value) => _dictItems[key] = value;

    /// <summary>The class name and the number of arguments.</summary>
    public override string ToString() => $"{ClassName}(<{Arguments.Count} argument(s)>)";
}
