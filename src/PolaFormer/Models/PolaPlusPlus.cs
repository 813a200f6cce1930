using System.Collections.Frozen;
using PolaFormer.Attention;
using PolaFormer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
// PyTorch-named BatchNorm whose forward makes no temporary Scalar (TorchSharp's does; see ScalarArithmetic).
using BatchNorm2d = PolaFormer.Layers.BatchNorm2d;

namespace PolaFormer.Models;

// Field names (patch_embed, layers, RoPE, RoPE_linear, blocks, pos, norm1, attn, norm2, ffn, gamma_1, gamma_2,
// downsample, reduction, proj, norm, head) are the official PolaFormer++ attribute names: they become the
// state-dict keys, so the authors' checkpoints load unchanged.
#pragma warning disable IDE1006

/// <summary>Hyper-parameters of <see cref="PolaPlusPlus"/> (the PolaFormer++ classification model, official
/// <c>models.pola.POLA</c>).</summary>
public sealed record PolaPlusPlusOptions
{
    /// <summary>Stages of every PolaFormer++ model.</summary>
    public const int StageCount = 4;

    /// <summary>Image size (height, width) the model is built and trained for. The model has no positional
    /// parameters (its rotary tables follow each stage's grid), so this only describes the preset: any positive
    /// size runs.</summary>
    public (long Height, long Width) ImageSize { get; init; } = (224, 224);

    /// <summary>Input channels.</summary>
    public long InChannels { get; init; } = 3;

    /// <summary>Classes of the classifier (0 = none).</summary>
    public long NumClasses { get; init; } = 1000;

    /// <summary>Channels of the four stages.</summary>
    public IReadOnlyList<long> EmbedDims { get; init; } = [32, 64, 128, 384];

    /// <summary>Blocks per stage.</summary>
    public IReadOnlyList<long> Depths { get; init; } = [2, 2, 2, 2];

    /// <summary>Heads per stage.</summary>
    public IReadOnlyList<long> NumHeads { get; init; } = [1, 2, 4, 12];

    /// <summary>Feed-forward hidden width / stage width, per stage (the hidden width is truncated to an integer).</summary>
    public IReadOnlyList<double> MlpRatios { get; init; } = [3.5, 3.5, 3.5, 3.5];

    /// <summary>Stochastic depth of the last block; earlier blocks scale linearly from 0.</summary>
    public double DropPathRate { get; init; } = 0.1;

    /// <summary>Width of the 1×1 projection before the classifier (the pooled feature width).</summary>
    public long Projection { get; init; } = 2048;

    /// <summary>Per stage: whether the blocks scale their two branches by learnable per-channel factors
    /// (<c>gamma_1</c>, <c>gamma_2</c>).</summary>
    public IReadOnlyList<bool> LayerScales { get; init; } = [true, true, true, true];

    /// <summary>Per stage: the initial value of the layer-scale factors.</summary>
    public IReadOnlyList<double> LayerInitValues { get; init; } = [1, 1, 1, 1];

    /// <summary>Attention per stage: 'P' PaCS polarity attention (the official flag 'l'), 'V' softmax with RoPE
    /// (the official flag 'v'). The official default, used by every preset, is "PPVV".</summary>
    public string AttentionTypes { get; init; } = "PPVV";

    /// <summary>Which formulation of the PaCS maths runs.</summary>
    public PolarityImplementation Implementation { get; init; } = PolarityImplementation.Fast;

