using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using PolaFormer.Checkpoints;
using static TorchSharp.torch;

namespace PolaFormer.Pretrained;

/// <summary>A checkpoint file on this machine.</summary>
/// <param name="Path">Where it is.</param>
/// <param name="FromCache">True when a URL's file was already in the cache, so nothing was downloaded.</param>
public sealed record PretrainedFile(string Path, bool FromCache);

/// <summary>
/// timm's <c>pretrained=True</c> for this library: finds a model's released weights (or any checkpoint URL or path),
/// downloads a URL once into a cache folder (resuming an interrupted download, checking the SHA-256 when known), and
/// loads it strictly, leaving out the classifier when it does not fit (fine-tuning on other classes).
/// </summary>
/// <example><code>
/// using var model = ModelRegistry.Create("pola_pvt_tiny", numClasses: 10);
/// var result = PretrainedWeights.Load(model, "https://huggingface.co/ZachMeng/PolaFormer/resolve/main/&lt;file&gt;");
/// Console.WriteLine(result.Summary);   // ... skipped 2 keys (head.weight, head.bias) ...
/// </code></example>
public static class PretrainedWeights
{
    /// <summary>Environment variable naming the cache folder (overridden by <see cref="PretrainedOptions.CacheFolder"/>).</summary>
    public const string CacheFolderVariable = "POLAFORMER_CACHE";

