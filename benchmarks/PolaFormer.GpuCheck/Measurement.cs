using System.Text.Json;
using System.Text.Json.Serialization;

namespace PolaFormer.GpuCheck;

/// <summary>The check's timing rule on top of the shared <see cref="Timing"/> (benchmarks/Shared): a device
/// synchronise after the warm-up and after every timed iteration, no cap on the iteration count, every warm-up
/// iteration run; <c>--quick</c> shortens it to 1 warm-up and 3 iterations.</summary>
internal static class GpuTiming
{
    public static Timing.Result Measure(Context ctx, Action step, int warmup = 5, int minIterations = 15, double minSeconds = 1, double maxSeconds = 20)
    {
        if (ctx.Quick) (warmup, minIterations, minSeconds) = (1, 3, 0);
        var options = new TimingOptions(warmup, minIterations, minSeconds, maxSeconds, MaxIterations: int.MaxValue, MaxWarmupSeconds: double.PositiveInfinity);
        return Timing.Measure(step, options, ctx.Synchronize);
    }

    /// <summary>A probe of the memory one configuration needs on the context's device (see <see cref="MemoryProbe"/>).</summary>
    public static MemoryProbe Probe(Context ctx) => new(ctx.IsCuda, ctx.Synchronize);
}

internal static class Json
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public static void WriteLine(Dictionary<string, object?> fields) => Console.WriteLine(JsonSerializer.Serialize(fields, Options));
}
