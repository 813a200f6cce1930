using System.Collections.Frozen;
using PolaFormer.Attention;
using PolaFormer.Layers;
using PolaFormer.Pretrained;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Models;

// Field names (patch_embed1..4, pos_embed1..4, pos_drop1..4, block1..4, norm, head, and the block's norm1, attn,
// norm2, mlp) are the official PyTorch attribute names: they become the state-dict keys, so the authors'
// checkpoints load unchanged.
#pragma warning disable IDE1006

/// <summary>
/// Hyper-parameters of a <see cref="PolaPyramidVisionTransformer"/> (official
/// <c>models.pola_pvt.PyramidVisionTransformer</c>). The defaults are <c>pola_pvt_tiny</c> as the official
/// <c>main.py</c> builds it; <see cref="Presets"/> holds the four released configurations.
/// </summary>
/// <remarks>The model always has four stages; every per-stage list has four entries.</remarks>
public sealed record PolaPvtOptions
{
    /// <summary>Number of stages of the pyramid (fixed by the official architecture).</summary>
    public const int StageCount = 4;

    /// <summary>Image size (height, width) the model is built for: sizes each stage's positional embedding, a grid of
    /// (height, width) / (PatchSize·2^i) tokens (official <c>img_size</c>, a square side there). Both sides must be
    /// multiples of <see cref="PatchSize"/> and at least <see cref="MinimumImageSide"/>. Other sizes run by resizing
    /// the embeddings.</summary>
    public (long Height, long Width) ImageSize { get; init; } = (224, 224);

    /// <summary>Kernel and stride of the first patch embedding (later stages merge 2 × 2 patches).</summary>
    public long PatchSize { get; init; } = 4;

    /// <summary>Image channels.</summary>
    public long InChannels { get; init; } = 3;

    /// <summary>Classes of the classifier; 0 = no classifier (the model returns its pooled features).</summary>
    public long NumClasses { get; init; } = 1000;

    /// <summary>Channels of each stage.</summary>
    public IReadOnlyList<long> EmbedDims { get; init; } = [64, 128, 320, 512];

    /// <summary>Attention heads of each stage. Polarity ('L') stages need an even head dimension.</summary>
    public IReadOnlyList<long> NumHeads { get; init; } = [1, 2, 5, 8];

    /// <summary>MLP hidden width of each stage as a multiple of its channels (truncated to an integer).</summary>
    public IReadOnlyList<double> MlpRatios { get; init; } = [8, 8, 4, 4];

    /// <summary>Blocks in each stage.</summary>
    public IReadOnlyList<long> Depths { get; init; } = [2, 2, 2, 2];

    /// <summary>Bias in the query/key/value projections.</summary>
    public bool QkvBias { get; init; } = true;

    /// <summary>Scale of q·k in softmax ('S') stages; null = head_dim^-0.5. Polarity stages ignore it, as the
    /// official code does.</summary>
    public double? QkScale { get; init; }

    /// <summary>Dropout after the positional embeddings, in the MLPs and after the attention projections.</summary>
    public double DropRate { get; init; }

    /// <summary>Dropout on the attention weights of softmax ('S') stages (polarity attention has none).</summary>
    public double AttnDropRate { get; init; }

    /// <summary>Stochastic depth: the drop-path rate rises linearly from 0 at the first block to this at the
    /// last.</summary>
    public double DropPathRate { get; init; } = 0.1;

    /// <summary>Epsilon of the blocks' LayerNorms (<c>norm1</c>, <c>norm2</c>) and of the final, unused
    /// <c>norm</c> (the official <c>norm_layer</c>). The patch embeddings' and the spatial reductions' LayerNorms
    /// keep PyTorch's default 1e-5, as in the official code.</summary>
    public double BlockNormEps { get; init; } = 1e-6;

    /// <summary>Spatial reduction of keys and values in softmax ('S') stages.</summary>
    public IReadOnlyList<long> SrRatios { get; init; } = [8, 4, 2, 1];

    /// <summary>Spatial reduction of keys and values in polarity ('L') stages, one digit per stage (official
    /// <c>la_sr_ratios</c>). The released checkpoints use "1111" (<c>config.py</c>'s default, which
    /// <c>main.py</c> passes); the official constructor's own default "8421" is not what was trained.</summary>
    public string LinearSrRatios { get; init; } = "1111";

