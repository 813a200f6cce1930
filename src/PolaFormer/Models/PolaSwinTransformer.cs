using System.Collections.Frozen;
using PolaFormer.Attention;
using PolaFormer.Layers;
using PolaFormer.Pretrained;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Models;

// Field names (patch_embed, absolute_pos_embed, layers, blocks, downsample, norm1, attn, norm2, mlp, attn_mask,
// reduction, norm, head) are the official PyTorch attribute names: they become the state-dict keys, so the authors'
// checkpoints load unchanged.
#pragma warning disable IDE1006

/// <summary>
/// Hyper-parameters of <see cref="PolaSwinTransformer"/>, with the defaults of the official constructor
/// (<c>models.pola_swin.PolaSwinTransformer</c>). The released configurations are in
/// <see cref="Presets"/>.
/// </summary>
/// <remarks>Record equality compares <see cref="Depths"/> and <see cref="NumHeads"/> by reference.</remarks>
public sealed record PolaSwinOptions
{
    /// <summary>Image size (height, width) the model is built for (official <c>img_size</c>, which the official
    /// code also takes as a pair through <c>to_2tuple</c>). It sizes the stored shift masks, the windows and the
    /// absolute position embedding; other input sizes are served at run time. Both sides must be multiples of
    /// <see cref="PatchSize"/>·2^(stages−1).</summary>
    public (long Height, long Width) ImageSize { get; init; } = (224, 224);

    /// <summary>Side of the square patches of the stem convolution (<c>patch_size</c>).</summary>
    public long PatchSize { get; init; } = 4;

    /// <summary>Input image channels (<c>in_chans</c>).</summary>
    public long InChannels { get; init; } = 3;

    /// <summary>Classes of the linear classifier; 0 = no classifier (<c>num_classes</c>).</summary>
    public long NumClasses { get; init; } = 1000;

    /// <summary>Channels of the first stage; stage i has <c>EmbedDim·2^i</c> (<c>embed_dim</c>).</summary>
    public long EmbedDim { get; init; } = 96;

    /// <summary>Blocks per stage (<c>depths</c>); its length is the number of stages.</summary>
    public IReadOnlyList<long> Depths { get; init; } = [2, 2, 6, 2];

    /// <summary>Attention heads per stage (<c>num_heads</c>), one per stage.</summary>
    public IReadOnlyList<long> NumHeads { get; init; } = [3, 6, 12, 24];

    /// <summary>Window side of the polarity ('L') blocks (<c>window_size</c>). Softmax ('S') blocks use 7, or 12
    /// when this is above 56, as the official code does. A window at least as large as a stage's resolution is
    /// clamped to it (and the shift is dropped).</summary>
    public long WindowSize { get; init; } = 7;

    /// <summary>Hidden width of the MLP relative to the channels (<c>mlp_ratio</c>).</summary>
    public double MlpRatio { get; init; } = 4;

    /// <summary>Bias in the qkv / qkvg projections (<c>qkv_bias</c>).</summary>
    public bool QkvBias { get; init; } = true;

    /// <summary>Scale of q·k in the softmax blocks; null = head_dim^-0.5 (<c>qk_scale</c>; unused by polarity
    /// blocks, as in the official code).</summary>
    public double? QkScale { get; init; }

    /// <summary>Dropout after the embedding, in the MLPs and after the attention projections (<c>drop_rate</c>).</summary>
    public double DropRate { get; init; }

    /// <summary>Dropout on the softmax attention weights (<c>attn_drop_rate</c>).</summary>
    public double AttnDropRate { get; init; }

    /// <summary>Stochastic depth of the last block; rates rise linearly from 0 over all blocks
    /// (<c>drop_path_rate</c>).</summary>
    public double DropPathRate { get; init; } = 0.1;

    /// <summary>Add a learnt absolute position embedding to the patch tokens (<c>ape</c>).</summary>
    public bool Ape { get; init; }

    /// <summary>LayerNorm after the patch embedding (<c>patch_norm</c>).</summary>
    public bool PatchNorm { get; init; } = true;

    /// <summary>Scale of the learnable power of polarity attention, power = 1 + alpha·sigmoid(p) (<c>alpha</c>).</summary>
    public double Alpha { get; init; } = 4;