    /// <summary>The presets of the official <c>POLA_b0</c> … <c>POLA_b5</c> (configs <c>cfgs/pola_b0.yaml</c> …
    /// <c>pola_b5.yaml</c> name them; the numbers are those of the constructors the configs select).</summary>
    public static IReadOnlyDictionary<string, PolaPlusPlusOptions> Presets { get; } = new Dictionary<string, PolaPlusPlusOptions>
    {
        ["pola_pp_b0"] = new() { EmbedDims = [32, 64, 128, 384], Depths = [2, 2, 2, 2], NumHeads = [1, 2, 4, 12] },
        ["pola_pp_b1"] = new() { EmbedDims = [32, 64, 192, 384], Depths = [2, 2, 4, 2], NumHeads = [1, 2, 6, 12] },
        ["pola_pp_b2"] = new() { EmbedDims = [64, 128, 256, 512], Depths = [2, 2, 6, 2], NumHeads = [1, 2, 4, 8] },
        ["pola_pp_b3"] = new() { EmbedDims = [64, 128, 320, 512], Depths = [3, 5, 9, 3], NumHeads = [1, 2, 5, 8], DropPathRate = 0.15 },
        ["pola_pp_b4"] = new()
        {
            EmbedDims = [96, 192, 384, 512], Depths = [4, 6, 12, 6], NumHeads = [1, 2, 6, 8], DropPathRate = 0.4,
            LayerInitValues = [1, 1, 1e-6, 1e-6],
        },
        ["pola_pp_b5"] = new()
        {
            EmbedDims = [96, 192, 448, 640], Depths = [4, 7, 19, 8], NumHeads = [1, 2, 7, 10], DropPathRate = 0.55,
            Projection = 2560, LayerInitValues = [1e-6, 1e-6, 1e-6, 1e-6],
        },
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Checks every property; the message names it (<c>options.Property</c>), its value and what was
    /// expected. The model's constructor calls it.</summary>
    /// <param name="paramName">How the caller names the options (the constructor's <c>options</c>).</param>
    /// <exception cref="ArgumentException">A property is invalid.</exception>
    public void Validate(string paramName = "options")
    {
        var check = new OptionsCheck(paramName);
        check.PerStage(EmbedDims, nameof(EmbedDims), StageCount);
        check.PerStage(Depths, nameof(Depths), StageCount);
        check.PerStage(NumHeads, nameof(NumHeads), StageCount);
        check.PerStage(MlpRatios, nameof(MlpRatios), StageCount);
        check.PerStage(LayerScales, nameof(LayerScales), StageCount);
        check.PerStage(LayerInitValues, nameof(LayerInitValues), StageCount);
        check.That(AttentionTypes?.Length == StageCount && AttentionTypes.All(c => char.ToUpperInvariant(c) is 'P' or 'V'),
            nameof(AttentionTypes), AttentionTypes, $"{StageCount} letters, each 'P' (PaCS polarity) or 'V' (softmax with RoPE)");
        check.ImageSize(ImageSize, nameof(ImageSize));
        check.Positive(InChannels, nameof(InChannels));
        check.NumClasses(NumClasses);
        check.Positive(Projection, nameof(Projection));
        check.Probability(DropPathRate, nameof(DropPathRate));
        check.Defined(Implementation, nameof(Implementation));
        check.That(EmbedDims[0] >= 2 && EmbedDims[0] % 2 == 0, $"{nameof(EmbedDims)}[0]", EmbedDims[0],
            "an even width of at least 2 (the stem's first convolutions are half as wide)");
        for (int i = 0; i < StageCount; i++)
        {
            long dim = EmbedDims[i], heads = NumHeads[i];
            check.Positive(Depths[i], $"{nameof(Depths)}[{i}]");
            check.Positive(dim, $"{nameof(EmbedDims)}[{i}]");
            check.Positive(heads, $"{nameof(NumHeads)}[{i}]");
            if (dim % heads != 0)
                throw check.Fail($"{check.Name($"{nameof(EmbedDims)}[{i}]")} = {dim} is not divisible by {check.Name($"{nameof(NumHeads)}[{i}]")} = {heads}.");
            if (dim / heads % 4 != 0)
                throw check.Fail($"{check.Name($"{nameof(EmbedDims)}[{i}] / {nameof(NumHeads)}[{i}]")} = {dim} / {heads} = {dim / heads} channels per head; the rotary encoding needs a multiple of 4.");
            check.That(MlpRatios[i] > 0 && double.IsFinite(MlpRatios[i]) && (long)(MlpRatios[i] * dim) >= 1, $"{nameof(MlpRatios)}[{i}]", MlpRatios[i],
                "a positive ratio giving at least one hidden channel");
            check.That(double.IsFinite(LayerInitValues[i]), $"{nameof(LayerInitValues)}[{i}]", LayerInitValues[i], "a finite number");
        }
    }
}

/// <summary>
/// PolaFormer++ for classification (official <c>models.pola.POLA</c>): a convolutional stem to stride 4, four stages
/// of blocks on (B, C, H, W) maps — PaCS polarity attention in the first two, softmax attention with rotary position
/// encoding in the last two by default — each but the last ending in a strided convolution and BatchNorm, then a 1×1
/// projection, BatchNorm, Swish, average pooling and a 1×1 convolution as the classifier.
/// </summary>
/// <remarks>Registered as <c>pola_pp_b0</c> … <c>pola_pp_b5</c> in <see cref="ModelRegistry"/>. The model has no
/// positional parameters: the rotary tables are built from each stage's grid, so it runs at any image size.</remarks>
public sealed class PolaPlusPlus : Backbone
{
    /// <summary>The family name in <see cref="ModelInfo.Family"/>.</summary>
    public const string FamilyName = "PolaFormer++";