    /// <summary>One letter per stage: 'L' polarity linear attention, 'S' softmax spatial-reduction attention.</summary>
    public string AttentionTypes { get; init; } = "LLLL";

    /// <summary>Scale of the learnable power of polarity attention, power = 1 + alpha·sigmoid(p).</summary>
    public double Alpha { get; init; } = 4;

    /// <summary>Kernel of the depthwise convolution on v in polarity attention (odd).</summary>
    public long KernelSize { get; init; } = 5;

    /// <summary>Which formulation of the polarity maths runs.</summary>
    public PolarityImplementation Implementation { get; init; } = PolarityImplementation.Fast;

    /// <summary>The released configurations, by the official factory names: <c>pola_pvt_tiny</c> (depths 2-2-2-2),
    /// <c>pola_pvt_small</c> (3-4-6-3), <c>pola_pvt_medium</c> (3-4-18-3), <c>pola_pvt_large</c> (3-8-27-3); all
    /// 224 × 224, 1000 classes, drop path 0.1, la_sr_ratios "1111", attention "LLLL".</summary>
    public static IReadOnlyDictionary<string, PolaPvtOptions> Presets { get; } = new Dictionary<string, PolaPvtOptions>
    {
        ["pola_pvt_tiny"] = new() { Depths = [2, 2, 2, 2] },
        ["pola_pvt_small"] = new() { Depths = [3, 4, 6, 3] },
        ["pola_pvt_medium"] = new() { Depths = [3, 4, 18, 3] },
        ["pola_pvt_large"] = new() { Depths = [3, 8, 27, 3] },
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>The spatial reduction stage <paramref name="stage"/> (0-based) uses: a digit of
    /// <see cref="LinearSrRatios"/> for 'L' stages, <see cref="SrRatios"/> for the others.</summary>
    internal long StageSrRatio(int stage) => IsPolarityStage(stage)
        ? LinearSrRatios[stage] - '0'
        : SrRatios[stage];

    /// <summary>Whether stage <paramref name="stage"/> (0-based) uses polarity linear attention.</summary>
    internal bool IsPolarityStage(int stage) => char.ToUpperInvariant(AttentionTypes[stage]) == 'L';

    /// <summary>Side of the token grid of stage <paramref name="stage"/> along an image side of
    /// <paramref name="imageSide"/> pixels (a multiple of the patch size): side/patch, then halved (floored) per
    /// stage. Height and width are each given by it.</summary>
    internal long GridSide(long imageSide, int stage) => imageSide / PatchSize >> stage;

    /// <summary>The smallest image height and width every stage can run at: each stage needs a token grid at least
    /// as large as its spatial reduction (and at least one token) in both directions.</summary>
    public long MinimumImageSide()
    {
        long side = 1;
        for (int i = 0; i < StageCount; i++) side = Math.Max(side, Math.Max(1, StageSrRatio(i)) << i);
        return side * PatchSize;
    }

    /// <summary>Checks every property; the message names it (<c>options.Property</c>), its value and what was
    /// expected. The model's constructor calls it.</summary>
    /// <param name="paramName">How the caller names the options (the constructor's <c>options</c>).</param>
    /// <exception cref="ArgumentException">A property is invalid.</exception>
    public void Validate(string paramName = "options")
    {
        var check = new OptionsCheck(paramName);
        check.PerStage(EmbedDims, nameof(EmbedDims), StageCount);
        check.PerStage(NumHeads, nameof(NumHeads), StageCount);
        check.PerStage(MlpRatios, nameof(MlpRatios), StageCount);
        check.PerStage(Depths, nameof(Depths), StageCount);
        check.PerStage(SrRatios, nameof(SrRatios), StageCount);
        check.Stages(AttentionTypes, StageCount, nameof(AttentionTypes));
        check.That(LinearSrRatios?.Length == StageCount, nameof(LinearSrRatios), LinearSrRatios,
            $"one digit 1-9 per stage ({StageCount}), e.g. \"1111\" (the released checkpoints) or \"8421\"");
        for (int i = 0; i < StageCount; i++)
            if (LinearSrRatios![i] is < '1' or > '9')
                throw check.Fail($"{check.Name(nameof(LinearSrRatios))} is \"{LinearSrRatios}\": '{LinearSrRatios[i]}' at position {i} is not a digit 1-9.");

        check.Positive(PatchSize, nameof(PatchSize));
        check.Positive(InChannels, nameof(InChannels));
        check.NumClasses(NumClasses);
        for (int i = 0; i < StageCount; i++)
        {
            check.Positive(EmbedDims[i], $"{nameof(EmbedDims)}[{i}]");
            check.Positive(NumHeads[i], $"{nameof(NumHeads)}[{i}]");
            check.Positive(Depths[i], $"{nameof(Depths)}[{i}]");
            check.Positive(SrRatios[i], $"{nameof(SrRatios)}[{i}]");
            check.That(MlpRatios[i] > 0 && double.IsFinite(MlpRatios[i]) && (long)(EmbedDims[i] * MlpRatios[i]) >= 1,
                $"{nameof(MlpRatios)}[{i}]", MlpRatios[i], "a positive ratio giving at least one hidden channel");
            if (EmbedDims[i] % NumHeads[i] != 0)
                throw check.Fail($"{check.Name($"{nameof(EmbedDims)}[{i}]")} = {EmbedDims[i]} is not divisible by {check.Name($"{nameof(NumHeads)}[{i}]")} = {NumHeads[i]}.");
            if (IsPolarityStage(i) && EmbedDims[i] / NumHeads[i] % 2 != 0)
                throw check.Fail($"Stage {i + 1} is a polarity ('L') stage with {check.Name($"{nameof(EmbedDims)}[{i}]")} = {EmbedDims[i]} and {NumHeads[i]} heads: head dimension {EmbedDims[i] / NumHeads[i]} must be even.");
        }
        check.PositiveOrNull(QkScale, nameof(QkScale));
        check.Probability(DropRate, nameof(DropRate));
        check.Probability(AttnDropRate, nameof(AttnDropRate));
        check.Probability(DropPathRate, nameof(DropPathRate));
        check.Positive(BlockNormEps, nameof(BlockNormEps), "a small positive number such as 1e-6");
        check.Positive(Alpha, nameof(Alpha));
        check.OddKernel(KernelSize, nameof(KernelSize));
        check.Defined(Implementation, nameof(Implementation));
        check.ImageSize(ImageSize, nameof(ImageSize), PatchSize, $"{check.Name(nameof(PatchSize))} = {PatchSize}");
        long minimum = MinimumImageSide();
        check.That(ImageSize.Height >= minimum && ImageSize.Width >= minimum, nameof(ImageSize), ImageSize,
            $"both sides at least {minimum}: with patch size {PatchSize} and spatial reductions {string.Join(",", Enumerable.Range(0, StageCount).Select(StageSrRatio))} every stage needs a token grid at least as large as its reduction");
    }
}

/// <summary>
/// Pola-PVT: the Pyramid Vision Transformer (v1) with polarity-aware linear attention (official
/// <c>models.pola_pvt.PyramidVisionTransformer</c>, factories <c>pola_pvt_tiny/small/medium/large</c>).
/// </summary>
/// <remarks>
/// <para>Four stages, each: patch embedding (a strided convolution, <see cref="PolaPvtOptions.PatchSize"/> in
/// stage 1 and 2 after that, with its own LayerNorm, eps 1e-5) → + learnt positional embedding → blocks
/// (pre-norm attention and MLP with residuals). Between stages the tokens are laid out again as (B, C, H, W). The
/// features are the mean of the last stage's tokens: the final <c>norm</c> is built (it is in the state dict) but,
/// as in the official code, never applied.</para>
/// <para>Any input size whose sides are multiples of the patch size runs (square or not), as long as every stage's
/// grid is at least its spatial reduction (<see cref="PolaPvtOptions.MinimumImageSide"/>). At the built size the
/// positional embeddings are used as they are (the official numbers); at other sizes they are resized bicubically on
/// their 2-D grid (the official code would resize bilinearly, and only when the first stage's token count differs).
/// In inference (no_grad) the resized copies are cached per size until the mode or the weights change. Later stages
/// floor odd grids, as the stride-2 convolution does.</para>
/// <para>Deviations: the official builds later stages' embeddings for <c>img_size // 2^(i+1)</c> patches of 2, which
/// only agrees with the real token grid for patch size 4; here stage i's grid is always
/// ⌊⌊side/PatchSize⌋ / 2^i⌋ along each side (identical for the released patch size 4). The official model takes a
/// square <c>img_size</c> only; a non-square <see cref="PolaPvtOptions.ImageSize"/> lays every stage's positional
/// embedding (and polarity positional encoding) out on its height × width grid, as the official
/// <c>PatchEmbed</c>'s <c>to_2tuple</c> layout would.</para>
/// </remarks>
public sealed class PolaPyramidVisionTransformer : Backbone
{
    /// <summary>The family name in <see cref="ModelInfo.Family"/>.</summary>
    public const string FamilyName = "PVT";

