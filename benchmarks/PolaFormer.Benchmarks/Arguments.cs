using System.Globalization;

namespace PolaFormer.Benchmarks;

/// <summary>Minimal <c>--name value</c> / <c>--flag</c> parsing for the scripted benchmark modes.</summary>
internal sealed class Arguments
{
    private readonly Dictionary<string, string> _values = new();
    private readonly HashSet<string> _flags = new();

    public Arguments(IEnumerable<string> args)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            if (!list[i].StartsWith("--", StringComparison.Ordinal))
                throw new ArgumentException($"Unexpected argument '{list[i]}'; expected --name value pairs.");
            var name = list[i][2..];
            if (i + 1 < list.Count && !list[i + 1].StartsWith("--", StringComparison.Ordinal)) _values[name] = list[++i];
            else _flags.Add(name);
        }
    }

    public string Text(string name, string fallback) => _values.GetValueOrDefault(name, fallback);

    public long Int(string name, long fallback)
    {
        if (!_values.TryGetValue(name, out var text)) return fallback;
        return long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new ArgumentException($"--{name} is '{text}'; expected an integer.");
    }

    public double Double(string name, double fallback)
    {
        if (!_values.TryGetValue(name, out var text)) return fallback;
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new ArgumentException($"--{name} is '{text}'; expected a number.");
    }

    public bool Flag(string name) => _flags.Contains(name);

    /// <summary>The <c>--cpu-runtime</c> value anywhere on the command line (default: tuned).</summary>
    public static string CpuRuntime(IReadOnlyList<string> args)
    {
        int i = args.ToList().IndexOf("--cpu-runtime");
        return i >= 0 && i + 1 < args.Count ? args[i + 1] : "tuned";
    }
}