    /// <summary>Kernel of the depthwise convolution on v in polarity attention; odd (<c>kernel_size</c>).</summary>
    public long KernelSize { get; init; } = 5;

    /// <summary>Attention per stage (<c>attn_type</c>): one letter per stage, 'L' polarity or 'S' softmax, e.g.
    /// "LLSS". As in the official code a stage letter 'M' mixes: with a block count n written after the stage
    /// letters ("LLMS3"), the first n blocks of each 'M' stage are polarity blocks and the rest softmax.</summary>
    public string AttentionTypes { get; init; } = "LLLL";

    /// <summary>Which formulation of the polarity maths the 'L' blocks use.</summary>
    public PolarityImplementation Implementation { get; init; } = PolarityImplementation.Fast;

    /// <summary>The released configurations (<c>cfgs/pola_swin_*.yaml</c>): <c>pola_swin_tiny</c>,
    /// <c>pola_swin_small</c>, <c>pola_swin_base</c> (224 px, window 56) and <c>pola_swin_base_384</c> (384 px,
    /// window 96), all with attention "LLSS". Derive variants with <c>with</c>, e.g.
    /// <c>PolaSwinOptions.Presets["pola_swin_tiny"] with { NumClasses = 10 }</c>.</summary>
    public static IReadOnlyDictionary<string, PolaSwinOptions> Presets { get; } = new Dictionary<string, PolaSwinOptions>
    {
        ["pola_swin_tiny"] = new()
        {
            EmbedDim = 96, Depths = [2, 2, 6, 2], NumHeads = [3, 6, 12, 24], WindowSize = 56,
            DropPathRate = 0.2, AttentionTypes = "LLSS",
        },
        ["pola_swin_small"] = new()
        {
            EmbedDim = 96, Depths = [2, 2, 18, 2], NumHeads = [3, 6, 12, 24], WindowSize = 56,
            DropPathRate = 0.3, AttentionTypes = "LLSS",
        },
        ["pola_swin_base"] = new()
        {
            EmbedDim = 128, Depths = [2, 2, 18, 2], NumHeads = [4, 8, 16, 32], WindowSize = 56,
            DropPathRate = 0.5, AttentionTypes = "LLSS",
        },
        ["pola_swin_base_384"] = new()
        {
            ImageSize = (384, 384), EmbedDim = 128, Depths = [2, 2, 18, 2], NumHeads = [4, 8, 16, 32], WindowSize = 96,
            DropPathRate = 0.5, AttentionTypes = "LLSS",
        },
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>The multiple that image height and width must be: PatchSize·2^(stages−1), for the patch mergings
    /// between the stages.</summary>
    internal long InputMultiple => PatchSize << (Depths.Count - 1);

    /// <summary>Checks every property; the message names it (<c>options.Property</c>), its value and what was
    /// expected. The model's constructor calls it.</summary>
    /// <param name="paramName">How the caller names the options (the constructor's <c>options</c>).</param>
    /// <exception cref="ArgumentException">A property is invalid.</exception>
    public void Validate(string paramName = "options")
    {
        var check = new OptionsCheck(paramName);
        check.Positive(PatchSize, nameof(PatchSize));
        check.Positive(InChannels, nameof(InChannels));
        check.NumClasses(NumClasses);
        check.Positive(EmbedDim, nameof(EmbedDim));
        check.That(Depths is { Count: > 0 and <= 16 } && Depths.All(d => d is > 0 and <= int.MaxValue), nameof(Depths), Depths,
            "the positive block counts of 1 to 16 stages");
        int stages = Depths.Count;
        check.PerStage(NumHeads, nameof(NumHeads), stages);
        for (int i = 0; i < stages; i++) check.Positive(NumHeads[i], $"{nameof(NumHeads)}[{i}]");
        check.ImageSize(ImageSize, nameof(ImageSize), InputMultiple,
            $"{check.Name(nameof(PatchSize))} = {PatchSize} × 2^{stages - 1} for the patch mergings between the {stages} stages");
        check.Positive(WindowSize, nameof(WindowSize));
        check.That(MlpRatio > 0 && double.IsFinite(MlpRatio) && (long)(EmbedDim * MlpRatio) >= 1, nameof(MlpRatio), MlpRatio,
            "a positive ratio giving at least one hidden channel");
        check.PositiveOrNull(QkScale, nameof(QkScale));
        check.Probability(DropRate, nameof(DropRate));
        check.Probability(AttnDropRate, nameof(AttnDropRate));
        check.Probability(DropPathRate, nameof(DropPathRate));
        check.Positive(Alpha, nameof(Alpha));
        check.OddKernel(KernelSize, nameof(KernelSize));
        check.Defined(Implementation, nameof(Implementation));

        var kinds = check.Blocks(AttentionTypes, Depths, nameof(AttentionTypes));
        for (int i = 0; i < stages; i++)
        {
            long dim = EmbedDim << i;
            if (dim % NumHeads[i] != 0)
                throw check.Fail($"Stage {i} has {dim} channels ({check.Name(nameof(EmbedDim))} = {EmbedDim} × 2^{i}), not divisible by {check.Name($"{nameof(NumHeads)}[{i}]")} = {NumHeads[i]}.");
            if (kinds[i].Contains('L') && dim / NumHeads[i] % 2 != 0)
                throw check.Fail($"Stage {i} has polarity blocks with head dimension {dim / NumHeads[i]} ({dim} channels / {check.Name($"{nameof(NumHeads)}[{i}]")} = {NumHeads[i]}); polarity attention needs an even head dimension.");
        }
    }

    /// <summary>The attention letter of every block of every stage (after <see cref="Validate"/>).</summary>
    internal char[][] BlockKinds() => new OptionsCheck("options").Blocks(AttentionTypes, Depths, nameof(AttentionTypes));
}

/// <summary>
/// The Pola-Swin image classifier and backbone: Swin Transformer v1 with polarity-aware linear attention in the
/// chosen stages (official <c>models.pola_swin.PolaSwinTransformer</c>; state-dict names and the forward pass at
/// the built image size are the official ones).
/// </summary>
/// <remarks>
/// <para>Input: images (B, <see cref="Backbone.InChannels"/>, H, W) with H and W positive multiples of
/// PatchSize·2^(stages−1) (32 for the presets), square or not. The official code only runs at its construction
/// size; here every block recomputes its window and shift from the actual stage resolution with the official rule
/// (odd blocks shift by half the configured window; a window at least as large as the smaller side is clamped to
/// it and the shift dropped). Maps that are not a multiple of the window are padded bottom/right after
/// <c>norm1</c> and the padding is masked out of the attention; shift masks for new sizes are built like the
/// official ones and cached; positional encodings, the absolute position embedding and relative position tables
/// are resized bicubically when a window or grid differs from the built one. At the construction size no padding
/// or resizing happens and the stored <c>attn_mask</c> buffers are used: the official computation.</para>
/// </remarks>
public sealed class PolaSwinTransformer : Backbone
{
    /// <summary>The family name in <see cref="ModelInfo.Family"/>.</summary>
    public const string FamilyName = "Swin";

