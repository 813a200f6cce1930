using System.Globalization;
using PolaFormer.Checkpoints;
using static TorchSharp.torch;

namespace PolaFormer.Golden;

/// <summary>
/// One reference file made by running the authors' official PyTorch code (see Golden/README.md): the module's
/// state dict, its input, its outputs and gradients, and the hyper-parameters as metadata.
/// </summary>
public sealed class GoldenCase : IDisposable
{
    /// <summary>Folder named by this environment variable adds its *.safetensors files to the conformance tests.</summary>
    public const string ExtraFolderVariable = "POLAFORMER_GOLDEN_DIR";

    private const string BundledPrefix = "bundled/";
    private const string ExtraPrefix = "extra/";

    private readonly SafeTensorsFile _file;

    private GoldenCase(string id, string path)
    {
        Id = id;
        Path = path;
        _file = SafeTensors.Load(path);
        var folder = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(path)!, "f64");
        var companion = System.IO.Path.Combine(folder, System.IO.Path.GetFileName(path));
        // The PolaFormer++ cases name their companion <name>.f64.safetensors.
        if (!File.Exists(companion))
            companion = System.IO.Path.Combine(folder, System.IO.Path.GetFileNameWithoutExtension(path) + ".f64.safetensors");
        Float64 = File.Exists(companion) ? SafeTensors.Load(companion) : null;
    }

    public string Id { get; }
    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata => _file.Metadata;
    public IReadOnlyDictionary<string, Tensor> Tensors => _file.Tensors;

    /// <summary>The float64 reference outputs (the f64/ companion), when one exists.</summary>
    public SafeTensorsFile? Float64 { get; }

    public string Kind => Metadata["kind"];
    public string Module => Metadata["module"];

    public static string BundledFolder => System.IO.Path.Combine(AppContext.BaseDirectory, "Golden");

    /// <summary>File-name prefixes of the PolaFormer++ cases, whose layout differs (<c>param.</c>-prefixed state
    /// dicts, (B, C, H, W) inputs, rotary tables): only <see cref="PlusPlusIds"/> lists them.</summary>
    public static readonly IReadOnlyList<string> PlusPlusPrefixes = ["attnpp_", "modelpp_"];

    /// <summary>The ids of every PolaFormer case: the bundled files, then those of <see cref="ExtraFolderVariable"/>
    /// (PolaFormer++ cases excluded).</summary>
    public static IEnumerable<string> AllIds() =>
        IdsWhere(name => !PlusPlusPrefixes.Any(p => name.StartsWith(p, StringComparison.Ordinal)));

    /// <summary>The ids of the PolaFormer++ cases whose file name starts with <paramref name="prefix"/>
    /// (<c>attnpp_</c> or <c>modelpp_</c>), bundled then from <see cref="ExtraFolderVariable"/>.</summary>
    public static IEnumerable<string> PlusPlusIds(string prefix) =>
        IdsWhere(name => name.StartsWith(prefix, StringComparison.Ordinal));

    private static IEnumerable<string> IdsWhere(Func<string, bool> keep)
    {
        foreach (var f in Directory.EnumerateFiles(BundledFolder, "*.safetensors").Order())
            if (keep(System.IO.Path.GetFileName(f)))
                yield return BundledPrefix + System.IO.Path.GetFileName(f);
        var extra = Environment.GetEnvironmentVariable(ExtraFolderVariable);
        if (!string.IsNullOrWhiteSpace(extra) && Directory.Exists(extra))
            foreach (var f in Directory.EnumerateFiles(extra, "*.safetensors").Order())
                if (keep(System.IO.Path.GetFileName(f)))
                    yield return ExtraPrefix + System.IO.Path.GetFileName(f);
    }

    /// <summary>The <c>param.</c>-prefixed tensors of a PolaFormer++ case, keyed by their state-dict name.</summary>
    public Dictionary<string, Tensor> PrefixedStateDict(SafeTensorsFile? file = null) => (file?.Tensors ?? Tensors)
        .Where(kv => kv.Key.StartsWith("param.", StringComparison.Ordinal))
        .ToDictionary(kv => kv.Key["param.".Length..], kv => kv.Value);

    public static IEnumerable<string> IdsOfKind(string kind) => AllIds().Where(id =>
    {
        using var c = Open(id);
        return c.Kind == kind;
    });

    /// <summary>A golden file by path (its id is the file name).</summary>
    public static GoldenCase Load(string path) => new(System.IO.Path.GetFileName(path), path);

    public static GoldenCase Open(string id)
    {
        string folder = id.StartsWith(BundledPrefix, StringComparison.Ordinal)
            ? BundledFolder
            : Environment.GetEnvironmentVariable(ExtraFolderVariable)
              ?? throw new InvalidOperationException($"{ExtraFolderVariable} is not set but case '{id}' needs it.");
        var name = id[(id.IndexOf('/') + 1)..];
        return new GoldenCase(id, System.IO.Path.Combine(folder, name));
    }

    public Tensor this[string name] => Tensors.TryGetValue(name, out var t)
        ? t
        : throw new KeyNotFoundException($"Golden case {Id} has no tensor '{name}'.");

    /// <summary>The module's state dict: every tensor that is not an input, output, gradient or intermediate.</summary>
    public Dictionary<string, Tensor> StateDict() => Tensors
        .Where(kv => !(kv.Key.StartsWith("input.") || kv.Key.StartsWith("output.") || kv.Key.StartsWith("grad.") || kv.Key.StartsWith("inter.")))
        .ToDictionary(kv => kv.Key, kv => kv.Value);

    public string Text(string key) => Metadata.TryGetValue(key, out var v)
        ? v
        : throw new KeyNotFoundException($"Golden case {Id} has no metadata '{key}'.");

    public long Int(string key) => long.Parse(Text(key), CultureInfo.InvariantCulture);
    public double Real(string key) => double.Parse(Text(key), CultureInfo.InvariantCulture);
    public bool Flag(string key) => Text(key).Equals("true", StringComparison.OrdinalIgnoreCase);
    public long[] Ints(string key) => Text(key).Split(',').Select(s => long.Parse(s.Trim(), CultureInfo.InvariantCulture)).ToArray();
    public bool Has(string key) => Metadata.ContainsKey(key);

    public void Dispose()
    {
        _file.Dispose();
        Float64?.Dispose();
    }

    public override string ToString() => Id;
}