    /// <summary>ImageNet-1k top-1 (%) at 224² that the authors' README reports for each preset.</summary>
    private static readonly FrozenDictionary<string, double> ReportedTop1 = new Dictionary<string, double>
    {
        ["pola_pp_b0"] = 76.9, ["pola_pp_b1"] = 79.1, ["pola_pp_b2"] = 82.8,
        ["pola_pp_b3"] = 84.3, ["pola_pp_b4"] = 85.4, ["pola_pp_b5"] = 85.6,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Registers the presets with <see cref="ModelRegistry"/> when the library loads.</summary>
    [System.Runtime.CompilerServices.ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "A family registers its presets itself, so the registry never lists families.")]
    internal static void RegisterPresets() => ModelRegistry.RegisterFamily(FamilyName, PolaPlusPlusOptions.Presets,
        (name, o) => new ModelInfo(name, FamilyName, o.ImageSize, o.AttentionTypes, ReportedTop1.TryGetValue(name, out var top1) ? top1 : null),
        (o, x, device, dtype) => new PolaPlusPlus(o with
        {
            NumClasses = x.NumClasses ?? o.NumClasses,
            DropPathRate = x.DropPathRate ?? o.DropPathRate,
            AttentionTypes = x.AttentionTypes ?? o.AttentionTypes,
            ImageSize = x.ImageSize ?? o.ImageSize,
        }, device, dtype));

    private readonly PolaPlusPlusStem patch_embed;
    private readonly ModuleList<PolaPlusPlusStage> layers;
    private readonly Conv2d proj;
    private readonly BatchNorm2d norm;
    private nn.Module<Tensor, Tensor> head;

    private readonly FeatureInfo[] _featureInfo;
    private long _numClasses;

    /// <summary>Builds the model with freshly initialised weights (the official initialisation: convolutions
    /// truncated-normal with std 0.02 and bias 0, Linear layers PyTorch's default, norms 1 and 0, temperatures
    /// s1 = s2 = 0).</summary>
    /// <param name="options">Hyper-parameters; <see cref="PolaPlusPlusOptions.Presets"/> has the released ones.</param>
    /// <param name="device">Device of the parameters (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    /// <exception cref="ArgumentException">A hyper-parameter is invalid (the message names it).</exception>
    public PolaPlusPlus(PolaPlusPlusOptions options, Device? device = null, ScalarType? dtype = null)
        : base(nameof(PolaPlusPlus))
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(nameof(options));
        Options = options;
        _numClasses = options.NumClasses;