    /// <summary>The presets with released ImageNet-1k weights: the top-1 (%) the authors report for them and how they
    /// evaluate (<see cref="PretrainedConfig"/>'s defaults: ImageNet mean and standard deviation, bicubic squash to 256,
    /// centre crop 224). No <see cref="PretrainedConfig.Source"/>: the file names in the authors' Hugging Face
    /// repository are not confirmed (<see cref="PretrainedConfigs.HubFolder"/>).</summary>
    private static readonly FrozenDictionary<string, PretrainedConfig> Released = new PretrainedConfig[]
    {
        new PretrainedConfig { ModelName = "pola_pvt_tiny", ReportedTop1 = 78.8 },
        new PretrainedConfig { ModelName = "pola_pvt_small", ReportedTop1 = 81.9 },
    }.ToFrozenDictionary(c => c.ModelName, StringComparer.Ordinal);

    /// <summary>Registers the presets with <see cref="ModelRegistry"/> when the library loads.</summary>
    [System.Runtime.CompilerServices.ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "A family registers its presets itself, so the registry never lists families.")]
    internal static void RegisterPresets() => ModelRegistry.RegisterFamily(FamilyName, PolaPvtOptions.Presets,
        (name, o) => new ModelInfo(name, FamilyName, o.ImageSize, o.AttentionTypes, Released.GetValueOrDefault(name)?.ReportedTop1,
            Released.GetValueOrDefault(name) is { } released ? released with { InputSize = o.ImageSize } : null),
        (o, x, device, dtype) => new PolaPyramidVisionTransformer(o with
        {
            NumClasses = x.NumClasses ?? o.NumClasses,
            DropPathRate = x.DropPathRate ?? o.DropPathRate,
            AttentionTypes = x.AttentionTypes ?? o.AttentionTypes,
            ImageSize = x.ImageSize ?? o.ImageSize,
        }, device, dtype));

