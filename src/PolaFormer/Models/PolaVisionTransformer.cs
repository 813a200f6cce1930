using System.Collections.Frozen;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Models;

// Field names (patch_embed, cls_token, pos_embed, blocks, norm1, attn, norm2, mlp, norm, head) follow timm's
// VisionTransformer so the state dict reads like one.
#pragma warning disable IDE1006

/// <summary>Hyper-parameters of <see cref="PolaVisionTransformer"/> (DeiT-style plain ViT with polarity attention).</summary>
public sealed record PolaVitOptions
{
    /// <summary>Image size (height, width) the model is built for: the positional embedding covers its
    /// (height, width) / <see cref="PatchSize"/> grid, so both sides must be multiples of the patch size. Other sizes
    /// resize the positional embedding.</summary>
    public (long Height, long Width) ImageSize { get; init; } = (224, 224);

    /// <summary>Patch size (kernel and stride of the patch embedding).</summary>
    public long PatchSize { get; init; } = 16;

    /// <summary>Input channels.</summary>
    public long InChannels { get; init; } = 3;

    /// <summary>Classes of the classifier (0 = none).</summary>
    public long NumClasses { get; init; } = 1000;

    /// <summary>Token width.</summary>
    public long EmbedDim { get; init; } = 384;

    /// <summary>Blocks.</summary>
    public long Depth { get; init; } = 12;

    /// <summary>Heads per block; EmbedDim / NumHeads must be even for polarity attention.</summary>
    public long NumHeads { get; init; } = 6;

    /// <summary>MLP hidden width / EmbedDim.</summary>
    public double MlpRatio { get; init; } = 4;

    /// <summary>Bias in the attention projections.</summary>
    public bool QkvBias { get; init; } = true;

    /// <summary>Dropout after the positional embedding and in the MLPs.</summary>
    public double DropRate { get; init; }

    /// <summary>Stochastic depth of the last block; earlier blocks scale linearly from 0.</summary>
    public double DropPathRate { get; init; } = 0.1;

    /// <summary>'L' (polarity) or 'S' (softmax): the attention of every block (a plain ViT has one stage).</summary>
    public string AttentionTypes { get; init; } = "L";

    /// <summary>Scale of the learnable power, power = 1 + alpha·sigmoid(p).</summary>
    public double Alpha { get; init; } = 4;

    /// <summary>Kernel of the depthwise convolution on v (odd).</summary>
    public long KernelSize { get; init; } = 5;

    /// <summary>
    /// False (default): no class token, the classifier reads the mean of the patch tokens — the pooling the official
    /// PolaFormer models use. True: a class token is prepended; it joins q/k/v in every block while the depthwise
    /// convolution sees only the patch tokens, and the classifier reads it (DeiT's choice).
    /// </summary>
    public bool ClassToken { get; init; }

    /// <summary>Epsilon of every LayerNorm (timm's ViT uses 1e-6).</summary>
    public double NormEps { get; init; } = 1e-6;

    /// <summary>Which formulation of the polarity maths runs.</summary>
    public PolarityImplementation Implementation { get; init; } = PolarityImplementation.Fast;