    /// <summary>The presets with released ImageNet-1k weights: the top-1 (%) the authors report for them and how they
    /// evaluate (<see cref="PretrainedConfig"/>'s defaults: ImageNet mean and standard deviation, bicubic squash to 256,
    /// centre crop 224). No <see cref="PretrainedConfig.Source"/>: the file names in the authors' Hugging Face
    /// repository are not confirmed (<see cref="PretrainedConfigs.HubFolder"/>).</summary>
    private static readonly FrozenDictionary<string, PretrainedConfig> Released = new PretrainedConfig[]
    {
        new PretrainedConfig { ModelName = "pola_swin_tiny", ReportedTop1 = 82.6 },
        new PretrainedConfig { ModelName = "pola_swin_small", ReportedTop1 = 83.6 },
        new PretrainedConfig { ModelName = "pola_swin_base", ReportedTop1 = 83.8 },
    }.ToFrozenDictionary(c => c.ModelName, StringComparer.Ordinal);

    /// <summary>Registers the presets with <see cref="ModelRegistry"/> when the library loads.</summary>
    [System.Runtime.CompilerServices.ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "A family registers its presets itself, so the registry never lists families.")]
    internal static void RegisterPresets() => ModelRegistry.RegisterFamily(FamilyName, PolaSwinOptions.Presets,
        (name, o) => new ModelInfo(name, FamilyName, o.ImageSize, o.AttentionTypes, Released.GetValueOrDefault(name)?.ReportedTop1,
            Released.GetValueOrDefault(name) is { } released ? released with { InputSize = o.ImageSize } : null),
        (o, x, device, dtype) => new PolaSwinTransformer(o with
        {
            NumClasses = x.NumClasses ?? o.NumClasses,
            DropPathRate = x.DropPathRate ?? o.DropPathRate,
            AttentionTypes = x.AttentionTypes ?? o.AttentionTypes,
            ImageSize = x.ImageSize ?? o.ImageSize,
        }, device, dtype));