    private const int StageCount = PolaPvtOptions.StageCount;

    private readonly PatchEmbed patch_embed1;
    private readonly Parameter pos_embed1;
    private readonly Dropout pos_drop1;
    private readonly ModuleList<PolaPvtBlock> block1;
    private readonly PatchEmbed patch_embed2;
    private readonly Parameter pos_embed2;
    private readonly Dropout pos_drop2;
    private readonly ModuleList<PolaPvtBlock> block2;
    private readonly PatchEmbed patch_embed3;
    private readonly Parameter pos_embed3;
    private readonly Dropout pos_drop3;
    private readonly ModuleList<PolaPvtBlock> block3;
    private readonly PatchEmbed patch_embed4;
    private readonly Parameter pos_embed4;
    private readonly Dropout pos_drop4;
    private readonly ModuleList<PolaPvtBlock> block4;
    private readonly LayerNorm norm;
    private nn.Module<Tensor, Tensor> head;

    private readonly ModuleList<PositionalEncodingResizer> _positionResizers;
    private readonly FeatureInfo[] _featureInfo;
    private long _numClasses;

    /// <summary>Builds the model with freshly initialised weights (the official initialisation: positional
    /// embeddings and Linear weights truncated-normal with std 0.02, Linear biases 0, LayerNorms 1 and 0,
    /// convolutions PyTorch's default).</summary>
    /// <param name="options">Hyper-parameters; <see cref="PolaPvtOptions.Presets"/> has the released ones.</param>
    /// <param name="device">Device of the parameters (default: the current default device).</param>
    /// <param name="dtype">Dtype of the parameters (default: the current default dtype).</param>
    /// <exception cref="ArgumentException">A hyper-parameter is invalid (the message names it).</exception>
    public PolaPyramidVisionTransformer(PolaPvtOptions options, Device? device = null, ScalarType? dtype = null)
        : base(nameof(PolaPyramidVisionTransformer))
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(nameof(options));
        Options = options;
        _numClasses = options.NumClasses;