    /// <summary>The presets: <c>pola_vit_tiny</c> / <c>small</c> / <c>base</c> = 192 / 384 / 768 wide, 12 deep,
    /// 3 / 6 / 12 heads, patch 16, 224², drop path 0.1 (DeiT's).</summary>
    public static IReadOnlyDictionary<string, PolaVitOptions> Presets { get; } = new Dictionary<string, PolaVitOptions>
    {
        ["pola_vit_tiny"] = new() { EmbedDim = 192, NumHeads = 3 },
        ["pola_vit_small"] = new() { EmbedDim = 384, NumHeads = 6 },
        ["pola_vit_base"] = new() { EmbedDim = 768, NumHeads = 12 },
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Checks every property; the message names it (<c>options.Property</c>), its value and what was
    /// expected. The model's constructor calls it.</summary>
    /// <param name="paramName">How the caller names the options (the constructor's <c>options</c>).</param>
    /// <exception cref="ArgumentException">A property is invalid.</exception>
    public void Validate(string paramName = "options")
    {
        var check = new OptionsCheck(paramName);
        check.Positive(PatchSize, nameof(PatchSize));
        check.ImageSize(ImageSize, nameof(ImageSize), PatchSize, $"{check.Name(nameof(PatchSize))} = {PatchSize}");
        check.Positive(InChannels, nameof(InChannels));
        check.NumClasses(NumClasses);
        check.Positive(EmbedDim, nameof(EmbedDim));
        check.That(Depth is > 0 and <= int.MaxValue, nameof(Depth), Depth, "a positive number of blocks");
        check.Positive(NumHeads, nameof(NumHeads));
        check.That(MlpRatio > 0 && double.IsFinite(MlpRatio) && (long)(EmbedDim * MlpRatio) >= 1, nameof(MlpRatio), MlpRatio,
            "a positive ratio giving at least one hidden channel");
        check.Probability(DropRate, nameof(DropRate));
        check.Probability(DropPathRate, nameof(DropPathRate));
        char kind = check.Stages(AttentionTypes, 1, nameof(AttentionTypes))[0];
        if (EmbedDim % NumHeads != 0)
            throw check.Fail($"{check.Name(nameof(EmbedDim))} = {EmbedDim} is not divisible by {check.Name(nameof(NumHeads))} = {NumHeads}.");
        if (kind == 'L' && EmbedDim / NumHeads % 2 != 0)
            throw check.Fail($"{check.Name(nameof(EmbedDim))} = {EmbedDim} with {check.Name(nameof(NumHeads))} = {NumHeads} gives a head dimension of {EmbedDim / NumHeads}; polarity ('L') attention needs an even head dimension.");
        check.Positive(Alpha, nameof(Alpha));
        check.OddKernel(KernelSize, nameof(KernelSize));
        check.Positive(NormEps, nameof(NormEps), "a small positive number such as 1e-6");
        check.Defined(Implementation, nameof(Implementation));
    }
}

/// <summary>
/// A plain (DeiT-style) Vision Transformer whose blocks use polarity-aware linear attention. The official PolaFormer
/// repository has no ViT; this one follows the paper's recipe for it: polarity attention in every block with the
/// depthwise convolution over the patch grid, mean-pooled classifier by default.
/// </summary>
public sealed class PolaVisionTransformer : Backbone
{
    /// <summary>The family name in <see cref="ModelInfo.Family"/>.</summary>
    public const string FamilyName = "ViT";

    /// <summary>ImageNet-1k top-1 (%) reported for the presets: none (the official repository has no ViT).</summary>
    private static readonly FrozenDictionary<string, double> ReportedTop1 = FrozenDictionary<string, double>.Empty;

    /// <summary>Registers the presets with <see cref="ModelRegistry"/> when the library loads.</summary>
    [System.Runtime.CompilerServices.ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "A family registers its presets itself, so the registry never lists families.")]
    internal static void RegisterPresets() => ModelRegistry.RegisterFamily(FamilyName, PolaVitOptions.Presets,
        (name, o) => new ModelInfo(name, FamilyName, o.ImageSize, o.AttentionTypes, ReportedTop1.TryGetValue(name, out var top1) ? top1 : null),
        (o, x, device, dtype) => new PolaVisionTransformer(o with
        {
            NumClasses = x.NumClasses ?? o.NumClasses,
            DropPathRate = x.DropPathRate ?? o.DropPathRate,
            AttentionTypes = x.AttentionTypes ?? o.AttentionTypes,
            ImageSize = x.ImageSize ?? o.ImageSize,
        }, device, dtype));

    private readonly PatchEmbed patch_embed;
    private readonly Parameter? cls_token;
    private readonly Parameter pos_embed;
    private readonly Dropout pos_drop;
    private readonly ModuleList<VitBlock> blocks;
    private readonly LayerNorm norm;
    private nn.Module<Tensor, Tensor> head;
    private readonly PositionalEncodingResizer _positionResizer;
    private readonly long _prefix;
    private readonly (long Height, long Width) _grid;