    private const double LayerNormEps = 1e-5;

    private readonly PatchEmbed patch_embed;
    private readonly Parameter? absolute_pos_embed;
    private readonly Dropout pos_drop;
    private readonly ModuleList<PolaSwinStage> layers;
    private readonly LayerNorm norm;
    private nn.Module<Tensor, Tensor> head;

    private readonly PositionalEncodingResizer? _positionResizer;
    private readonly FeatureInfo[] _featureInfo;

    /// <summary>Builds the model with the official initialisation (truncated normal std 0.02 for every Linear and
    /// the absolute position embedding, LayerNorms 1/0, polarity parameters 0).</summary>
    /// <param name="options">Hyper-parameters (default: the official constructor defaults).</param>
    /// <param name="device">Device of the parameters and buffers (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    /// <exception cref="ArgumentException">An option is out of range or inconsistent; the message names it.</exception>
    public PolaSwinTransformer(PolaSwinOptions? options = null, Device? device = null, ScalarType? dtype = null)
        : base(nameof(PolaSwinTransformer))
    {
        var o = Options = options ?? new PolaSwinOptions();
        o.Validate(nameof(options));
        var kinds = o.BlockKinds();
        int stages = o.Depths.Count;
        (long gridHeight, long gridWidth) = (o.ImageSize.Height / o.PatchSize, o.ImageSize.Width / o.PatchSize);

        patch_embed = new PatchEmbed(o.InChannels, o.EmbedDim, o.PatchSize, normalize: o.PatchNorm, normEps: LayerNormEps,
            device: device, dtype: dtype);
        if (o.Ape)
        {
            absolute_pos_embed = new Parameter(zeros(1, gridHeight * gridWidth, o.EmbedDim, dtype: dtype, device: device));
            Initialization.TruncatedNormal_(absolute_pos_embed, std: 0.02);
            _positionResizer = new PositionalEncodingResizer(gridHeight, gridWidth);
        }
        pos_drop = nn.Dropout(o.DropRate);

        var rates = DropPath.LinearSchedule(o.DropPathRate, checked((int)o.Depths.Sum()));

        layers = new ModuleList<PolaSwinStage>();
        var info = new FeatureInfo[stages];
        for (int i = 0, first = 0; i < stages; first += kinds[i].Length, i++)
        {
            long dim = o.EmbedDim << i;
            layers.Add(new PolaSwinStage(dim, (gridHeight >> i, gridWidth >> i), o.NumHeads[i], kinds[i], rates[first..(first + kinds[i].Length)],
                downsample: i < stages - 1, o, device, dtype));
            info[i] = new FeatureInfo($"layers.{i}", dim, o.PatchSize << i);
        }
        _featureInfo = info;
        NumFeatures = o.EmbedDim << (stages - 1);
        norm = nn.LayerNorm(NumFeatures, eps: LayerNormEps, device: device, dtype: dtype);
        _numClasses = o.NumClasses;
        head = NewHead(o.NumClasses, device, dtype);

        RegisterComponents();
        // After registration: the initialiser walks the registered submodules.
        Initialization.TruncatedNormalLinears(this);
    }

    /// <summary>The hyper-parameters the model was built with.</summary>
    public PolaSwinOptions Options { get; }

    /// <inheritdoc />
    public override long InChannels => Options.InChannels;

    /// <inheritdoc />
    public override (long Height, long Width) ImageSize => Options.ImageSize;

