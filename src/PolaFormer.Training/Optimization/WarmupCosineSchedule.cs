namespace PolaFormer.Training.Optimization;

/// <summary>
/// The learning rate per iteration of the official recipe (timm's <c>CosineLRScheduler</c> as Swin builds it:
/// <c>t_initial</c> = all steps, warmup not prefixed, one cycle): linear warmup from <paramref name="WarmupLr"/> to
/// <paramref name="BaseLr"/> over <paramref name="WarmupSteps"/>, then <c>min + ½(base − min)(1 + cos(π t / T))</c>
/// with t counted from the first step, and <paramref name="MinLr"/> after <paramref name="TotalSteps"/>.
/// </summary>
/// <param name="BaseLr">Peak learning rate.</param>
/// <param name="WarmupLr">Learning rate at step 0.</param>
/// <param name="MinLr">Floor of the cosine.</param>
/// <param name="WarmupSteps">Iterations of linear warmup.</param>
/// <param name="TotalSteps">All iterations of the run.</param>
public sealed record WarmupCosineSchedule(double BaseLr, double WarmupLr, double MinLr, long WarmupSteps, long TotalSteps)
{
    /// <summary>The learning rate for iteration <paramref name="step"/> (0-based).</summary>
    public double At(long step)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), step, "step must be 0 or more.");
        if (step < WarmupSteps) return WarmupLr + step * (BaseLr - WarmupLr) / WarmupSteps;
        if (step >= TotalSteps) return MinLr;
        return MinLr + 0.5 * (BaseLr - MinLr) * (1 + Math.Cos(Math.PI * step / TotalSteps));
    }
}
