using System.Collections.Concurrent;
using static TorchSharp.torch;

namespace PolaFormer.Models;

/// <summary>A registered model configuration.</summary>
/// <param name="Name">Registry name, e.g. <c>pola_swin_tiny</c>.</param>
/// <param name="Family">Model family: the family class's <c>FamilyName</c> (PVT, Swin, ViT, PolaFormer++).</param>
/// <param name="InputSize">Image size (height, width) the preset is built and trained for.</param>
/// <param name="Attention">Per-stage attention kinds, e.g. "LLSS".</param>
/// <param name="ReportedTop1">ImageNet-1k top-1 (%) the authors report for their released checkpoint, where they
/// report one.</param>
/// <param name="Pretrained">Where the preset's released weights come from and how they expect images to be prepared
/// (declared by the family next to its presets); null when the authors release no weights for it.</param>
public sealed record ModelInfo(string Name, string Family, (long Height, long Width) InputSize, string Attention, double? ReportedTop1,
    Pretrained.PretrainedConfig? Pretrained = null)
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

/// <summary>What a caller may change when building a registered model (null keeps the preset's value).</summary>
/// <param name="NumClasses">Classes of the classifier (0 = none).</param>
/// <param name="DropPathRate">Stochastic depth of the last block.</param>
/// <param name="AttentionTypes">Stage string such as "LLSS" (<see cref="Attention.AttentionRegistry"/>).</param>
/// <param name="ImageSize">Build size (height, width).</param>
public sealed record ModelOverrides(long? NumClasses = null, double? DropPathRate = null, string? AttentionTypes = null,
    (long Height, long Width)? ImageSize = null);

/// <summary>One registered model: its description and how to build it.</summary>
/// <param name="Info">Name, family, input size, attention string, reported accuracy.</param>
/// <param name="Create">Builds the model with the caller's overrides on a device and dtype.</param>
public sealed record ModelRegistration(ModelInfo Info, Func<ModelOverrides, Device?, ScalarType?, Backbone> Create);

/// <summary>
/// Creates any registered model by name: the released PolaFormer configurations and the ViT presets. Families
/// register their presets themselves (<see cref="Register"/>, from a module initializer in the family's file), so
/// this class never changes when a family is added.
/// </summary>
/// <example><code>
/// using var model = ModelRegistry.Create("pola_swin_tiny", numClasses: 10);
/// </code></example>
public static class ModelRegistry
{
    private static readonly ConcurrentDictionary<string, ModelRegistration> Entries = new(StringComparer.Ordinal);

    /// <summary>Adds a model under <see cref="ModelInfo.Name"/>.</summary>
    /// <exception cref="ArgumentException">The name is taken by another registration.</exception>
    public static void Register(ModelRegistration registration)
    {
        ArgumentNullException.ThrowIfNull(registration);
        ArgumentException.ThrowIfNullOrWhiteSpace(registration.Info.Name, "registration.Info.Name");
        if (registration.Info.Pretrained is { } pretrained && pretrained.ModelName != registration.Info.Name)
            throw new ArgumentException(
                $"registration.Info.Pretrained.ModelName is '{pretrained.ModelName}'; expected the model's own name '{registration.Info.Name}'.", nameof(registration));
        var existing = Entries.GetOrAdd(registration.Info.Name, registration);
        if (!ReferenceEquals(existing, registration) && existing.Info != registration.Info)
            throw new ArgumentException($"A model named '{registration.Info.Name}' is already registered ({existing.Info.Family}).", nameof(registration));
    }

    /// <summary>Registers each preset of a family: <paramref name="build"/> makes the model from the preset's options
    /// and the caller's overrides.</summary>
    public static void RegisterFamily<TOptions>(string family, IReadOnlyDictionary<string, TOptions> presets,
        Func<string, TOptions, ModelInfo> describe, Func<TOptions, ModelOverrides, Device?, ScalarType?, Backbone> build)
    {
        ArgumentNullException.ThrowIfNull(presets);
        ArgumentNullException.ThrowIfNull(describe);
        ArgumentNullException.ThrowIfNull(build);
        foreach (var (name, options) in presets)
        {
            var info = describe(name, options);
            if (info.Family != family) throw new ArgumentException($"{name} describes itself as {info.Family}, not {family}.", nameof(describe));
            Register(new ModelRegistration(info, (overrides, device, dtype) => build(options, overrides, device, dtype)));
        }
    }

    /// <summary>Every registered name, in ordinal order.</summary>
    public static IReadOnlyList<string> Names => Entries.Keys.Order(StringComparer.Ordinal).ToArray();

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
    /// <param name="imageSize">Build size (height, width), square or not (default: the preset's). The model runs at
    /// other sizes anyway; this sets the size its positional encodings and windows are laid out for. The family's
    /// options validation says which sizes it takes (e.g. multiples of 32 for Pola-Swin).</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public static Backbone Create(string name, long? numClasses = null, double? dropPathRate = null,
        string? attentionTypes = null, (long Height, long Width)? imageSize = null, Device? device = null, ScalarType? dtype = null) =>
        Find(name).Create(new ModelOverrides(numClasses, dropPathRate, attentionTypes, imageSize), device, dtype);

    /// <summary>The configuration registered as <paramref name="name"/>, or null.</summary>
    internal static ModelInfo? TryDescribe(string name) => Entries.TryGetValue(name, out var entry) ? entry.Info : null;

    private static ModelRegistration Find(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return Entries.TryGetValue(name, out var entry)
            ? entry
            : throw new ArgumentException($"Unknown model '{name}'. Registered models: {string.Join(", ", Names)}.", nameof(name));
    }
}
