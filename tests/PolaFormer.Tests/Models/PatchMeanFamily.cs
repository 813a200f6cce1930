using PolaFormer.Pretrained;
using System.Collections.Frozen;
using System.Runtime.CompilerServices;
using PolaFormer.Attention;
using PolaFormer.Layers;
using PolaFormer.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

/// <summary>Options of <see cref="PatchMeanModel"/>.</summary>
public sealed record PatchMeanOptions
{
    public (long Height, long Width) ImageSize { get; init; } = (32, 32);
    public long EmbedDim { get; init; } = 32;
    public long NumClasses { get; init; } = 1000;
    public string AttentionTypes { get; init; } = "LS";
}

/// <summary>
/// A model family that lives in the test assembly and registers itself like the library's own (one module
/// initializer, nothing edited in src/): patch embedding, two attention blocks of registered kinds, mean pooling,
/// a linear head. <c>ModelContractTests</c> picks it up with every other registered name.
/// </summary>
public sealed class PatchMeanModel : Backbone
{
    public static IReadOnlyDictionary<string, PatchMeanOptions> Presets { get; } = new Dictionary<string, PatchMeanOptions>
    {
        ["test_patch_mean"] = new(),
    }.ToFrozenDictionary(StringComparer.Ordinal);

    [ModuleInitializer]
    internal static void RegisterPresets() => ModelRegistry.RegisterFamily("PatchMean", Presets,
        (name, o) => new ModelInfo(name, "PatchMean", o.ImageSize, o.AttentionTypes, null,
            // Its pretrained configuration, declared by the family: weights at a URL, CIFAR-like statistics.
            new PretrainedConfig
            {
                ModelName = name, Source = "https://example.invalid/test_patch_mean.safetensors", NumClasses = 10,
                InputSize = o.ImageSize, Mean = new(0.5, 0.5, 0.5), Std = new(0.25, 0.25, 0.25), CropFraction = 1,
            }),
        (o, x, device, dtype) => new PatchMeanModel(o with
        {
            NumClasses = x.NumClasses ?? o.NumClasses,
            AttentionTypes = x.AttentionTypes ?? o.AttentionTypes,
            ImageSize = x.ImageSize ?? o.ImageSize,
        }, device, dtype));

    private readonly PatchEmbed patch_embed;
    private readonly ModuleList<TokenAttention> blocks;
    private readonly LayerNorm norm;
    private nn.Module<Tensor, Tensor> head;
    private long _numClasses;

    public PatchMeanModel(PatchMeanOptions o, Device? device = null, ScalarType? dtype = null) : base(nameof(PatchMeanModel))
    {
        Options = o;
        _numClasses = o.NumClasses;
        patch_embed = new PatchEmbed(3, o.EmbedDim, 4, normalize: false, device: device, dtype: dtype);
        var grid = (o.ImageSize.Height / 4, o.ImageSize.Width / 4);
        blocks = new ModuleList<TokenAttention>(AttentionRegistry.ParseStages(o.AttentionTypes, 2, "options.AttentionTypes")
            .Select(letter => AttentionRegistry.Create(letter, new AttentionSpec { Dim = o.EmbedDim, NumHeads = 2, Grid = grid, Device = device, Dtype = dtype }))
            .ToArray());
        norm = nn.LayerNorm(o.EmbedDim, device: device, dtype: dtype);
        head = o.NumClasses > 0 ? nn.Linear(o.EmbedDim, o.NumClasses, device: device, dtype: dtype) : nn.Identity();
        RegisterComponents();
    }

    public PatchMeanOptions Options { get; }
    public override long InChannels => 3;
    public override (long Height, long Width) ImageSize => Options.ImageSize;
    public override long NumFeatures => Options.EmbedDim;
    public override long NumClasses => _numClasses;
    public override IReadOnlyList<FeatureInfo> FeatureInfo => [new("blocks.0", Options.EmbedDim, 4), new("blocks.1", Options.EmbedDim, 4)];
    public override IReadOnlySet<string> NoWeightDecay { get; } = new HashSet<string>();

    public override Tensor ForwardFeatures(Tensor images)
    {
        using var scope = NewDisposeScope();
        RunIntermediates(images, new HashSet<int>(), norm: false, stopUntil: 1, out var features);
        return features!.MoveToOuterDisposeScope();
    }

    protected override Tensor Classify(Tensor pooled) => head.forward(pooled);

    protected override IReadOnlyList<Tensor> RunIntermediates(Tensor images, IReadOnlySet<int> wanted, bool norm, int stopUntil, out Tensor? features)
    {
        var (x, h, w) = patch_embed.Embed(images);
        var maps = new List<Tensor>();
        features = null;
        for (int i = 0; i < blocks.Count; i++)
        {
            x = x + blocks[i].forward(x, h, w);
            if (wanted.Contains(i)) maps.Add((norm && i == blocks.Count - 1 ? this.norm.forward(x) : x).transpose(1, 2).reshape(x.shape[0], -1, h, w));
            if (i == stopUntil && i < blocks.Count - 1) return maps;
        }
        features = this.norm.forward(x);
        return maps;
    }

    public override void ResetClassifier(long numClasses)
    {
        var (device, dtype) = ParameterPlacement();
        var old = head;
        head = numClasses > 0 ? nn.Linear(Options.EmbedDim, numClasses, device: device, dtype: dtype) : nn.Identity();
        ReplaceSubmodule(nameof(head), head);
        old.Dispose();
        _numClasses = numClasses;
    }
}