        patch_embed = new PolaPlusPlusStem(options.InChannels, options.EmbedDims[0], device, dtype);
        layers = new ModuleList<PolaPlusPlusStage>();
        var schedule = DropPath.LinearSchedule(options.DropPathRate, checked((int)options.Depths.Sum()));
        int first = 0;
        _featureInfo = new FeatureInfo[PolaPlusPlusOptions.StageCount];
        for (int i = 0; i < PolaPlusPlusOptions.StageCount; i++)
        {
            bool last = i == PolaPlusPlusOptions.StageCount - 1;
            int depth = checked((int)options.Depths[i]);
            layers.Add(new PolaPlusPlusStage(options, i, schedule[first..(first + depth)], last ? null : options.EmbedDims[i + 1], device, dtype));
            first += depth;
            // Stage i's output is taken after its downsampling: stride 8, 16, 32, 32.
            _featureInfo[i] = new FeatureInfo($"layers.{i}", options.EmbedDims[last ? i : i + 1], 4L << Math.Min(i + 1, PolaPlusPlusOptions.StageCount - 1));
        }
        proj = nn.Conv2d(options.EmbedDims[^1], options.Projection, 1, device: device, dtype: dtype);
        norm = new BatchNorm2d(options.Projection, device: device, dtype: dtype);
        head = NewHead(options.NumClasses, device, dtype);

        RegisterComponents();
        foreach (var module in modules().OfType<Conv2d>()) InitialiseConvolution(module);
    }

    /// <summary>The hyper-parameters the model was built with (<see cref="PolaPlusPlusOptions.NumClasses"/> is the
    /// original count; see <see cref="NumClasses"/> after <see cref="ResetClassifier"/>).</summary>
    public PolaPlusPlusOptions Options { get; }

    /// <inheritdoc />
    public override long InChannels => Options.InChannels;

    /// <inheritdoc />
    public override (long Height, long Width) ImageSize => Options.ImageSize;

    /// <inheritdoc />
    /// <remarks>The projection width: the classifier reads the pooled, projected, normalised, Swish-activated map.</remarks>
    public override long NumFeatures => Options.Projection;

    /// <inheritdoc />
    public override long NumClasses => _numClasses;

    /// <inheritdoc />
    /// <remarks>Entry i is "layers.i", the output of stage i after its downsampling: channels EmbedDims[i + 1]
    /// (EmbedDims[3] for the last) at stride 8, 16, 32, 32.</remarks>
    public override IReadOnlyList<FeatureInfo> FeatureInfo => _featureInfo;

    /// <inheritdoc />
    /// <remarks>Empty: the official <c>no_weight_decay</c> names <c>absolute_pos_embed</c> and
    /// <c>relative_position_bias_table</c>, which this model does not have.</remarks>
    public override IReadOnlySet<string> NoWeightDecay { get; } = new HashSet<string>();

    /// <summary>Images (B, C, H, W) → tokens (B, N, <see cref="NumFeatures"/>) after the 1×1 projection, BatchNorm
    /// and Swish (the official <c>forward_features</c> before its average pooling).</summary>
    /// <exception cref="ArgumentException">images is not (B, <see cref="InChannels"/>, H, W) in the parameters' dtype
    /// and device.</exception>
    public override Tensor ForwardFeatures(Tensor images)
    {
        using var scope = NewDisposeScope();
        return Run(images, null, PolaPlusPlusOptions.StageCount - 1, null)!.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    /// <remarks>The classifier is a 1×1 convolution (official key shapes (classes, features, 1, 1)), applied to the
    /// pooled features as a 1 × 1 map.</remarks>
    protected override Tensor Classify(Tensor pooled) =>
        head.call(pooled.reshape(pooled.shape[0], pooled.shape[1], 1, 1)).flatten(1);

    /// <inheritdoc />
    /// <remarks>Entry i is stage i's output map. <c>norm</c> changes nothing: the model has no final norm on the stage
    /// maps (its BatchNorm follows the projection to <see cref="NumFeatures"/> channels, part of the head).</remarks>
    protected override IReadOnlyList<Tensor> RunIntermediates(Tensor images, IReadOnlySet<int> wanted, bool norm, int stopUntil, out Tensor? features)
    {
        var maps = new List<Tensor>(wanted.Count);
        features = Run(images, wanted, stopUntil, maps);
        return maps;
    }

    /// <inheritdoc />
    /// <remarks>The new head is a 1×1 Conv2d(<see cref="NumFeatures"/>, numClasses) initialised like the official
    /// one (truncated normal std 0.02, bias 0), on the model's device and dtype.</remarks>
    public override void ResetClassifier(long numClasses)
    {
        if (numClasses < 0)
            throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "numClasses must be 0 (no classifier) or more.");
        var (device, dtype) = ParameterPlacement();
        var newHead = NewHead(numClasses, device, dtype);
        if (newHead is Conv2d conv) InitialiseConvolution(conv);
        newHead.train(training);
        var old = head;
        ReplaceSubmodule(nameof(head), newHead);
        head = newHead;
        old.Dispose();
        _numClasses = numClasses;
    }

