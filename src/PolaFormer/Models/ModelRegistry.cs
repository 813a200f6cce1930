using System.Collections.Frozen;
using static TorchSharp.torch;

namespace PolaFormer.Models;

/// <summary>A registered model configuration.</summary>
/// <param name="Name">Registry name, e.g. <c>pola_swin_tiny</c>.</param>
/// <param name="Family">Model family: PVT, Swin or ViT.</param>
/// <param name="InputSize">Image size (height, width) the preset is built and trained for.</param>
/// <param name="Attention">Per-stage attention kinds, e.g. "LLSS".</param>
/// <param name="ReportedTop1">ImageNet-1k top-1 (%) the authors report for their released checkpoint, where they
/// report one.</param>
public sealed record ModelInfo(string Name, string Family, (long Height, long Width) InputSize, string Attention, double? ReportedTop1)
{
    /// <summary>Number of parameters of the preset with its 1000-class head (computed by building the model on
    /// the meta device: no memory is allocated).</summary>
    public long Parameters => _parameters.Value;

    private readonly Lazy<long> _parameters = new(() =>
    {
        using var model = ModelRegistry.Create(Name, device: META);
        return model.parameters().Sum(p => p.numel());
    });
}

/// <summary>Creates any released PolaFormer configuration (and our ViT presets) by name.</summary>
/// <example><code>
/// using var model = ModelRegistry.Create("pola_swin_tiny", numClasses: 10);
/// </code></example>
public static class ModelRegistry
{
    private sealed record Entry(ModelInfo Info, Func<Overrides, Device?, ScalarType?, Backbone> Factory);

    private sealed record Overrides(long? NumClasses, double? DropPathRate, string? AttentionTypes, (long, long)? ImageSize);

    private static readonly FrozenDictionary<string, Entry> Entries = BuildEntries();

    /// <summary>Every registered name, in a stable order.</summary>
    public static IReadOnlyList<string> Names { get; } = Entries.Keys.Order(StringComparer.Ordinal).ToArray();

    /// <summary>Every registered configuration.</summary>
    public static IReadOnlyList<ModelInfo> Models => Names.Select(n => Entries[n].Info).ToArray();

    /// <summary>The configuration registered as <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">No model has that name; the message lists the names.</exception>
    public static ModelInfo Describe(string name) => Find(name).Info;

    /// <summary>Builds a registered model.</summary>
    /// <param name="name">Registry name, e.g. <c>pola_pvt_tiny</c>, <c>pola_swin_base_384</c>, <c>pola_vit_small</c>.</param>
    /// <param name="numClasses">Classes of the classifier (default: the preset's 1000; 0 = no classifier).</param>
    /// <param name="dropPathRate">Stochastic depth of the last block (default: the preset's).</param>
    /// <param name="attentionTypes">Per-stage attention kinds, e.g. "SSSS" for the softmax counterpart (default:
    /// the preset's).</param>
    /// <param name="imageSize">Build size (height, width) (default: the preset's). The model runs at other sizes
    /// anyway; this sets the size its positional encodings and windows are laid out for.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public static Backbone Create(string name, long? numClasses = null, double? dropPathRate = null,
        string? attentionTypes = null, (long Height, long Width)? imageSize = null, Device? device = null, ScalarType? dtype = null) =>
        Find(name).Factory(new Overrides(numClasses, dropPathRate, attentionTypes, imageSize), device, dtype);

    private static Entry Find(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return Entries.TryGetValue(name, out var entry)
            ? entry
            : throw new ArgumentException($"Unknown model '{name}'. Registered models: {string.Join(", ", Names)}.", nameof(name));
    }

    private static FrozenDictionary<string, Entry> BuildEntries()
    {
        var entries = new Dictionary<string, Entry>();
        var pvtTop1 = new Dictionary<string, double> { ["pola_pvt_tiny"] = 78.8, ["pola_pvt_small"] = 81.9 };
        foreach (var (name, o) in PolaPvtOptions.Presets)
        {
            entries[name] = new Entry(
                new ModelInfo(name, "PVT", (o.ImageSize, o.ImageSize), o.AttentionTypes, pvtTop1.TryGetValue(name, out var pvt) ? pvt : null),
                (x, device, dtype) => new PolaPyramidVisionTransformer(o with
                {
                    NumClasses = x.NumClasses ?? o.NumClasses,
                    DropPathRate = x.DropPathRate ?? o.DropPathRate,
                    AttentionTypes = x.AttentionTypes ?? o.AttentionTypes,
                    ImageSize = x.ImageSize is { } s ? SquareSide(s, name) : o.ImageSize,
                }, device, dtype));
        }
        var swinTop1 = new Dictionary<string, double> { ["pola_swin_tiny"] = 82.6, ["pola_swin_small"] = 83.6, ["pola_swin_base"] = 83.8 };
        foreach (var (name, o) in PolaSwinOptions.Presets)
        {
            entries[name] = new Entry(
                new ModelInfo(name, "Swin", (o.ImageSize, o.ImageSize), o.AttentionTypes, swinTop1.TryGetValue(name, out var top1) ? top1 : null),
                (x, device, dtype) => new PolaSwinTransformer(o with
                {
                    NumClasses = x.NumClasses ?? o.NumClasses,
                    DropPathRate = x.DropPathRate ?? o.DropPathRate,
                    AttentionTypes = x.AttentionTypes ?? o.AttentionTypes,
                    ImageSize = x.ImageSize is { } s ? SquareSide(s, name) : o.ImageSize,
                }, device, dtype));
        }
        foreach (var (name, o) in PolaVitOptions.Presets)
        {
            entries[name] = new Entry(
                new ModelInfo(name, "ViT", o.ImageSize, o.AttentionTypes, null),
                (x, device, dtype) => new PolaVisionTransformer(o with
                {
                    NumClasses = x.NumClasses ?? o.NumClasses,
                    DropPathRate = x.DropPathRate ?? o.DropPathRate,
                    AttentionTypes = x.AttentionTypes ?? o.AttentionTypes,
                    ImageSize = x.ImageSize ?? o.ImageSize,
                }, device, dtype));
        }
        return entries.ToFrozenDictionary(StringComparer.Ordinal);
    }

    private static long SquareSide((long Height, long Width) size, string name) => size.Height == size.Width
        ? size.Height
        : throw new ArgumentException($"{name} is built for square images; got imageSize {size.Height} × {size.Width} (it still runs on non-square inputs).", "imageSize");
}