    /// <summary>The cache folder used when <see cref="PretrainedOptions.CacheFolder"/> is null: the
    /// <see cref="CacheFolderVariable"/> environment variable, else <c>polaformer/checkpoints</c> under
    /// <c>XDG_CACHE_HOME</c>, <c>~/.cache</c> (Linux, macOS) or the local application data folder (Windows).</summary>
    public static string DefaultCacheFolder()
    {
        var configured = Environment.GetEnvironmentVariable(CacheFolderVariable);
        if (!string.IsNullOrWhiteSpace(configured)) return Path.GetFullPath(configured);
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string root = !string.IsNullOrWhiteSpace(xdg) ? xdg
            : OperatingSystem.IsWindows() ? Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData)
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "polaformer", "checkpoints");
    }

    /// <summary>
    /// Where the cache keeps <paramref name="url"/>: a folder named by the URL's hash (so two files of the same name
    /// from different places do not collide) holding the file under its own name.
    /// </summary>
    public static string CachePath(string url, string? cacheFolder = null)
    {
        var uri = ParseUrl(url);
        string name = Path.GetFileName(uri.AbsolutePath);
        if (string.IsNullOrEmpty(name) || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0) name = "checkpoint";
        string key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(uri.AbsoluteUri)))[..16];
        return Path.Combine(cacheFolder ?? DefaultCacheFolder(), key, name);
    }

    /// <summary>
    /// Makes <paramref name="nameOrSource"/> a local file: a model name with released weights (see
    /// <see cref="PretrainedConfigs"/>), an http(s) URL (downloaded into the cache unless already there) or a local path.
    /// </summary>
    /// <exception cref="ArgumentException">Not a model name with a known file, URL or existing file.</exception>
    /// <exception cref="FileNotFoundException">Offline, and the URL's file is not in the cache.</exception>
    /// <exception cref="InvalidDataException">The file's SHA-256 differs from the expected one (a download is deleted).</exception>
    /// <exception cref="HttpRequestException">The server refused the file or every attempt failed.</exception>
    public static async Task<PretrainedFile> FetchAsync(string nameOrSource, PretrainedOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new PretrainedOptions();
        var (source, config) = Resolve(nameOrSource);
        string? sha = NormalizeSha256(options.Sha256 ?? config?.Sha256);
        if (!IsUrl(source))
        {
            if (sha is not null) VerifySha256(source, sha, source, deleteOnMismatch: false);
            return new PretrainedFile(Path.GetFullPath(source), FromCache: false);
        }
        return await DownloadAsync(source, sha, options, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Loads <paramref name="nameOrSource"/> (see <see cref="FetchAsync"/>) into <paramref name="model"/> strictly:
    /// every name and shape must match, except the classifier when <see cref="PretrainedOptions.ExcludeHead"/> says
    /// to leave it out (by default: when the model's classifier differs from the checkpoint's, as in fine-tuning on
    /// another number of classes; the result's <see cref="PretrainedLoadResult.Summary"/> names what was skipped).
    /// </summary>
    /// <exception cref="StateDictMismatchException">Anything other than the excluded classifier differs; nothing
    /// was copied.</exception>
    /// <exception cref="ArgumentException">See <see cref="FetchAsync"/>.</exception>
    /// <exception cref="FileNotFoundException">See <see cref="FetchAsync"/>.</exception>
    /// <exception cref="InvalidDataException">See <see cref="FetchAsync"/>; or the file is not a readable checkpoint.</exception>
    /// <exception cref="HttpRequestException">See <see cref="FetchAsync"/>.</exception>
    public static PretrainedLoadResult Load(nn.Module model, string nameOrSource, PretrainedOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new PretrainedOptions();
        var config = PretrainedConfigs.Find(nameOrSource ?? throw new ArgumentNullException(nameof(nameOrSource)));
        // Task.Run: a caller's synchronisation context (UI, old ASP.NET) must not deadlock the blocking wait.
        var file = Task.Run(() => FetchAsync(nameOrSource, options, cancellationToken), cancellationToken).GetAwaiter().GetResult();
        var stateDict = Checkpoint.ReadStateDict(file.Path);
        try
        {
            string[]? exclude = ShouldExcludeHead(model, stateDict, options) ? [options.HeadPrefix] : null;
            var report = StateDictLoader.Load(model, stateDict, strict: true, sourceName: file.Path, excludePrefixes: exclude);
            return new PretrainedLoadResult(file.Path, file.FromCache, config, report);
        }
        finally
        {
            foreach (var t in stateDict.Values) t.Dispose();
        }
    }

    private static bool ShouldExcludeHead(nn.Module model, IReadOnlyDictionary<string, Tensor> stateDict, PretrainedOptions options)
    {
        if (options.ExcludeHead is { } explicitChoice) return explicitChoice;
        ArgumentException.ThrowIfNullOrEmpty(options.HeadPrefix, "options.HeadPrefix");
        var report = StateDictLoader.Compare(model, stateDict);
        bool IsHead(string key) => key.StartsWith(options.HeadPrefix, StringComparison.Ordinal);
        return report.Missing.Any(IsHead) || report.Unexpected.Any(IsHead) || report.Mismatched.Any(m => IsHead(m.Key));
    }

    private static (string Source, PretrainedConfig? Config) Resolve(string nameOrSource)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(nameOrSource);
        if (PretrainedConfigs.Find(nameOrSource) is { } config)
            return (config.Source ?? throw new ArgumentException(
                $"'{nameOrSource}' has released weights in {PretrainedConfigs.HubFolder}, but no confirmed file name is recorded for it; download the file and pass its path, or pass its {PretrainedConfigs.HubDownloadPrefix}<file> URL.",
                nameof(nameOrSource)), config);
        if (IsUrl(nameOrSource) || File.Exists(nameOrSource)) return (nameOrSource, null);
        throw new ArgumentException(
            $"'{nameOrSource}' is not a model with released weights ({string.Join(", ", PretrainedConfigs.Names)}), an http(s) URL, or an existing file.",
            nameof(nameOrSource));
    }

    private static bool IsUrl(string source) =>
        Uri.TryCreate(source, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps);

    private static Uri ParseUrl(string url)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(url);
        return Uri.TryCreate(url, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? uri
            : throw new ArgumentException($"'{url}' is not an absolute http(s) URL.", nameof(url));
    }

    private static string? NormalizeSha256(string? sha)
    {
        if (sha is null) return null;
        var trimmed = sha.Trim().ToLowerInvariant();
        return trimmed.Length == 64 && trimmed.All(char.IsAsciiHexDigit)
            ? trimmed
            : throw new ArgumentException($"Sha256 is '{sha}'; expected 64 hexadecimal digits.", "options.Sha256");
    }

    private static async Task<PretrainedFile> DownloadAsync(string url, string? sha, PretrainedOptions options, CancellationToken cancellationToken)
    {
        if (options.MaxAttempts < 1)
            throw new ArgumentException($"MaxAttempts is {options.MaxAttempts}; expected at least 1.", "options.MaxAttempts");
        string path = CachePath(url, options.CacheFolder);
        if (File.Exists(path)) return new PretrainedFile(path, FromCache: true);
        if (options.Offline)
            throw new FileNotFoundException(
                $"Offline: '{url}' is not in the cache (expected at '{path}'). Load it once online, or copy the file there.", path);

        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        string partial = path + ".partial";
        var owned = options.HttpClient is null ? new HttpClient() : null;
        try
        {
            var client = options.HttpClient ?? owned!;
            for (int attempt = 1; ; attempt++)
            {
                try
                {
                    await DownloadToPartialAsync(client, url, partial, options.Progress, cancellationToken).ConfigureAwait(false);
                    break;
                }
                // A dropped connection (no HTTP status) keeps what arrived; the next attempt asks for the rest.
                catch (Exception e) when (attempt < options.MaxAttempts && !cancellationToken.IsCancellationRequested
                                          && (e is IOException || e is HttpRequestException { StatusCode: null }))
                {
                }
            }
            if (sha is not null) VerifySha256(partial, sha, url, deleteOnMismatch: true);
            File.Move(partial, path, overwrite: true);
            return new PretrainedFile(path, FromCache: false);
        }
        finally
        {
            owned?.Dispose();
        }
    }

    private static async Task DownloadToPartialAsync(HttpClient client, string url, string partial,
        IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        long existing = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (existing > 0) request.Headers.Range = new RangeHeaderValue(existing, null);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && existing > 0)
        {
            // The partial file is as long as the server's (complete, the last attempt dropped after the final byte)
            // or longer (the file changed upstream): keep the first, start the second over.
            if (response.Content.Headers.ContentRange?.Length == existing) return;
            File.Delete(partial);
            throw new IOException($"'{url}' is shorter than the {existing} bytes already downloaded; starting over.");
        }
        if (!response.IsSuccessStatusCode)
            throw new HttpRequestException(
                $"GET '{url}' answered {(int)response.StatusCode} {response.ReasonPhrase}; expected 200 OK (or 206 Partial Content when resuming).",
                null, response.StatusCode);
        bool append = response.StatusCode == HttpStatusCode.PartialContent;
        if (append && response.Content.Headers.ContentRange?.From != existing)
        {
            File.Delete(partial);
            throw new IOException($"'{url}' resumed at byte {response.Content.Headers.ContentRange?.From}, not at the {existing} bytes already downloaded; starting over.");
        }
        long received = append ? existing : 0;
        long? total = append ? response.Content.Headers.ContentRange?.Length : response.Content.Headers.ContentLength;
        await using var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using var file = new FileStream(partial, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
        progress?.Report(new DownloadProgress(url, received, total));
        var buffer = new byte[1 << 16];
        int read;
        while ((read = await body.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
        {
            await file.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
            received += read;
            progress?.Report(new DownloadProgress(url, received, total));
        }
        // Without a length check a connection closed early would look like a complete (truncated) file.
        if (total is { } expected && received != expected)
            throw new IOException($"'{url}' ended after {received} of {expected} bytes.");
    }

    private static void VerifySha256(string file, string expected, string source, bool deleteOnMismatch)
    {
        string actual;
        using (var stream = File.OpenRead(file)) actual = Convert.ToHexStringLower(SHA256.HashData(stream));
        if (actual == expected) return;
        if (deleteOnMismatch) File.Delete(file);
        throw new InvalidDataException(
            $"The SHA-256 of '{source}' is {actual}; expected {expected}.{(deleteOnMismatch ? " The download was deleted and nothing was cached." : "")}");
    }
}