    /// <inheritdoc />
    public override long NumFeatures { get; }

    /// <inheritdoc />
    public override long NumClasses => _numClasses;

    private long _numClasses;

    /// <inheritdoc />
    public override IReadOnlyList<FeatureInfo> FeatureInfo => _featureInfo;

    /// <summary>{"absolute_pos_embed"}, as the official <c>no_weight_decay</c>.</summary>
    public override IReadOnlySet<string> NoWeightDecay => new HashSet<string> { "absolute_pos_embed" };

    /// <summary>{"relative_position_bias_table"}, as the official <c>no_weight_decay_keywords</c>.</summary>
    public override IReadOnlySet<string> NoWeightDecayKeywords => new HashSet<string> { "relative_position_bias_table" };

    /// <summary>The multiple that input height and width must be: PatchSize·2^(stages−1).</summary>
    public long InputMultiple => Options.InputMultiple;

    /// <summary>Images (B, C, H, W) → the last stage's tokens after the final LayerNorm, (B, N, <see cref="NumFeatures"/>):
    /// patch embedding (+ absolute position embedding) → stages → norm.</summary>
    /// <exception cref="ArgumentException">images is not (B, InChannels, H, W) with H, W positive multiples of
    /// <see cref="InputMultiple"/>.</exception>
    public override Tensor ForwardFeatures(Tensor images)
    {
        CheckImages(images);
        using var scope = NewDisposeScope();
        return RunStages(images, null, norm: false, layers.Count - 1, null)!.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    protected override Tensor Classify(Tensor pooled) => head.call(pooled);

    /// <inheritdoc />
    /// <remarks>Entry i is stage i's output before its patch merging, (B, C_i, H/(PatchSize·2^i),
    /// W/(PatchSize·2^i)); with <c>norm</c>, the last one after the final LayerNorm (as timm).</remarks>
    protected override IReadOnlyList<Tensor> RunIntermediates(Tensor images, IReadOnlySet<int> wanted, bool norm, int stopUntil, out Tensor? features)
    {
        CheckImages(images);
        var maps = new List<Tensor>(wanted.Count);
        features = RunStages(images, wanted, norm, stopUntil, maps);
        return maps;
    }

    /// <inheritdoc />
    public override void ResetClassifier(long numClasses)
    {
        if (numClasses < 0)
            throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "numClasses must be 0 (no classifier) or positive.");
        var newHead = NewHead(numClasses, norm.weight!.device, norm.weight.dtype);
        if (newHead is Linear linear)
        {
            Initialization.TruncatedNormal_(linear.weight!, std: 0.02);
            using (no_grad()) linear.bias!.zero_();
        }
        newHead.train(training);
        var old = head;
        ReplaceSubmodule(nameof(head), newHead);
        head = newHead;
        old.Dispose();
        _numClasses = numClasses;
    }

    private nn.Module<Tensor, Tensor> NewHead(long numClasses, Device? device, ScalarType? dtype) => numClasses > 0
        ? nn.Linear(NumFeatures, numClasses, device: device, dtype: dtype)
        : nn.Identity();

    /// <summary>The official model's block layout, one entry per block as the golden listings write it:
    /// "layers.i.blocks.j:L|S:res{H}x{W}:w{window}:s{shift}" at the built size.</summary>
    internal IEnumerable<string> DescribeBlocks() => layers.SelectMany((stage, i) =>
        stage.Blocks.Select((block, j) => $"layers.{i}.blocks.{j}:{block.Kind}:" +
            $"res{block.InputResolution.Height}x{block.InputResolution.Width}:w{block.BuiltWindow}:s{block.BuiltShift}"));

    /// <summary>Block j of stage i (for tests).</summary>
    internal PolaSwinBlock Block(int stage, int index) => layers[stage].Blocks[index];

    private void CheckImages(Tensor images)
    {
        Check.Images(images, InChannels, nameof(images));
        Check.MatchesParameters(images, patch_embed.Weight, nameof(images));
        long h = images.shape[2], w = images.shape[3], multiple = InputMultiple;
        if (h <= 0 || w <= 0 || h % multiple != 0 || w % multiple != 0)
            throw new ArgumentException(
                $"images is {h} × {w} (shape {Check.Format(images.shape)}); height and width must be positive multiples of {multiple} " +
                $"(patch size {Options.PatchSize} × 2^{Options.Depths.Count - 1} for the patch mergings between the {Options.Depths.Count} stages).",
                nameof(images));
    }