        var dropPaths = DropPath.LinearSchedule(options.DropPathRate, checked((int)options.Depths.Sum()));
        int blockIndex = 0;
        var patchEmbeds = new PatchEmbed[StageCount];
        var posEmbeds = new Parameter[StageCount];
        var blocks = new ModuleList<PolaPvtBlock>[StageCount];
        _positionResizers = new ModuleList<PositionalEncodingResizer>();
        _featureInfo = new FeatureInfo[StageCount];
        for (int i = 0; i < StageCount; i++)
        {
            long dim = options.EmbedDims[i];
            long height = options.GridSide(options.ImageSize.Height, i), width = options.GridSide(options.ImageSize.Width, i);
            patchEmbeds[i] = new PatchEmbed(i == 0 ? options.InChannels : options.EmbedDims[i - 1], dim,
                i == 0 ? options.PatchSize : 2, normalize: true, normEps: 1e-5, device: device, dtype: dtype);
            posEmbeds[i] = new Parameter(zeros(1, height * width, dim, dtype: dtype, device: device));
            _positionResizers.Add(new PositionalEncodingResizer(height, width));
            blocks[i] = new ModuleList<PolaPvtBlock>();
            for (long j = 0; j < options.Depths[i]; j++, blockIndex++)
                blocks[i].Add(new PolaPvtBlock(options, i, (height, width), dropPaths[blockIndex], device, dtype));
            _featureInfo[i] = new FeatureInfo($"block{i + 1}", dim, options.PatchSize << i);
        }
        (patch_embed1, patch_embed2, patch_embed3, patch_embed4) = (patchEmbeds[0], patchEmbeds[1], patchEmbeds[2], patchEmbeds[3]);
        (pos_embed1, pos_embed2, pos_embed3, pos_embed4) = (posEmbeds[0], posEmbeds[1], posEmbeds[2], posEmbeds[3]);
        (block1, block2, block3, block4) = (blocks[0], blocks[1], blocks[2], blocks[3]);
        pos_drop1 = nn.Dropout(options.DropRate);
        pos_drop2 = nn.Dropout(options.DropRate);
        pos_drop3 = nn.Dropout(options.DropRate);
        pos_drop4 = nn.Dropout(options.DropRate);
        norm = nn.LayerNorm(options.EmbedDims[^1], eps: options.BlockNormEps, device: device, dtype: dtype);
        head = NewHead(options.NumClasses, device, dtype);

