using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Models;

/// <summary>One stage's feature map as returned by <see cref="Backbone.ForwardIntermediates"/>.</summary>
/// <param name="Name">Module name of the stage (state-dict prefix), e.g. "layers.1" or "block2".</param>
/// <param name="Channels">Channels C of the (B, C, H, W) map.</param>
/// <param name="Reduction">Stride of the map relative to the input image.</param>
public sealed record FeatureInfo(string Name, long Channels, long Reduction);

/// <summary>
/// The contract every image model in this library follows (timm's): <see cref="ForwardFeatures"/> returns the
/// unpooled last-stage tokens, <see cref="ForwardHead"/> pools and classifies them, <see cref="ForwardIntermediates"/>
/// gives the feature maps listed in <see cref="FeatureInfo"/> for dense tasks, and <see cref="ResetClassifier"/>
/// swaps the head for fine-tuning.
/// </summary>
public abstract class Backbone : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the model.</summary>
    protected Backbone(string name) : base(name) { }

    /// <summary>Input image channels.</summary>
    public abstract long InChannels { get; }

    /// <summary>The image size (height, width) the model was built for: its positional encodings and window
    /// sizes are those of this resolution; other sizes are served by resizing them.</summary>
    public abstract (long Height, long Width) ImageSize { get; }

    /// <summary>Width of the pooled features (input of the classifier).</summary>
    public abstract long NumFeatures { get; }

    /// <summary>Number of classes of the classifier (0 = no classifier, features are returned).</summary>
    public abstract long NumClasses { get; }

    /// <summary>Channels and stride of every stage's feature map.</summary>
    public abstract IReadOnlyList<FeatureInfo> FeatureInfo { get; }

    /// <summary>Parameter names that should not take weight decay (besides 1-D parameters and biases, which a
    /// training recipe normally excludes anyway).</summary>
    public abstract IReadOnlySet<string> NoWeightDecay { get; }

    /// <summary>Name fragments: parameters whose names contain one of these take no weight decay.</summary>
    public virtual IReadOnlySet<string> NoWeightDecayKeywords => new HashSet<string>();

    /// <summary>
    /// Images (B, C, H, W) → the unpooled features of the last stage as tokens (B, N, <see cref="NumFeatures"/>),
    /// after the family's final norm where its classifier uses one (timm's <c>forward_features</c>). A ViT's prefix
    /// tokens (class token) come first.
    /// </summary>
    public abstract Tensor ForwardFeatures(Tensor images);

    /// <summary>
    /// Unpooled features (B, N, <see cref="NumFeatures"/>) from <see cref="ForwardFeatures"/> → pooled features
    /// (B, <see cref="NumFeatures"/>) when <paramref name="preLogits"/>, else logits (B, <see cref="NumClasses"/>)
    /// (timm's <c>forward_head</c>). With no classifier (<see cref="NumClasses"/> = 0) both are the pooled features.
    /// </summary>
    /// <exception cref="ArgumentException">features is not (B, N, <see cref="NumFeatures"/>).</exception>
    public Tensor ForwardHead(Tensor features, bool preLogits = false)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.dim() != 3 || features.shape[2] != NumFeatures || features.shape[1] == 0)
            throw new ArgumentException(
                $"features has shape {Check.Format(features.shape)}; expected the unpooled tokens (B, N, {NumFeatures}) that ForwardFeatures returns.", nameof(features));
        using var scope = NewDisposeScope();
        var pooled = Pool(features);
        return (preLogits ? pooled : Classify(pooled)).MoveToOuterDisposeScope();
    }

    /// <summary>The family's pooling of the unpooled tokens: the mean over tokens, or a class token.</summary>
    protected virtual Tensor Pool(Tensor features) => features.mean([1]);

    /// <summary>The classifier on pooled features. Every family keeps a <c>head</c> submodule: a parameterless
    /// <c>nn.Identity</c> when there is no classifier (<see cref="NumClasses"/> = 0, timm's convention), so the pooled
    /// features come back and the state dict has no <c>head.*</c> entries.</summary>
    protected abstract Tensor Classify(Tensor pooled);

    /// <summary>
    /// Images (B, C, H, W) → the feature maps (B, C_i, H_i, W_i) of the <see cref="FeatureInfo"/> entries selected by
    /// <paramref name="indices"/> (timm's <c>forward_intermediates</c>).
    /// </summary>
    /// <param name="images">The image batch.</param>
    /// <param name="indices">Positions in <see cref="FeatureInfo"/>; negative counts from the end (−1 = last); null
    /// for all.</param>
    /// <param name="norm">Apply the family's final norm where timm does (the last map of a hierarchical model, every
    /// block of a ViT).</param>
    /// <param name="stopEarly">Stop after the last selected entry instead of running the whole model.</param>
    /// <exception cref="ArgumentOutOfRangeException">An index is outside [−count, count).</exception>
    public IReadOnlyList<Tensor> ForwardIntermediates(Tensor images, IReadOnlyList<int>? indices = null, bool norm = false, bool stopEarly = false)
    {
        var wanted = ResolveIndices(indices);
        using var scope = NewDisposeScope();
        var maps = RunIntermediates(images, wanted, norm, stopUntil: stopEarly ? wanted.Max() : FeatureInfo.Count - 1, out _);
        foreach (var map in maps) map.MoveToOuterDisposeScope();
        return maps;
    }

    /// <summary>
    /// <see cref="ForwardFeatures"/> and <see cref="ForwardIntermediates"/> in one pass (timm's
    /// <c>forward_intermediates(..., intermediates_only=False)</c>).
    /// </summary>
    public (Tensor Features, IReadOnlyList<Tensor> Intermediates) ForwardFeaturesAndIntermediates(Tensor images, IReadOnlyList<int>? indices = null, bool norm = false)
    {
        var wanted = ResolveIndices(indices);
        using var scope = NewDisposeScope();
        var maps = RunIntermediates(images, wanted, norm, stopUntil: FeatureInfo.Count - 1, out var features);
        foreach (var map in maps) map.MoveToOuterDisposeScope();
        return (features!.MoveToOuterDisposeScope(), maps);
    }

    /// <summary>
    /// Runs the model up to <see cref="FeatureInfo"/> entry <paramref name="stopUntil"/>, returning the maps of the
    /// <paramref name="wanted"/> entries in order, and — when it ran to the end — the unpooled features.
    /// </summary>
    protected abstract IReadOnlyList<Tensor> RunIntermediates(Tensor images, IReadOnlySet<int> wanted, bool norm, int stopUntil, out Tensor? features);

    private SortedSet<int> ResolveIndices(IReadOnlyList<int>? indices)
    {
        int count = FeatureInfo.Count;
        var wanted = new SortedSet<int>();
        if (indices is null)
        {
            for (int i = 0; i < count; i++) wanted.Add(i);
            return wanted;
        }
        if (indices.Count == 0) throw new ArgumentException("indices is empty; pass null for every feature map.", nameof(indices));
        foreach (int index in indices)
        {
            if (index < -count || index >= count)
                throw new ArgumentOutOfRangeException(nameof(indices), index, $"indices has {index}; expected a position in [{-count}, {count}) of FeatureInfo ({count} entries).");
            wanted.Add(index < 0 ? count + index : index);
        }
        return wanted;
    }

    /// <summary>Replaces the classifier by a new, freshly initialised one with <paramref name="numClasses"/>
    /// outputs (0 = identity: the model returns its pooled features), on the device and dtype the model's parameters
    /// have now.</summary>
    public abstract void ResetClassifier(long numClasses);

    /// <summary>Images (B, C, H, W) → logits (B, <see cref="NumClasses"/>).</summary>
    public override Tensor forward(Tensor images)
    {
        using var scope = NewDisposeScope();
        return ForwardHead(ForwardFeatures(images)).MoveToOuterDisposeScope();
    }

    /// <summary>The device and dtype of the model's parameters now (after any <c>to(...)</c>).</summary>
    protected (Device Device, ScalarType Dtype) ParameterPlacement()
    {
        var first = parameters().First();
        return (first.device, first.dtype);
    }

    /// <summary>Swaps a registered submodule for another under the same name (used by <see cref="ResetClassifier"/>).</summary>
    protected void ReplaceSubmodule(string name, nn.Module replacement)
    {
        ArgumentNullException.ThrowIfNull(replacement);
        register_module(name, null!);
        register_module(name, replacement);
    }
}
