namespace PolaFormer.Pretrained;

/// <summary>
/// The pretrained configuration of every registered model for which the authors release ImageNet-1k weights, as the
/// families declare them next to their presets (<see cref="Models.ModelInfo.Pretrained"/>; their README's table: Pola-PVT-T/S, Pola-Swin-T/S/B, all at 224², evaluated like Swin and DeiT: ImageNet mean and
/// standard deviation, bicubic resize to 256, centre crop 224).
/// </summary>
/// <remarks>
/// The weights are published in the Hugging Face repository <see cref="HubFolder"/>, but the file names inside it
/// could not be confirmed when this table was written, so <see cref="PretrainedConfig.Source"/> is null for every
/// entry rather than a guessed URL: download the file once and pass its path (or its
/// <c>https://huggingface.co/ZachMeng/PolaFormer/resolve/main/&lt;file&gt;</c> URL) to <see cref="PretrainedWeights.Load"/>,
/// which still applies the entry's class count, input size and normalisation.
/// </remarks>
public static class PretrainedConfigs
{
    /// <summary>The authors' Hugging Face repository of released checkpoints (browse it to find a file's name).</summary>
    public const string HubFolder = "https://huggingface.co/ZachMeng/PolaFormer/tree/main";

    /// <summary>The prefix of a direct download URL from <see cref="HubFolder"/>; append the file name.</summary>
    public const string HubDownloadPrefix = "https://huggingface.co/ZachMeng/PolaFormer/resolve/main/";

    /// <summary>Model names with a pretrained configuration, in ordinal order (declared by each family next to its
    /// presets, so a family registered later appears here too).</summary>
    public static IReadOnlyList<string> Names => All.Select(c => c.ModelName).ToArray();

    /// <summary>Every pretrained configuration, in the order of <see cref="Names"/>.</summary>
    public static IReadOnlyList<PretrainedConfig> All =>
        Models.ModelRegistry.Models.Where(m => m.Pretrained is not null).Select(m => m.Pretrained!).ToArray();

    /// <summary>The configuration of <paramref name="modelName"/>, or null when the authors release no weights for it
    /// (or no model has that name).</summary>
    public static PretrainedConfig? Find(string modelName)
    {
        ArgumentNullException.ThrowIfNull(modelName);
        return Models.ModelRegistry.TryDescribe(modelName)?.Pretrained;
    }

    /// <summary>The configuration of <paramref name="modelName"/>.</summary>
    /// <exception cref="ArgumentException">No released weights for that name; the message lists the names that have them.</exception>
    public static PretrainedConfig Get(string modelName) => Find(modelName)
        ?? throw new ArgumentException($"No pretrained configuration for '{modelName}'. Models with released weights: {string.Join(", ", Names)}.", nameof(modelName));
}