    // patch_embed → (+ape) → stages → norm; returns the normalised tokens of the last stage. When maps is given,
    // adds each stage's output before its downsample as (B, C, H, W) (the last one after norm).
    /// <summary>Runs stages 0 … <paramref name="stopUntil"/>, adding the maps of the <paramref name="wanted"/> stages to
    /// <paramref name="maps"/>; returns the normalised tokens of the last stage, or null when it stopped earlier.</summary>
    private Tensor? RunStages(Tensor images, IReadOnlySet<int>? wanted, bool norm, int stopUntil, List<Tensor>? maps)
    {
        var (x, height, width) = patch_embed.Embed(images);
        if (absolute_pos_embed is not null) x = x.Plus(_positionResizer!.Resize(absolute_pos_embed, height, width));
        x = pos_drop.call(x);

        for (int i = 0; i < layers.Count; i++)
        {
            var stage = layers[i];
            for (int j = 0; j < stage.Blocks.Count; j++)
            {
                x = stage.Blocks[j].call(x, height, width);
            }
            if (stage.Downsample is null) break;
            if (wanted?.Contains(i) == true) maps!.Add(ToMap(x, height, width));
            if (i == stopUntil) return null;
            x = stage.Downsample.call(x, height, width);
            (height, width) = (height / 2, width / 2);
        }
        var normalised = this.norm.call(x);
        if (wanted?.Contains(layers.Count - 1) == true) maps!.Add(ToMap(norm ? normalised : x, height, width));
        return normalised;
    }

    private static Tensor ToMap(Tensor tokens, long height, long width) =>
        tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2).contiguous();
}

/// <summary>One stage (official <c>BasicLayer</c>): its blocks, then an optional patch merging.</summary>
internal sealed class PolaSwinStage : nn.Module
{
    private readonly ModuleList<PolaSwinBlock> blocks;
    private readonly PatchMerging? downsample;

    public PolaSwinStage(long dim, (long Height, long Width) resolution, long numHeads, char[] kinds,
        double[] dropPath, bool downsample, PolaSwinOptions o, Device? device, ScalarType? dtype)
        : base(nameof(PolaSwinStage))
    {
        blocks = new ModuleList<PolaSwinBlock>();
        for (int j = 0; j < kinds.Length; j++)
        {
            // Softmax blocks keep Swin's window (7, or 12 for the large-window configurations); the linear kinds take
            // the configured large windows.
            long window = kinds[j] != 'S' ? o.WindowSize : o.WindowSize <= 56 ? 7 : 12;
            blocks.Add(new PolaSwinBlock(dim, resolution, numHeads, window, shift: j % 2 == 0 ? 0 : window / 2, kinds[j],
                dropPath[j], o, device, dtype));
        }
        if (downsample) this.downsample = new PatchMerging(dim, device, dtype);
        RegisterComponents();
    }

    public IList<PolaSwinBlock> Blocks => blocks;

    public PatchMerging? Downsample => downsample;
}

/// <summary>
/// A Swin block (official <c>SwinTransformerBlock</c>) whose window geometry follows the actual map size:
/// x + attn(windows of norm1(x), cyclically shifted on odd blocks), then x + mlp(norm2(x)).
/// </summary>
internal sealed class PolaSwinBlock : nn.Module<Tensor, long, long, Tensor>
{
    private readonly LayerNorm norm1;
    private readonly TokenAttention attn;
    private readonly DropPath drop_path;
    private readonly LayerNorm norm2;
    private readonly Mlp mlp;
    private readonly Tensor? attn_mask;

    private readonly (long Height, long Width) _maskGrid;
    private readonly Dictionary<(long Height, long Width, long Window, long Shift, ScalarType Dtype, DeviceType Type, int Index), Tensor> _maskCache = new();

