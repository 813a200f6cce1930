using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace PolaFormer.Benchmarks;

/// <summary>Times an action: warm-up first (the first LibTorch iterations are several times slower), then the
/// median of enough iterations to be stable.</summary>
internal static class Measurement
{
    public sealed record Result(double MedianMs, double MinMs, double MaxMs, int Iterations, long PeakRssBytes);

    public static Result Time(Action action, int warmup = 5, int minIterations = 15, double minSeconds = 3, int maxIterations = 1000)
    {
        for (int i = 0; i < warmup; i++) action();
        var samples = new List<double>();
        var total = Stopwatch.StartNew();
        while (samples.Count < maxIterations && (samples.Count < minIterations || total.Elapsed.TotalSeconds < minSeconds))
        {
            var sw = Stopwatch.StartNew();
            action();
            samples.Add(sw.Elapsed.TotalMilliseconds);
        }
        samples.Sort();
        double median = samples.Count % 2 == 1
            ? samples[samples.Count / 2]
            : (samples[samples.Count / 2 - 1] + samples[samples.Count / 2]) / 2;
        return new Result(median, samples[0], samples[^1], samples.Count, PeakRss());
    }

    /// <summary>Peak resident set size of this process (VmHWM), in bytes; -1 where /proc is unavailable.</summary>
    public static long PeakRss()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { }
        return -1;
    }

    /// <summary>Resident set size now (VmRSS), in bytes.</summary>
    public static long CurrentRss()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { }
        return -1;
    }

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };
}
