using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Models;

/// <summary>One stage's feature map as returned by <see cref="Backbone.ForwardIntermediates"/>.</summary>
/// <param name="Name">Module name of the stage (state-dict prefix), e.g. "layers.1" or "block2".</param>
/// <param name="Channels">Channels C of the (B, C, H, W) map.</param>
/// <param name="Reduction">Stride of the map relative to the input image.</param>
public sealed record FeatureInfo(string Name, long Channels, long Reduction);

/// <summary>
/// The shape every image classifier in this library shares (timm's conventions): <see cref="ForwardFeatures"/>
/// returns pooled features, <see cref="ForwardHead"/> the logits, <see cref="ForwardIntermediates"/> per-stage
/// feature maps for dense tasks.
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

    /// <summary>Images (B, C, H, W) → pooled features (B, <see cref="NumFeatures"/>).</summary>
    public abstract Tensor ForwardFeatures(Tensor images);

    /// <summary>Pooled features (B, <see cref="NumFeatures"/>) → logits (B, <see cref="NumClasses"/>).</summary>
    public abstract Tensor ForwardHead(Tensor features);

    /// <summary>Images (B, C, H, W) → one (B, C_i, H_i, W_i) map per stage, as listed in
    /// <see cref="FeatureInfo"/>.</summary>
    public abstract IReadOnlyList<Tensor> ForwardIntermediates(Tensor images);

    /// <summary>Replaces the classifier by a new, freshly initialised one with <paramref name="numClasses"/>
    /// outputs (0 = identity: the model returns its pooled features).</summary>
    public abstract void ResetClassifier(long numClasses);

    /// <summary>Images (B, C, H, W) → logits (B, <see cref="NumClasses"/>).</summary>
    public override Tensor forward(Tensor images)
    {
        using var scope = NewDisposeScope();
        return ForwardHead(ForwardFeatures(images)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// When set, called with (module name, output) for every block and stage-level submodule during the forward
    /// pass — the names the golden reference files use for <c>inter.*</c> tensors. For locating numerical
    /// differences; leave null otherwise.
    /// </summary>
    public Action<string, Tensor>? IntermediateObserver { get; set; }

    /// <summary>Swaps a registered submodule for another under the same name (used by <see cref="ResetClassifier"/>).</summary>
    protected void ReplaceSubmodule(string name, nn.Module replacement)
    {
        ArgumentNullException.ThrowIfNull(replacement);
        register_module(name, null!);
        register_module(name, replacement);
    }

    /// <summary>Throws unless <paramref name="features"/> is (B, <see cref="NumFeatures"/>), the input of the head.</summary>
    /// <exception cref="ArgumentException">features has another shape.</exception>
    protected void CheckFeatures(Tensor features)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.dim() != 2 || features.shape[1] != NumFeatures)
            throw new ArgumentException($"features has shape {Check.Format(features.shape)}; expected (B, {NumFeatures}).", nameof(features));
    }

    /// <summary>Reports an intermediate to <see cref="IntermediateObserver"/>.</summary>
    protected void Observe(string name, Tensor value) => IntermediateObserver?.Invoke(name, value);
}
