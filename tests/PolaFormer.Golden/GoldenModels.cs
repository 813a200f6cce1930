using System.Globalization;
using PolaFormer.Attention;
using PolaFormer.Models;

namespace PolaFormer.Golden;

/// <summary>The options of this library's model for a model-kind golden case, from the official hyper-parameters.</summary>
public static class GoldenModels
{
    public const string SwinModel = "models.pola_swin.PolaSwinTransformer";
    public const string PvtModel = "models.pola_pvt.PyramidVisionTransformer";

    /// <summary>The model of a model-kind case, untrained (load <see cref="GoldenCase.StateDict"/> into it).</summary>
    public static Backbone Create(GoldenCase c, PolarityImplementation implementation) => c.Module switch
    {
        PvtModel => new PolaPyramidVisionTransformer(PvtOptions(c, implementation)),
        SwinModel => new PolaSwinTransformer(SwinOptions(c) with { Implementation = implementation }),
        _ => throw new NotSupportedException($"Golden case {c.Id}: no model builder for module '{c.Module}'."),
    };

    /// <summary>Pola-PVT options of a <see cref="PvtModel"/> case.</summary>
    public static PolaPvtOptions PvtOptions(GoldenCase c, PolarityImplementation implementation) => new()
    {
        ImageSize = (c.Int("img_size"), c.Int("img_size")),
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
        BlockNormEps = LayerNormEps(c)["norm"],
        SrRatios = c.Ints("sr_ratios"),
        LinearSrRatios = c.Text("la_sr_ratios"),
        AttentionTypes = c.Text("attn_type"),
        Alpha = c.Real("alpha"),
        KernelSize = c.Int("kernel_size"),
        Implementation = implementation,
    };

    /// <summary>Every LayerNorm of the official PVT model and its epsilon ("name=eps;…" in the metadata).</summary>
    public static Dictionary<string, double> LayerNormEps(GoldenCase c) => c.Text("layernorm_eps").Split(';')
        .Select(entry => entry.Split('='))
        .ToDictionary(kv => kv[0], kv => double.Parse(kv[1], CultureInfo.InvariantCulture));

    /// <summary>Pola-Swin options of a <see cref="SwinModel"/> case; keys the file lacks keep the official defaults.</summary>
    public static PolaSwinOptions SwinOptions(GoldenCase c)
    {
        var o = new PolaSwinOptions();
        long Int(string key, long fallback) => c.Has(key) ? c.Int(key) : fallback;
        double Real(string key, double fallback) => c.Has(key) ? c.Real(key) : fallback;
        bool Flag(string key, bool fallback) => c.Has(key) ? c.Flag(key) : fallback;
        long[]? Ints(string key) => c.Has(key) ? c.Ints(key) : null;
        var image = Ints("img_size");
        return o with
        {
            ImageSize = image switch
            {
                null => o.ImageSize,
                [var side] => (side, side),
                [var height, var width] => (height, width),
                _ => throw new NotSupportedException($"Golden case {c.Id}: img_size has {image.Length} values."),
            },
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
}
