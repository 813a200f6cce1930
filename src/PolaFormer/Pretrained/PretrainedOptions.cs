namespace PolaFormer.Pretrained;

/// <summary>How <see cref="PretrainedWeights"/> finds, downloads and loads weights. Every property has a usable default.</summary>
public sealed record PretrainedOptions
{
    /// <summary>Folder of downloaded checkpoints; null: the <see cref="PretrainedWeights.CacheFolderVariable"/> environment
    /// variable, else <c>polaformer/checkpoints</c> under the user's cache folder (see <see cref="PretrainedWeights.DefaultCacheFolder"/>).</summary>
    public string? CacheFolder { get; init; }

    /// <summary>Only read the cache: a URL whose file is not there fails instead of being downloaded.</summary>
    public bool Offline { get; init; }

    /// <summary>Expected SHA-256 (hex) of the file, overriding the pretrained configuration's; null: the
    /// configuration's, if any. A download whose hash differs is deleted and refused.</summary>
    public string? Sha256 { get; init; }

    /// <summary>The client downloads go through (proxies, headers, timeouts are the caller's); null: a client is
    /// created for the call and disposed after it.</summary>
    public HttpClient? HttpClient { get; init; }

    /// <summary>Receives download progress (not called for cache hits or local files).</summary>
    public IProgress<DownloadProgress>? Progress { get; init; }

    /// <summary>Attempts per download: a connection dropped mid-file is resumed from the bytes already received
    /// (HTTP Range) up to this many times in all. At least 1.</summary>
    public int MaxAttempts { get; init; } = 3;

    /// <summary>Leave the classifier (<see cref="HeadPrefix"/> keys) out of the load. null: automatically, when the
    /// model's classifier and the checkpoint's differ in names or shapes (fine-tuning on other classes); true:
    /// always; false: never (a different classifier then fails the strict load).</summary>
    public bool? ExcludeHead { get; init; }

    /// <summary>Prefix of the classifier's keys (timm's and the authors' name: <c>head.</c>).</summary>
    public string HeadPrefix { get; init; } = "head.";
}

/// <summary>Progress of one download.</summary>
/// <param name="Url">What is being downloaded.</param>
/// <param name="BytesReceived">Bytes of the file on disk so far (including a resumed part).</param>
/// <param name="TotalBytes">Size of the file, when the server says.</param>
public readonly record struct DownloadProgress(string Url, long BytesReceived, long? TotalBytes);

/// <summary>What <see cref="PretrainedWeights.Load"/> did.</summary>
/// <param name="Path">The checkpoint file that was loaded.</param>
/// <param name="FromCache">True when a URL's file was already in the cache (nothing was downloaded).</param>
/// <param name="Config">The pretrained configuration used, when the source was a model name.</param>
/// <param name="Report">The state-dict comparison; <see cref="Checkpoints.StateDictReport.Skipped"/> lists the
/// classifier keys left out.</param>
public sealed record PretrainedLoadResult(string Path, bool FromCache, PretrainedConfig? Config, Checkpoints.StateDictReport Report)
{
    /// <summary>One line for logs: the file, and what was skipped when the classifier was left out.</summary>
    public string Summary => Report.Skipped.Count == 0
        ? $"loaded every tensor from '{Path}'{(FromCache ? " (cached)" : "")}"
        : $"loaded '{Path}'{(FromCache ? " (cached)" : "")} except the classifier, which does not fit the model: skipped {Report.Skipped.Count} keys ({string.Join(", ", Report.Skipped)})";
}
