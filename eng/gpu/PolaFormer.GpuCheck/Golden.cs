using System.Globalization;
using PolaFormer.Attention;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using static TorchSharp.torch;

namespace PolaFormer.GpuCheck;

// The minimal parts of tests/PolaFormer.Tests/Infrastructure/GoldenCase.cs, GoldenModules.cs, Tolerance.cs and the
// model builders of tests/PolaFormer.Tests/Models/*Tests.cs, copied so that this program carries no test framework.
// Keep them in step with the tests when those change.

/// <summary>One golden file made by the official PyTorch code (see tests/PolaFormer.Tests/Golden/README.md).</summary>
internal sealed class GoldenCase : IDisposable
{
    public const string SwinPolarity = "models.pola_swin.PolaLinearAttention";
    public const string PvtPolarity = "models.pola_pvt.PolaLinearAttention";
    public const string SwinSoftmax = "models.pola_swin.WindowAttention";
    public const string PvtSoftmax = "models.pola_pvt.Attention";
    public const string SwinModel = "models.pola_swin.PolaSwinTransformer";
    public const string PvtModel = "models.pola_pvt.PyramidVisionTransformer";

    private readonly SafeTensorsFile _file;

    public GoldenCase(string path)
    {
        Id = System.IO.Path.GetFileName(path);
        _file = SafeTensors.Load(path);
        var companion = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(path)!, "f64", System.IO.Path.GetFileName(path));
        Float64 = File.Exists(companion) ? SafeTensors.Load(companion) : null;
    }

    public string Id { get; }
    public IReadOnlyDictionary<string, string> Metadata => _file.Metadata;
    public IReadOnlyDictionary<string, Tensor> Tensors => _file.Tensors;
    public SafeTensorsFile? Float64 { get; }
    public string Kind => Metadata["kind"];
    public string Module => Metadata["module"];

    public Tensor this[string name] => Tensors.TryGetValue(name, out var t)
        ? t
        : throw new KeyNotFoundException($"Golden case {Id} has no tensor '{name}'.");

    public Dictionary<string, Tensor> StateDict() => Tensors
        .Where(kv => !(kv.Key.StartsWith("input.", StringComparison.Ordinal) || kv.Key.StartsWith("output.", StringComparison.Ordinal)
                       || kv.Key.StartsWith("grad.", StringComparison.Ordinal) || kv.Key.StartsWith("inter.", StringComparison.Ordinal)))
        .ToDictionary(kv => kv.Key, kv => kv.Value);

    public string Text(string key) => Metadata.TryGetValue(key, out var v) ? v : throw new KeyNotFoundException($"Golden case {Id} has no metadata '{key}'.");
    public long Int(string key) => long.Parse(Text(key), CultureInfo.InvariantCulture);
    public double Real(string key) => double.Parse(Text(key), CultureInfo.InvariantCulture);
    public bool Flag(string key) => Text(key).Equals("true", StringComparison.OrdinalIgnoreCase);
    public long[] Ints(string key) => Text(key).Split(',').Select(s => long.Parse(s.Trim(), CultureInfo.InvariantCulture)).ToArray();
    public bool Has(string key) => Metadata.ContainsKey(key);
    public bool IsPolarityAttention => Module is SwinPolarity or PvtPolarity;

    public void Dispose()
    {
        _file.Dispose();
        Float64?.Dispose();
    }
}

/// <summary>The scaled max-abs error of the golden README: max|actual − expected| / max|expected|.</summary>
internal static class Tolerance
{
    public static double ScaledError(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var a = actual.detach().cpu().to(float64);
        var e = expected.detach().cpu().to(float64);
        if (!a.shape.SequenceEqual(e.shape))
            throw new InvalidOperationException($"shape [{string.Join(",", a.shape)}] differs from the golden [{string.Join(",", e.shape)}]");
        double maxAbs = (a - e).abs().max().item<double>();
        double scale = e.abs().max().item<double>();
        return scale == 0 ? maxAbs : maxAbs / scale;
    }
}

/// <summary>This library's module for a golden case, from the official class name and hyper-parameters.</summary>
internal static class GoldenBuilders
{
    public static (TokenAttention Module, long Height, long Width) Attention(GoldenCase c, PolarityImplementation implementation)
    {
        long dim = c.Int("dim"), heads = c.Int("num_heads");
        bool bias = !c.Has("qkv_bias") || c.Flag("qkv_bias");
        switch (c.Module)
        {
            case GoldenCase.SwinPolarity:
            {
                long window = SquareWindow(c);
                return (new PolaWindowAttention(dim, window, heads, qkvBias: bias, alpha: c.Real("alpha"),
                    kernelSize: c.Int("kernel_size"), implementation: implementation), window, window);
            }
            case GoldenCase.SwinSoftmax:
            {
                long window = SquareWindow(c);
                return (new WindowAttention(dim, window, heads, qkvBias: bias), window, window);
            }
            case GoldenCase.PvtPolarity:
            {
                long h = c.Int("H"), w = c.Int("W");
                long patches = c.Has("num_patches") ? c.Int("num_patches") : h * w;
                var grid = patches == h * w ? (h, w) : (Side(patches), Side(patches));
                return (new PolaLinearAttention(dim, grid, heads, qkvBias: bias, srRatio: c.Has("sr_ratio") ? c.Int("sr_ratio") : 1,
                    alpha: c.Real("alpha"), kernelSize: c.Int("kernel_size"), implementation: implementation), h, w);
            }
            case GoldenCase.PvtSoftmax:
                return (new SpatialReductionAttention(dim, heads, qkvBias: bias, srRatio: c.Has("sr_ratio") ? c.Int("sr_ratio") : 1),
                    c.Int("H"), c.Int("W"));
            default:
                throw new NotSupportedException($"Golden case {c.Id}: no attention builder for module '{c.Module}'.");
        }
    }

