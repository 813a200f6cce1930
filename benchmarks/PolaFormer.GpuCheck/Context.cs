using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.GpuCheck;

/// <summary>The command line: a mode first, then <c>--name value</c> options and the flags listed in <see cref="Flags"/>.</summary>
internal sealed class Arguments
{
    private static readonly HashSet<string> Flags = ["quick", "isolate", "no-isolate", "single"];
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    public Arguments(string[] args)
    {
        Raw = args;
        if (args.Length == 0 || args[0].StartsWith("--", StringComparison.Ordinal))
            throw new ArgumentException("expected a mode first: info, conformance, train, bench-models or bench-attention.");
        Mode = args[0];
        for (int i = 1; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"unexpected argument '{args[i]}'.");
            string name = args[i][2..];
            if (Flags.Contains(name)) { _values[name] = "true"; continue; }
            if (i + 1 >= args.Length) throw new ArgumentException($"--{name} needs a value.");
            _values[name] = args[++i];
        }
    }

    public string[] Raw { get; }
    public string Mode { get; }
    public bool Has(string name) => _values.ContainsKey(name);
    public bool Flag(string name) => _values.ContainsKey(name);
    public string Text(string name, string fallback) => _values.TryGetValue(name, out var v) ? v : fallback;
    public long Int(string name, long fallback) => _values.TryGetValue(name, out var v) ? long.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public double Real(string name, double fallback) => _values.TryGetValue(name, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public string[] List(string name, string fallback) => Text(name, fallback).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    public long[] Ints(string name, string fallback) => List(name, fallback).Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToArray();
}

/// <summary>What every mode needs: the device, quick mode (small sizes for a CPU dry run), the golden folder.</summary>
internal sealed class Context
{
    public Context(Arguments args)
    {
        Args = args;
        DeviceName = args.Text("device", "cuda");
        if (DeviceName is not ("cuda" or "cpu")) throw new ArgumentException($"--device is '{DeviceName}'; expected cuda or cpu.");
        Quick = args.Flag("quick");
        GoldenFolder = args.Text("golden", Path.Combine(AppContext.BaseDirectory, "golden"));
        Threads = (int)args.Int("threads", Math.Max(1, Math.Min(16, Environment.ProcessorCount)));
    }

    public Arguments Args { get; }
    public string DeviceName { get; }
    public bool IsCuda => DeviceName == "cuda";
    public bool Quick { get; }
    public string GoldenFolder { get; }
    public int Threads { get; }
    public Device Device => IsCuda ? CUDA : CPU;

    /// <summary>Waits for the GPU's queued work (timings must include it); nothing on the CPU.</summary>
    public void Synchronize()
    {
        if (IsCuda) torch.cuda.synchronize();
    }

    /// <summary>TF32 for matmuls (cuBLAS) and convolutions (cuDNN); a no-op on the CPU.</summary>
    public void SetTf32(bool on)
    {
        if (!IsCuda) return;
        torch.backends.cuda.matmul.allow_tf32 = on;
        torch.backends.cudnn.allow_tf32 = on;
    }

    public string Tf32State() => IsCuda
        ? $"matmul={torch.backends.cuda.matmul.allow_tf32.ToString().ToLowerInvariant()},cudnn={torch.backends.cudnn.allow_tf32.ToString().ToLowerInvariant()}"
        : "n/a";
}
