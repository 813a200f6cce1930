using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Layers;

// Field names (fc1, act, fc2) are the official PyTorch attribute names (state-dict keys).
#pragma warning disable IDE1006

/// <summary>The transformer feed-forward block: Linear → exact (erf) GELU → dropout → Linear → dropout.</summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private readonly Linear fc1;
    private readonly GELU act;
    private readonly Linear fc2;
    private readonly Dropout drop;

    /// <summary>Creates the block.</summary>
    /// <param name="inFeatures">Input channels.</param>
    /// <param name="hiddenFeatures">Hidden channels (default: <paramref name="inFeatures"/>).</param>
    /// <param name="outFeatures">Output channels (default: <paramref name="inFeatures"/>).</param>
    /// <param name="drop">Dropout probability.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public Mlp(long inFeatures, long? hiddenFeatures = null, long? outFeatures = null, double drop = 0,
        Device? device = null, ScalarType? dtype = null) : base(nameof(Mlp))
    {
        Check.Positive(inFeatures, nameof(inFeatures));
        Check.Probability(drop, nameof(drop));
        long hidden = hiddenFeatures ?? inFeatures, output = outFeatures ?? inFeatures;
        Check.Positive(hidden, nameof(hiddenFeatures));
        Check.Positive(output, nameof(outFeatures));
        fc1 = nn.Linear(inFeatures, hidden, device: device, dtype: dtype);
        act = nn.GELU();
        fc2 = nn.Linear(hidden, output, device: device, dtype: dtype);
        this.drop = nn.Dropout(drop);
        RegisterComponents();
    }

    /// <summary>(…, in) → (…, out).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = drop.call(act.call(fc1.call(x)));
        return drop.call(fc2.call(h)).MoveToOuterDisposeScope();
    }
}