    /// <summary>As PolaPyramidVisionTransformerTests.BuildGolden and PolaSwinTransformerTests.OptionsFrom.</summary>
    public static Backbone Model(GoldenCase c, PolarityImplementation implementation) => c.Module switch
    {
        GoldenCase.PvtModel => Pvt(c, implementation),
        GoldenCase.SwinModel => new PolaSwinTransformer(SwinOptions(c) with { Implementation = implementation }),
        _ => throw new NotSupportedException($"Golden case {c.Id}: no model builder for module '{c.Module}'."),
    };

    private static PolaPyramidVisionTransformer Pvt(GoldenCase c, PolarityImplementation implementation)
    {
        var eps = c.Text("layernorm_eps").Split(';').Select(entry => entry.Split('='))
            .ToDictionary(kv => kv[0], kv => double.Parse(kv[1], CultureInfo.InvariantCulture));
        return new PolaPyramidVisionTransformer(new PolaPvtOptions
        {
            ImageSize = c.Int("img_size"),
            PatchSize = c.Int("patch_size"),
            InChannels = c.Int("in_chans"),
            NumClasses = c.Int("num_classes"),
            EmbedDims = c.Ints("embed_dims"),
            NumHeads = c.Ints("num_heads"),
            MlpRatios = c.Text("mlp_ratios").Split(',').Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray(),
            Depths = c.Ints("depths"),
            QkvBias = c.Flag("qkv_bias"),
            QkScale = c.Text("qk_scale") == "none" ? null : c.Real("qk_scale"),
            DropRate = c.Real("drop_rate"),
            AttnDropRate = c.Real("attn_drop_rate"),
            DropPathRate = c.Real("drop_path_rate"),
            BlockNormEps = eps["norm"],
            SrRatios = c.Ints("sr_ratios"),
            LinearSrRatios = c.Text("la_sr_ratios"),
            AttentionTypes = c.Text("attn_type"),
            Alpha = c.Real("alpha"),
            KernelSize = c.Int("kernel_size"),
            Implementation = implementation,
        });
    }

    private static PolaSwinOptions SwinOptions(GoldenCase c)
    {
        var o = new PolaSwinOptions();
        long Int(string key, long fallback) => c.Has(key) ? c.Int(key) : fallback;
        double Real(string key, double fallback) => c.Has(key) ? c.Real(key) : fallback;
        bool Flag(string key, bool fallback) => c.Has(key) ? c.Flag(key) : fallback;
        long[]? Ints(string key) => c.Has(key) ? c.Ints(key) : null;
        var image = Ints("img_size");
        if (image is { Length: 2 } && image[0] != image[1])
            throw new NotSupportedException($"Golden case {c.Id}: image {image[0]}x{image[1]} is not square.");
        return o with
        {
            ImageSize = image?[0] ?? o.ImageSize,
            PatchSize = Int("patch_size", o.PatchSize),
            InChannels = Int("in_chans", o.InChannels),
            NumClasses = Int("num_classes", o.NumClasses),
            EmbedDim = Int("embed_dim", o.EmbedDim),
            Depths = (IReadOnlyList<long>?)Ints("depths") ?? o.Depths,
            NumHeads = (IReadOnlyList<long>?)Ints("num_heads") ?? o.NumHeads,
            WindowSize = Int("window_size", o.WindowSize),
            MlpRatio = Real("mlp_ratio", o.MlpRatio),
            QkvBias = Flag("qkv_bias", o.QkvBias),
            QkScale = c.Has("qk_scale") && !c.Text("qk_scale").Equals("none", StringComparison.OrdinalIgnoreCase) ? c.Real("qk_scale") : null,
            DropRate = Real("drop_rate", o.DropRate),
            AttnDropRate = Real("attn_drop_rate", o.AttnDropRate),
            DropPathRate = Real("drop_path_rate", o.DropPathRate),
            Ape = Flag("ape", o.Ape),
            PatchNorm = Flag("patch_norm", o.PatchNorm),
            Alpha = Real("alpha", o.Alpha),
            KernelSize = Int("kernel_size", o.KernelSize),
            AttentionTypes = c.Has("attn_type") ? c.Text("attn_type") : o.AttentionTypes,
        };
    }

    private static long SquareWindow(GoldenCase c)
    {
        var w = c.Ints("window_size");
        if (w.Length == 2 && w[0] != w[1]) throw new NotSupportedException($"Golden case {c.Id}: window {w[0]}x{w[1]} is not square.");
        return w[0];
    }

    private static long Side(long n) => (long)Math.Round(Math.Sqrt(n));
}