    // window and shift are the configured ones, before clamping to the resolution.
    public PolaSwinBlock(long dim, (long Height, long Width) resolution, long numHeads, long window, long shift,
        char kind, double dropPath, PolaSwinOptions o, Device? device, ScalarType? dtype)
        : base(nameof(PolaSwinBlock))
    {
        ConfiguredWindow = window;
        ConfiguredShift = shift;
        InputResolution = resolution;
        Kind = kind;
        var (w, s) = Geometry(resolution.Height, resolution.Width);
        (BuiltWindow, BuiltShift) = (w, s);

        norm1 = nn.LayerNorm(dim, eps: 1e-5, device: device, dtype: dtype);
        attn = AttentionRegistry.Create(kind, new AttentionSpec
        {
            Dim = dim, NumHeads = numHeads, Grid = (w, w), Windowed = true, QkvBias = o.QkvBias, QkScale = o.QkScale,
            AttnDrop = o.AttnDropRate, ProjDrop = o.DropRate, Alpha = o.Alpha, KernelSize = o.KernelSize,
            Implementation = o.Implementation, Device = device, Dtype = dtype,
        });
        drop_path = new DropPath(dropPath);
        norm2 = nn.LayerNorm(dim, eps: 1e-5, device: device, dtype: dtype);
        mlp = new Mlp(dim, (long)(dim * o.MlpRatio), drop: o.DropRate, device: device, dtype: dtype);
        if (s > 0)
        {
            // The official code cannot build a mask when the resolution is not a multiple of the window; this port
            // builds it for the padded map it will run on.
            _maskGrid = (RoundUp(resolution.Height, w), RoundUp(resolution.Width, w));
            attn_mask = ShiftMask(_maskGrid.Height, _maskGrid.Width, w, s, dtype ?? get_default_dtype(), device ?? get_default_device());
        }
        RegisterComponents();
    }

    public char Kind { get; }

    public long ConfiguredWindow { get; }

    public long ConfiguredShift { get; }

    public (long Height, long Width) InputResolution { get; }

    public long BuiltWindow { get; }

    public long BuiltShift { get; }

    /// <summary>The official rule: a window at least as large as the smaller side becomes that side, unshifted.</summary>
    public (long Window, long Shift) Geometry(long height, long width)
    {
        long side = Math.Min(height, width);
        return side <= ConfiguredWindow ? (side, 0) : (ConfiguredWindow, ConfiguredShift);
    }

