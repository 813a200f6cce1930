using PolaFormer.Models;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>The models the benchmarks know: every registered preset plus the softmax counterparts of Pola-PVT-T
/// and Pola-Swin-T that the papers compare against.</summary>
internal static class ModelZoo
{
    /// <summary>PVT-T with softmax attention in every stage and the PVT spatial reductions 8, 4, 2, 1.</summary>
    public const string PvtTinySoftmax = "pvt_tiny_softmax";

    /// <summary>Swin-T: softmax window attention, window 7 in every stage.</summary>
    public const string SwinTinySoftmax = "swin_tiny_softmax";

    public static IReadOnlyList<string> Baselines { get; } = [PvtTinySoftmax, SwinTinySoftmax];

    public static IReadOnlyList<string> Names => [.. ModelRegistry.Names, .. Baselines];

    /// <summary>Builds a model by name, laid out for <paramref name="imageSize"/> (default: the preset's size).</summary>
    public static Backbone Create(string name, long? imageSize = null, Device? device = null) => name switch
    {
        PvtTinySoftmax => ModelRegistry.Create("pola_pvt_tiny", attentionTypes: "SSSS", imageSize: Square(imageSize), device: device),
        SwinTinySoftmax => new PolaSwinTransformer(PolaSwinOptions.Presets["pola_swin_tiny"] with
        {
            WindowSize = 7,
            AttentionTypes = "SSSS",
            ImageSize = imageSize is { } side ? (side, side) : PolaSwinOptions.Presets["pola_swin_tiny"].ImageSize,
        }, device),
        _ => ModelRegistry.Create(name, imageSize: Square(imageSize), device: device),
    };

    /// <summary>Family and attention letters, for the reports.</summary>
    public static (string Family, string Attention, long Size) Describe(string name) => name switch
    {
        PvtTinySoftmax => ("PVT", "SSSS (sr 8421)", 224),
        SwinTinySoftmax => ("Swin", "SSSS (window 7)", 224),
        _ => Info(ModelRegistry.Describe(name)),
    };

    private static (string, string, long) Info(ModelInfo info) => (info.Family, info.Attention, info.InputSize.Height);

    private static (long, long)? Square(long? size) => size is { } s ? (s, s) : null;
}