    private Tensor? Run(Tensor images, IReadOnlySet<int>? wanted, int stopUntil, List<Tensor>? maps)
    {
        Check.Images(images, InChannels, nameof(images));
        Check.MatchesParameters(images, patch_embed.parameters().First(), nameof(images));
        var x = patch_embed.call(images);
        for (int i = 0; i < PolaPlusPlusOptions.StageCount; i++)
        {
            x = layers[i].call(x);
            if (wanted?.Contains(i) == true) maps!.Add(x);
            if (i == stopUntil && i < PolaPlusPlusOptions.StageCount - 1) return null;
        }
        x = nn.functional.silu(norm.call(proj.call(x)));
        return x.flatten(2).transpose(1, 2);
    }

    private nn.Module<Tensor, Tensor> NewHead(long numClasses, Device? device, ScalarType? dtype) => numClasses > 0
        ? nn.Conv2d(Options.Projection, numClasses, 1, device: device, dtype: dtype)
        : nn.Identity();

    internal static void InitialiseConvolution(Conv2d conv)
    {
        Initialization.TruncatedNormal_(conv.weight, std: 0.02);
        using (no_grad()) conv.bias?.zero_();
    }
}

/// <summary>The convolutional stem to stride 4 (official <c>PatchEmbed</c>): four 3×3 convolutions (strides 2, 1,
/// 1, 2) each followed by BatchNorm, GELU between them.</summary>
internal sealed class PolaPlusPlusStem : nn.Module<Tensor, Tensor>
{
    private readonly Sequential proj;

    public PolaPlusPlusStem(long inChannels, long embedDim, Device? device, ScalarType? dtype) : base(nameof(PolaPlusPlusStem))
    {
        long half = embedDim / 2;
        // Indices 0 … 10 as in the official nn.Sequential, so the keys read patch_embed.proj.<i>.
        proj = nn.Sequential(
            ("0", nn.Conv2d(inChannels, half, 3, stride: 2, padding: 1, device: device, dtype: dtype)),
            ("1", new BatchNorm2d(half, device: device, dtype: dtype)),
            ("2", nn.GELU()),
            ("3", nn.Conv2d(half, half, 3, stride: 1, padding: 1, device: device, dtype: dtype)),
            ("4", new BatchNorm2d(half, device: device, dtype: dtype)),
            ("5", nn.GELU()),
            ("6", nn.Conv2d(half, half, 3, stride: 1, padding: 1, device: device, dtype: dtype)),
            ("7", new BatchNorm2d(half, device: device, dtype: dtype)),
            ("8", nn.GELU()),
            ("9", nn.Conv2d(half, embedDim, 3, stride: 2, padding: 1, device: device, dtype: dtype)),
            ("10", new BatchNorm2d(embedDim, device: device, dtype: dtype)));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => proj.forward(x);
}

/// <summary>The official <c>RoPE</c> module: holds the frequencies as the persistent buffer <c>angle</c> (a
/// state-dict entry) and builds the tables for a grid.</summary>
internal sealed class RotaryFrequencies : nn.Module
{
    private readonly Tensor angle;

    public RotaryFrequencies(long embedDim, long numHeads, Device? device, ScalarType? dtype) : base(nameof(RotaryFrequencies))
    {
        angle = RotaryEmbedding.Frequencies(embedDim, numHeads, dtype, device);
        register_buffer(nameof(angle), angle);
    }