    /// <summary>Builds the model.</summary>
    /// <param name="options">Hyper-parameters (default: pola_vit_small).</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public PolaVisionTransformer(PolaVitOptions? options = null, Device? device = null, ScalarType? dtype = null)
        : base(nameof(PolaVisionTransformer))
    {
        Options = options ??= new PolaVitOptions();
        options.Validate(nameof(options));
        var (h, w) = options.ImageSize;
        char kind = AttentionRegistry.ParseStages(options.AttentionTypes, 1, "options.AttentionTypes")[0];
        _numClasses = options.NumClasses;

        _prefix = options.ClassToken ? 1 : 0;
        _grid = (h / options.PatchSize, w / options.PatchSize);
        long dim = options.EmbedDim, tokens = _grid.Height * _grid.Width;

        patch_embed = new PatchEmbed(options.InChannels, dim, options.PatchSize, normalize: false, device: device, dtype: dtype);
        if (options.ClassToken) cls_token = new Parameter(zeros(1, 1, dim, dtype: dtype, device: device));
        pos_embed = new Parameter(zeros(1, _prefix + tokens, dim, dtype: dtype, device: device));
        pos_drop = nn.Dropout(options.DropRate);
        var rates = DropPath.LinearSchedule(options.DropPathRate, checked((int)options.Depth));
        blocks = new ModuleList<VitBlock>(Enumerable.Range(0, rates.Length)
            .Select(i => new VitBlock(options, kind, _grid, _prefix, rates[i], device, dtype)).ToArray());
        norm = nn.LayerNorm(dim, eps: options.NormEps, device: device, dtype: dtype);
        head = MakeHead(options.NumClasses, (device ?? CPU, dtype ?? get_default_dtype()));
        _positionResizer = new PositionalEncodingResizer(_grid.Height, _grid.Width);

        RegisterComponents();
        Initialization.TruncatedNormalLinears(this);
        Initialization.TruncatedNormal_(pos_embed, std: 0.02);
        if (cls_token is not null) Initialization.TruncatedNormal_(cls_token, std: 0.02);
    }

    /// <summary>The hyper-parameters the model was built with.</summary>
    public PolaVitOptions Options { get; }

    /// <inheritdoc />
    public override long InChannels => Options.InChannels;

    /// <inheritdoc />
    public override (long Height, long Width) ImageSize => Options.ImageSize;

    /// <inheritdoc />
    public override long NumFeatures => Options.EmbedDim;

    /// <inheritdoc />
    public override long NumClasses => _numClasses;
    private long _numClasses;

    /// <inheritdoc />
    /// <remarks>One entry per block, "blocks.i", each (B, EmbedDim, H/PatchSize, W/PatchSize), as timm's ViT.</remarks>
    public override IReadOnlyList<FeatureInfo> FeatureInfo =>
        [.. Enumerable.Range(0, blocks.Count).Select(i => new FeatureInfo($"blocks.{i}", Options.EmbedDim, Options.PatchSize))];

    /// <inheritdoc />
    /// <remarks>The positional embedding and the class token, as timm's ViT.</remarks>
    public override IReadOnlySet<string> NoWeightDecay =>
        Options.ClassToken ? new HashSet<string> { "pos_embed", "cls_token" } : new HashSet<string> { "pos_embed" };

    /// <inheritdoc />
    /// <remarks>All tokens after the final norm, the class token first when the model has one: (B, prefix + N, C).</remarks>
    public override Tensor ForwardFeatures(Tensor images)
    {
        using var scope = NewDisposeScope();
        return Encode(images, null, norm: false, blocks.Count - 1, null).Tokens!.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    /// <remarks>The class token, or the mean of the tokens when there is none.</remarks>
    protected override Tensor Pool(Tensor features) => cls_token is not null ? features[.., 0] : features.mean([1]);

    /// <inheritdoc />
    protected override Tensor Classify(Tensor pooled) => head.call(pooled);

    /// <inheritdoc />
    /// <remarks>Entry i is the patch tokens after block i as a map (B, EmbedDim, H/16, W/16), prefix tokens dropped;
    /// with <c>norm</c>, each after the final norm (as timm).</remarks>
    protected override IReadOnlyList<Tensor> RunIntermediates(Tensor images, IReadOnlySet<int> wanted, bool norm, int stopUntil, out Tensor? features)
    {
        var maps = new List<Tensor>(wanted.Count);
        features = Encode(images, wanted, norm, stopUntil, maps).Tokens;
        return maps;
    }

    /// <inheritdoc />
    public override void ResetClassifier(long numClasses)
    {
        if (numClasses < 0) throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "numClasses must be 0 (no classifier) or more.");
        var old = head;
        head = MakeHead(numClasses, ParameterPlacement());
        head.train(training);
        ReplaceSubmodule(nameof(head), head);
        old.Dispose();
        _numClasses = numClasses;
    }