    /// <summary>(B, H·W, C) tokens on an H × W map → (B, H·W, C).</summary>
    public override Tensor forward(Tensor x, long height, long width)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], channels = x.shape[2];
        var (window, shift) = Geometry(height, width);
        long paddedHeight = RoundUp(height, window), paddedWidth = RoundUp(width, window);
        bool padded = paddedHeight != height || paddedWidth != width;

        var map = norm1.call(x).view(batch, height, width, channels);
        Tensor? paddingMask = null;
        if (padded)
        {
            long[] pad = [0, 0, 0, paddedWidth - width, 0, paddedHeight - height];
            map = nn.functional.pad(map, pad);
            var real = nn.functional.pad(ones(1, height, width, 1, dtype: x.dtype, device: x.device), pad);
            if (shift > 0) real = real.roll([-shift, -shift], [1, 2]);
            paddingMask = Partition(real, window).view(-1, window * window).repeat(batch, 1);
        }
        if (shift > 0) map = map.roll([-shift, -shift], [1, 2]);

        var windows = Partition(map, window);
        // Polarity attention ignores the shift mask, as in the official code, so it is only built for softmax.
        var mask = shift > 0 && attn.UsesShiftMask
            ? MaskFor(paddedHeight, paddedWidth, window, shift, x.dtype, x.device)
            : null;
        var attended = attn.forward(windows, window, window, mask, paddingMask);

        map = Reverse(attended, window, batch, paddedHeight, paddedWidth, channels);
        if (shift > 0) map = map.roll([shift, shift], [1, 2]);
        if (padded) map = map.narrow(1, 0, height).narrow(2, 0, width);
        var y = x.Plus(drop_path.call(map.reshape(batch, height * width, channels)));
        y = y.Plus(drop_path.call(mlp.call(norm2.call(y))));
        return y.MoveToOuterDisposeScope();
    }

    private Tensor MaskFor(long height, long width, long window, long shift, ScalarType dtype, Device device)
    {
        if (attn_mask is not null && (height, width) == _maskGrid && window == BuiltWindow && shift == BuiltShift)
            return attn_mask;
        var key = (height, width, window, shift, dtype, device.type, device.index);
        if (_maskCache.TryGetValue(key, out var cached)) return cached;
        Tensor mask;
        using (var scope = NewDisposeScope())
            mask = ShiftMask(height, width, window, shift, dtype, device).MoveToOuterDisposeScope();
        mask = mask.DetachFromDisposeScope();
        _maskCache[key] = mask;
        return mask;
    }

    /// <summary>The official SW-MSA mask (nW, w², w²) for an H × W map (multiples of the window): 0 between tokens
    /// of the same region of the cyclically shifted map, −100 otherwise.</summary>
    internal static Tensor ShiftMask(long height, long width, long window, long shift, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        // Regions along one axis, as the official slices (0, -w), (-w, -s), (-s, None) label them.
        static Tensor Regions(long n, long window, long shift)
        {
            var index = ScalarArithmetic.Arange(n, int64);
            using var windowStart = (n - window).ToScalar();
            using var shiftStart = (n - shift).ToScalar();
            return index.ge(windowStart).to(int64).Plus(index.ge(shiftStart).to(int64));
        }
        var labels = Regions(height, window, shift).unsqueeze(1).Times(3).Plus(Regions(width, window, shift).unsqueeze(0))
            .to(float32).view(1, height, width, 1);
        var windows = Partition(labels, window).view(-1, window * window);
        var difference = windows.unsqueeze(1) - windows.unsqueeze(2);
        using var bias = TokenAttention.MaskedScoreBias.ToScalar();
        var mask = zeros_like(difference).masked_fill(difference.ne(ScalarArithmetic.Zero), bias);
        return mask.to(dtype, device).MoveToOuterDisposeScope();
    }

    /// <summary>(B, H, W, C) → (B·nW, w², C), windows row-major within each image.</summary>
    private static Tensor Partition(Tensor map, long window)
    {
        long batch = map.shape[0], height = map.shape[1], width = map.shape[2], channels = map.shape[3];
        return map.view(batch, height / window, window, width / window, window, channels)
            .permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window * window, channels);
    }

    private static Tensor Reverse(Tensor windows, long window, long batch, long height, long width, long channels) =>
        windows.view(batch, height / window, width / window, window, window, channels)
            .permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, height, width, channels);

    private static long RoundUp(long n, long multiple) => (n + multiple - 1) / multiple * multiple;

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var mask in _maskCache.Values) mask.Dispose();
            _maskCache.Clear();
        }
        base.Dispose(disposing);
    }
}

/// <summary>Official <c>PatchMerging</c>: 2 × 2 neighbours concatenated (4C) → LayerNorm → Linear(4C, 2C, no
/// bias).</summary>
internal sealed class PatchMerging : nn.Module<Tensor, long, long, Tensor>
{
    private readonly Linear reduction;
    private readonly LayerNorm norm;

    public PatchMerging(long dim, Device? device, ScalarType? dtype) : base(nameof(PatchMerging))
    {
        reduction = nn.Linear(4 * dim, 2 * dim, hasBias: false, device: device, dtype: dtype);
        norm = nn.LayerNorm(4 * dim, eps: 1e-5, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>(B, H·W, C) on an H × W map (H, W even) → (B, H/2·W/2, 2C).</summary>
    public override Tensor forward(Tensor x, long height, long width)
    {
        if (height % 2 != 0 || width % 2 != 0)
            throw new ArgumentException($"The map is {height} × {width}; patch merging needs even sides.", nameof(height));
        using var scope = NewDisposeScope();
        long batch = x.shape[0], channels = x.shape[2];
        var map = x.view(batch, height, width, channels);
        Tensor Take(long row, long column) => map.slice(1, row, height, 2).slice(2, column, width, 2);
        var merged = cat([Take(0, 0), Take(1, 0), Take(0, 1), Take(1, 1)], -1).view(batch, -1, 4 * channels);
        return reduction.call(norm.call(merged)).MoveToOuterDisposeScope();
    }
}
