using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Training.Optimization;

/// <summary>
/// Loss scaling for float16 training (PyTorch's <c>GradScaler</c> semantics; TorchSharp has none): the loss is
/// multiplied by a scale before backward so small gradients survive float16; before the optimiser step the gradients
/// are divided back and checked; a step with an infinite or NaN gradient is skipped and the scale halved, and after
/// <c>growthInterval</c> good steps in a row the scale doubles.
/// </summary>
public sealed class DynamicLossScaler
{
    private readonly double _growth, _backoff;
    private readonly int _growthInterval;
    private int _goodSteps;

    /// <summary>Creates the scaler with PyTorch's defaults.</summary>
    public DynamicLossScaler(double initialScale = 65536, double growthFactor = 2, double backoffFactor = 0.5, int growthInterval = 2000)
    {
        if (!(initialScale > 0)) throw new ArgumentOutOfRangeException(nameof(initialScale), initialScale, "initialScale must be positive.");
        if (!(growthFactor > 1)) throw new ArgumentOutOfRangeException(nameof(growthFactor), growthFactor, "growthFactor must be above 1.");
        if (!(backoffFactor is > 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(backoffFactor), backoffFactor, "backoffFactor must be in (0, 1).");
        if (growthInterval < 1) throw new ArgumentOutOfRangeException(nameof(growthInterval), growthInterval, "growthInterval must be at least 1.");
        Scale = initialScale;
        (_growth, _backoff, _growthInterval) = (growthFactor, backoffFactor, growthInterval);
    }

    /// <summary>The current scale.</summary>
    public double Scale { get; private set; }

    /// <summary>Steps skipped because a gradient was not finite.</summary>
    public long SkippedSteps { get; private set; }

    /// <summary>loss × scale, to call backward on.</summary>
    public Tensor ScaleLoss(Tensor loss)
    {
        using var scale = Scale.ToScalar();   // explicit: implicit Scalars can be freed mid-call (docs/known-issues.md)
        return loss.mul(scale);
    }

    /// <summary>
    /// Divides every gradient by the scale and reports whether all are finite. When one is not, the gradients are
    /// zeroed, the scale backs off and the caller must skip the optimiser step. One host sync per call.
    /// </summary>
    public bool Unscale(IEnumerable<Parameter> parameters)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Cast<Tensor>().ToList();
        Tensor? finite = null;
        using var scale = Scale.ToScalar();
        foreach (var g in grads)
        {
            g.div_(scale);
            var ok = g.isfinite().all();
            finite = finite is null ? ok : finite.logical_and(ok);
        }
        bool allFinite = finite is null || finite.item<bool>();
        if (!allFinite) foreach (var g in grads) g.zero_();
        return Account(allFinite);
    }

    /// <summary>
    /// <see cref="Unscale(IEnumerable{Parameter})"/> for a flat training state: one division, one finiteness check
    /// and one host sync over all gradients.
    /// </summary>
    public bool Unscale(FlatParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var grads = parameters.Gradients;
        using var scale = Scale.ToScalar();
        grads.div_(scale);
        bool allFinite = grads.isfinite().all().item<bool>();
        if (!allFinite) grads.zero_();
        return Account(allFinite);
    }

    private bool Account(bool allFinite)
    {
        if (allFinite)
        {
            if (++_goodSteps >= _growthInterval)
            {
                Scale *= _growth;
                _goodSteps = 0;
            }
        }
        else
        {
            Scale *= _backoff;
            _goodSteps = 0;
            SkippedSteps++;
        }
        return allFinite;
    }
}
