namespace PolaFormer.Benchmarks.Shared;

/// <summary>The command-line side of the shared <see cref="TimingOptions"/>.</summary>
internal sealed partial record TimingOptions
{
    /// <summary>Reads <c>--warmup</c>, <c>--iterations</c>, <c>--min-seconds</c>, <c>--max-seconds</c>,
    /// <c>--max-iterations</c> over the given defaults.</summary>
    public static TimingOptions From(Arguments args, TimingOptions defaults) => defaults with
    {
        Warmup = (int)args.Int("warmup", defaults.Warmup),
        MinIterations = (int)args.Int("iterations", defaults.MinIterations),
        MinSeconds = args.Double("min-seconds", defaults.MinSeconds),
        MaxSeconds = args.Double("max-seconds", defaults.MaxSeconds),
        MaxIterations = (int)args.Int("max-iterations", defaults.MaxIterations),
    };
}