    /// <summary>Patch embedding, positional embedding, blocks 0 … <paramref name="stopUntil"/> (adding the maps of the
    /// <paramref name="wanted"/> blocks) and the final norm: the tokens (B, prefix + N, C), or null when it stopped
    /// before the last block.</summary>
    private (Tensor? Tokens, long Height, long Width) Encode(Tensor images, IReadOnlySet<int>? wanted, bool norm, int stopUntil, List<Tensor>? maps)
    {
        Check.Images(images, InChannels, nameof(images));
        Check.MatchesParameters(images, patch_embed.Weight, nameof(images));
        long ph = images.shape[2], pw = images.shape[3], p = Options.PatchSize;
        if (ph % p != 0 || pw % p != 0)
            throw new ArgumentException($"images are {ph} × {pw}; both sides must be multiples of the patch size {p}.", nameof(images));
        var (x, h, w) = patch_embed.Embed(images);
        if (cls_token is not null) x = cat([cls_token.expand(x.shape[0], -1, -1), x], 1);
        x = pos_drop.call(x.Plus(PositionalEmbedding(h, w)));
        for (int i = 0; i < blocks.Count; i++)
        {
            x = blocks[i].call(x, h, w);
            if (wanted?.Contains(i) == true)
            {
                var tokens = (norm ? this.norm.call(x) : x)[.., (int)_prefix..];
                maps!.Add(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w));
            }
            if (i == stopUntil && i < blocks.Count - 1) return (null, h, w);
        }
        return (this.norm.call(x), h, w);
    }

    private Tensor PositionalEmbedding(long h, long w)
    {
        if (_prefix == 0) return _positionResizer.Resize(pos_embed, h, w);
        if ((h, w) == _grid) return pos_embed;
        var grid = _positionResizer.Resize(pos_embed[.., (int)_prefix..], h, w);
        return cat([pos_embed[.., ..(int)_prefix], grid], 1);
    }

    private nn.Module<Tensor, Tensor> MakeHead(long numClasses, (Device Device, ScalarType Dtype) placement)
    {
        if (numClasses == 0) return nn.Identity();
        var linear = nn.Linear(Options.EmbedDim, numClasses, device: placement.Device, dtype: placement.Dtype);
        Initialization.TruncatedNormal_(linear.weight!, std: 0.02);
        using (no_grad()) linear.bias!.zero_();
        return linear;
    }

    /// <summary>Pre-norm transformer block on (B, prefix + H·W, C).</summary>
    private sealed class VitBlock : nn.Module<Tensor, long, long, Tensor>
    {
        private readonly LayerNorm norm1;
        private readonly TokenAttention attn;
        private readonly DropPath drop_path;
        private readonly LayerNorm norm2;
        private readonly Mlp mlp;

        public VitBlock(PolaVitOptions o, char kind, (long Height, long Width) grid, long prefix, double dropPath,
            Device? device, ScalarType? dtype) : base(nameof(VitBlock))
        {
            norm1 = nn.LayerNorm(o.EmbedDim, eps: o.NormEps, device: device, dtype: dtype);
            attn = AttentionRegistry.Create(kind, new AttentionSpec
            {
                Dim = o.EmbedDim, NumHeads = o.NumHeads, Grid = grid, PrefixTokens = prefix, QkvBias = o.QkvBias,
                ProjDrop = o.DropRate, Alpha = o.Alpha, KernelSize = o.KernelSize, Implementation = o.Implementation,
                Device = device, Dtype = dtype,
            });
            drop_path = new DropPath(dropPath);
            norm2 = nn.LayerNorm(o.EmbedDim, eps: o.NormEps, device: device, dtype: dtype);
            mlp = new Mlp(o.EmbedDim, (long)(o.EmbedDim * o.MlpRatio), drop: o.DropRate, device: device, dtype: dtype);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x, long height, long width)
        {
            using var scope = NewDisposeScope();
            x = x.Plus(drop_path.call(attn.forward(norm1.call(x), height, width)));
            x = x.Plus(drop_path.call(mlp.call(norm2.call(x))));
            return x.MoveToOuterDisposeScope();
        }
    }
}