    /// <summary>(sin, cos) for a height × width grid, in the buffer's dtype and device.</summary>
    // Read through the registered buffer: Module.to(...) replaces buffers.
    public (Tensor Sin, Tensor Cos) Tables(long height, long width) =>
        RotaryEmbedding.Tables(get_buffer(nameof(angle))!, height, width);
}

/// <summary>One stage (official <c>BasicLayer</c>): builds the rotary tables of its grid once (width head_dim for
/// softmax blocks, 2·head_dim for PaCS blocks), runs its blocks, then downsamples.</summary>
internal sealed class PolaPlusPlusStage : nn.Module<Tensor, Tensor>
{
    private readonly RotaryFrequencies RoPE;
    private readonly RotaryFrequencies RoPE_linear;
    private readonly ModuleList<PolaPlusPlusBlock> blocks;
    private readonly PolaPlusPlusDownsample? downsample;

    public PolaPlusPlusStage(PolaPlusPlusOptions options, int stage, double[] dropPaths, long? outDim, Device? device, ScalarType? dtype)
        : base(nameof(PolaPlusPlusStage))
    {
        long dim = options.EmbedDims[stage], heads = options.NumHeads[stage];
        RoPE = new RotaryFrequencies(dim, heads, device, dtype);
        RoPE_linear = new RotaryFrequencies(2 * dim, heads, device, dtype);
        blocks = new ModuleList<PolaPlusPlusBlock>();
        foreach (var dropPath in dropPaths) blocks.Add(new PolaPlusPlusBlock(options, stage, dropPath, device, dtype));
        if (outDim is { } o) downsample = new PolaPlusPlusDownsample(dim, o, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long height = x.shape[2], width = x.shape[3];
        var (sin, cos) = RoPE.Tables(height, width);
        var (sinLinear, cosLinear) = RoPE_linear.Tables(height, width);
        foreach (var block in blocks) x = block.Forward(x, sin, cos, sinLinear, cosLinear);
        if (downsample is not null) x = downsample.call(x);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>Official <c>PatchMerging</c>: a 3×3 stride-2 convolution and BatchNorm.</summary>
internal sealed class PolaPlusPlusDownsample : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d reduction;
    private readonly BatchNorm2d norm;

    public PolaPlusPlusDownsample(long dim, long outDim, Device? device, ScalarType? dtype) : base(nameof(PolaPlusPlusDownsample))
    {
        reduction = nn.Conv2d(dim, outDim, 3, stride: 2, padding: 1, device: device, dtype: dtype);
        norm = new BatchNorm2d(outDim, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => norm.call(reduction.call(x));
}

/// <summary>Official <c>LayerNorm2d</c>: LayerNorm over the channels of a (B, C, H, W) map (kept as a wrapper so the
/// keys read norm1.norm.weight).</summary>
internal sealed class PolaPlusPlusLayerNorm2d : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm norm;

    public PolaPlusPlusLayerNorm2d(long dim, Device? device, ScalarType? dtype) : base(nameof(PolaPlusPlusLayerNorm2d))
    {
        norm = nn.LayerNorm(dim, eps: 1e-6, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Map (B, C, H, W) → normalised tokens (B, H·W, C), the layout the next layer wants.</summary>
    public override Tensor forward(Tensor x) => norm.forward(x.flatten(2).transpose(1, 2));
}

/// <summary>Official <c>FeedForwardNetwork</c>: fc1, GELU, a residual 3×3 depthwise convolution, fc2.</summary>
internal sealed class PolaPlusPlusFeedForward : nn.Module<Tensor, long, long, Tensor>
{
    private readonly Linear fc1;
    private readonly Linear fc2;
    private readonly Conv2d dwconv;
    private readonly long _hidden;

    public PolaPlusPlusFeedForward(long dim, long hidden, Device? device, ScalarType? dtype) : base(nameof(PolaPlusPlusFeedForward))
    {
        _hidden = hidden;
        fc1 = nn.Linear(dim, hidden, device: device, dtype: dtype);
        fc2 = nn.Linear(hidden, dim, device: device, dtype: dtype);
        dwconv = nn.Conv2d(hidden, hidden, 3, padding: 1, groups: hidden, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Tokens (B, H·W, C) → tokens (B, H·W, C).</summary>
    public override Tensor forward(Tensor x, long height, long width)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0];
        var hidden = nn.functional.gelu(fc1.call(x));
        var map = hidden.transpose(1, 2).reshape(batch, _hidden, height, width);
        hidden = dwconv.call(map).Plus(map).flatten(2).transpose(1, 2);
        return fc2.call(hidden).MoveToOuterDisposeScope();
    }
}

/// <summary>Official <c>Block</c>: x + pos(x), then x + γ₁·attn(norm1(x)) and x + γ₂·ffn(norm2(x)), each branch
/// with stochastic depth; the γ are present only with layer scale.</summary>
internal sealed class PolaPlusPlusBlock : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d pos;
    private readonly PolaPlusPlusLayerNorm2d norm1;
    private readonly TokenAttention attn;
    private readonly DropPath? drop_path;
    private readonly PolaPlusPlusLayerNorm2d norm2;
    private readonly PolaPlusPlusFeedForward ffn;
    private readonly Parameter? gamma_1;
    private readonly Parameter? gamma_2;
    private readonly bool _linear;

    public PolaPlusPlusBlock(PolaPlusPlusOptions options, int stage, double dropPath, Device? device, ScalarType? dtype)
        : base(nameof(PolaPlusPlusBlock))
    {
        long dim = options.EmbedDims[stage], heads = options.NumHeads[stage];
        _linear = char.ToUpperInvariant(options.AttentionTypes[stage]) == 'P';
        pos = nn.Conv2d(dim, dim, 3, padding: 1, groups: dim, device: device, dtype: dtype);
        norm1 = new PolaPlusPlusLayerNorm2d(dim, device, dtype);
        attn = _linear
            ? new PaCSAttention(dim, heads, options.Implementation, device, dtype)
            : new VanillaSelfAttention(dim, heads, device, dtype);
        if (dropPath > 0) drop_path = new DropPath(dropPath);
        norm2 = new PolaPlusPlusLayerNorm2d(dim, device, dtype);
        ffn = new PolaPlusPlusFeedForward(dim, (long)(options.MlpRatios[stage] * dim), device, dtype);
        if (options.LayerScales[stage])
        {
            double init = options.LayerInitValues[stage];
            using var initScalar = init.ToScalar();
            gamma_1 = new Parameter(full(1, dim, 1, 1, initScalar, dtype: dtype, device: device));
            gamma_2 = new Parameter(full(1, dim, 1, 1, initScalar, dtype: dtype, device: device));
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException(
        "A PolaFormer++ block needs its stage's rotary tables; call Forward(x, sin, cos, sinLinear, cosLinear).");

    /// <summary>Map (B, C, H, W) → map; the PaCS layer reads the 2·head_dim tables, the softmax layer the others.</summary>
    public Tensor Forward(Tensor x, Tensor sin, Tensor cos, Tensor sinLinear, Tensor cosLinear)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], channels = x.shape[1], height = x.shape[2], width = x.shape[3];
        x = x.Plus(pos.call(x));
        var rotary = (IRotaryAttention)attn;
        var branch = rotary.ForwardWithTables(norm1.call(x), height, width, _linear ? sinLinear : sin, _linear ? cosLinear : cos);
        x = x.Plus(Branch(ToMap(branch, batch, channels, height, width), gamma_1));
        branch = ffn.forward(norm2.call(x), height, width);
        x = x.Plus(Branch(ToMap(branch, batch, channels, height, width), gamma_2));
        return x.MoveToOuterDisposeScope();
    }

    private Tensor Branch(Tensor branch, Parameter? gamma)
    {
        // The callers pass the fields as they are on this call: Module.to(...) replaces Parameter objects in them.
        if (gamma is not null) branch = gamma * branch;
        return drop_path?.call(branch) ?? branch;
    }

    private static Tensor ToMap(Tensor tokens, long batch, long channels, long height, long width) =>
        tokens.transpose(1, 2).reshape(batch, channels, height, width);
}