        // Registered first: modules() only sees registered children.
        RegisterComponents();
        foreach (var p in posEmbeds) Initialization.TruncatedNormal_(p, std: 0.02);
        Initialization.TruncatedNormalLinears(this);
    }

    /// <summary>The hyper-parameters the model was built with (<see cref="PolaPvtOptions.NumClasses"/> is the
    /// original count; see <see cref="NumClasses"/> after <see cref="ResetClassifier"/>).</summary>
    public PolaPvtOptions Options { get; }

    /// <inheritdoc />
    public override long InChannels => Options.InChannels;

    /// <inheritdoc />
    public override (long Height, long Width) ImageSize => Options.ImageSize;

    /// <inheritdoc />
    public override long NumFeatures => Options.EmbedDims[^1];

    /// <inheritdoc />
    public override long NumClasses => _numClasses;

    /// <inheritdoc />
    /// <remarks>Stage i is "block{i}" with channels <see cref="PolaPvtOptions.EmbedDims"/>[i − 1] and stride
    /// patch size · 2^(i − 1) (4, 8, 16, 32 for the presets).</remarks>
    public override IReadOnlyList<FeatureInfo> FeatureInfo => _featureInfo;

    /// <inheritdoc />
    /// <remarks>The positional embeddings <c>pos_embed1</c> … <c>pos_embed4</c>. The official
    /// <c>no_weight_decay</c> returns <c>{'cls_token'}</c>, a parameter this model does not have, so official
    /// training decayed them; its own comment suggests excluding the positional embeddings, which is what this does.
    /// To reproduce the official recipe exactly, exclude nothing beyond 1-D parameters and biases.</remarks>
    public override IReadOnlySet<string> NoWeightDecay { get; } =
        new HashSet<string> { "pos_embed1", "pos_embed2", "pos_embed3", "pos_embed4" };

    /// <summary>Images (B, C, H, W) → the last stage's tokens (B, N, <see cref="NumFeatures"/>), not normalised: the
    /// official classifier averages them without its final norm.</summary>
    /// <exception cref="ArgumentException">images is not (B, <see cref="InChannels"/>, H, W) with H and W multiples of
    /// the patch size and at least <see cref="PolaPvtOptions.MinimumImageSide"/>.</exception>
    public override Tensor ForwardFeatures(Tensor images)
    {
        using var scope = NewDisposeScope();
        return RunStages(images, null, norm: false, StageCount - 1, null)!.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    protected override Tensor Classify(Tensor pooled) => head.call(pooled);

    /// <inheritdoc />
    /// <remarks>Entry i is the output of stage i + 1 as a map (B, C_i, H/(patch·2^i), W/(patch·2^i)); with
    /// <c>norm</c>, the last one goes through the final LayerNorm first.</remarks>
    protected override IReadOnlyList<Tensor> RunIntermediates(Tensor images, IReadOnlySet<int> wanted, bool norm, int stopUntil, out Tensor? features)
    {
        var maps = new List<Tensor>(wanted.Count);
        features = RunStages(images, wanted, norm, stopUntil, maps);
        return maps;
    }

    /// <inheritdoc />
    /// <remarks>The new head is a Linear(<see cref="NumFeatures"/>, numClasses) initialised like the official
    /// one (truncated normal std 0.02, bias 0), on the model's device and dtype. (The official
    /// <c>reset_classifier</c> reads a <c>self.embed_dim</c> the model does not have.)</remarks>
    public override void ResetClassifier(long numClasses)
    {
        if (numClasses < 0)
            throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "numClasses must be 0 (no classifier) or more.");
        var newHead = NewHead(numClasses, norm.weight.device, norm.weight.dtype);
        if (newHead is Linear linear)
        {
            Initialization.TruncatedNormal_(linear.weight, std: 0.02);
            using (no_grad()) linear.bias?.zero_();
        }
        newHead.train(training);
        var old = head;
        ReplaceSubmodule(nameof(head), newHead);
        head = newHead;
        old.Dispose();
        _numClasses = numClasses;
    }

    /// <summary>
    /// The positional embedding of stage <paramref name="stage"/> (0-based) for a token grid of
    /// <paramref name="height"/> × <paramref name="width"/>: the parameter itself at the built grid, else a bicubic
    /// resize of it (cached per size while gradients are disabled).
    /// </summary>
    internal Tensor PositionEmbedding(int stage, long height, long width) =>
        _positionResizers[stage].Resize(PosEmbed(stage), height, width);

    /// <summary>Runs stages 0 … <paramref name="stopUntil"/>, adding the maps of the <paramref name="wanted"/> stages to
    /// <paramref name="maps"/>; returns the last stage's tokens, or null when it stopped before the last stage.</summary>
    private Tensor? RunStages(Tensor images, IReadOnlySet<int>? wanted, bool norm, int stopUntil, List<Tensor>? maps)
    {
        CheckImages(images);
        long batch = images.shape[0];
        Tensor x = images;
        for (int i = 0; i < StageCount; i++)
        {
            var (tokens, height, width) = PatchEmbedAt(i).Embed(x);
            tokens = PosDropAt(i).call(tokens.Plus(PositionEmbedding(i, height, width)));
            foreach (var block in BlocksAt(i))
            {
                tokens = block.call(tokens, height, width);
            }
            bool last = i == StageCount - 1;
            Tensor? map = null;
            if (wanted?.Contains(i) == true)
            {
                map = ToMap(last && norm ? this.norm.call(tokens) : tokens, batch, height, width);
                maps!.Add(map);
            }
            if (last) return tokens;
            if (i == stopUntil) return null;
            x = map ?? ToMap(tokens, batch, height, width);   // the next stage embeds the map
        }
        throw new InvalidOperationException("unreachable: the last stage returns");
    }

    private static Tensor ToMap(Tensor tokens, long batch, long height, long width) =>
        tokens.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous();

    /// <summary>Checks the image batch: channels, sides multiples of the patch size, every stage's grid large
    /// enough.</summary>
    private void CheckImages(Tensor images)
    {
        Check.Images(images, InChannels, nameof(images));
        Check.MatchesParameters(images, PatchEmbedAt(0).Weight, nameof(images));
        long h = images.shape[2], w = images.shape[3], patch = Options.PatchSize;
        if (h % patch != 0 || w % patch != 0)
            throw new ArgumentException(
                $"images is {h} × {w} (shape {Check.Format(images.shape)}); height and width must be multiples of the patch size {patch}.", nameof(images));
        long minimum = Options.MinimumImageSide();
        for (int i = 0; i < StageCount; i++)
        {
            long gridHeight = Options.GridSide(h, i), gridWidth = Options.GridSide(w, i);
            long needed = Math.Max(1, Options.StageSrRatio(i));
            if (gridHeight < needed || gridWidth < needed)
                throw new ArgumentException(
                    $"images is {h} × {w}: stage {i + 1} would get a {gridHeight} × {gridWidth} token grid, smaller than its spatial reduction {needed}; both sides must be at least {minimum}.", nameof(images));
        }
    }

    private nn.Module<Tensor, Tensor> NewHead(long numClasses, Device? device, ScalarType? dtype) => numClasses > 0
        ? nn.Linear(NumFeatures, numClasses, device: device, dtype: dtype)
        : nn.Identity();

    // Accessed through the fields on every call: Module.to(...) replaces Parameter objects in the fields.
    private Parameter PosEmbed(int stage) => stage switch
    {
        0 => pos_embed1, 1 => pos_embed2, 2 => pos_embed3, 3 => pos_embed4,
        _ => throw new ArgumentOutOfRangeException(nameof(stage)),
    };

    private PatchEmbed PatchEmbedAt(int stage) => stage switch
    {
        0 => patch_embed1, 1 => patch_embed2, 2 => patch_embed3, 3 => patch_embed4,
        _ => throw new ArgumentOutOfRangeException(nameof(stage)),
    };

    private Dropout PosDropAt(int stage) => stage switch
    {
        0 => pos_drop1, 1 => pos_drop2, 2 => pos_drop3, 3 => pos_drop4,
        _ => throw new ArgumentOutOfRangeException(nameof(stage)),
    };

    private ModuleList<PolaPvtBlock> BlocksAt(int stage) => stage switch
    {
        0 => block1, 1 => block2, 2 => block3, 3 => block4,
        _ => throw new ArgumentOutOfRangeException(nameof(stage)),
    };

}

/// <summary>One Pola-PVT block (official <c>models.pola_pvt.Block</c>): x + attn(norm1(x)), then x + mlp(norm2(x)),
/// each branch with stochastic depth.</summary>
internal sealed class PolaPvtBlock : nn.Module<Tensor, long, long, Tensor>
{
    private readonly LayerNorm norm1;
    private readonly TokenAttention attn;
    private readonly DropPath? drop_path;
    private readonly LayerNorm norm2;
    private readonly Mlp mlp;

    public PolaPvtBlock(PolaPvtOptions options, int stage, (long Height, long Width) inputResolution, double dropPath,
        Device? device, ScalarType? dtype) : base(nameof(PolaPvtBlock))
    {
        long dim = options.EmbedDims[stage], heads = options.NumHeads[stage];
        long srRatio = options.StageSrRatio(stage);
        norm1 = nn.LayerNorm(dim, eps: options.BlockNormEps, device: device, dtype: dtype);
        attn = AttentionRegistry.Create(char.ToUpperInvariant(options.AttentionTypes[stage]), new AttentionSpec
        {
            Dim = dim, NumHeads = heads, Grid = inputResolution, ReductionRatio = srRatio, QkvBias = options.QkvBias,
            QkScale = options.QkScale, AttnDrop = options.AttnDropRate, ProjDrop = options.DropRate, Alpha = options.Alpha,
            KernelSize = options.KernelSize, Implementation = options.Implementation, Device = device, Dtype = dtype,
        });
        if (dropPath > 0) drop_path = new DropPath(dropPath);
        norm2 = nn.LayerNorm(dim, eps: options.BlockNormEps, device: device, dtype: dtype);
        mlp = new Mlp(dim, (long)(dim * options.MlpRatios[stage]), drop: options.DropRate, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Tokens (B, height·width, C) → (B, height·width, C).</summary>
    public override Tensor forward(Tensor x, long height, long width)
    {
        using var scope = NewDisposeScope();
        var branch = attn.forward(norm1.call(x), height, width);
        x = x.Plus(drop_path?.call(branch) ?? branch);
        branch = mlp.call(norm2.call(x));
        x = x.Plus(drop_path?.call(branch) ?? branch);
        return x.MoveToOuterDisposeScope();
    }
}
