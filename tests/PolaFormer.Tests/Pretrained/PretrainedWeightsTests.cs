using System.Security.Cryptography;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Pretrained;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Pretrained;

/// <summary>
/// Pretrained weights end to end over a real HTTP server on localhost: download then strict load, the cache, the
/// SHA-256 check, resuming with a Range request, offline mode, fine-tuning on another class count, and the grouped
/// mismatch message.
/// </summary>
public sealed class PretrainedWeightsTests : TorchTest, IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("polaformer-pretrained-").FullName;
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        Directory.Delete(_folder, recursive: true);
    }

    private string CacheFolder => Path.Combine(_folder, "cache");

    /// <summary>A tiny Pola-PVT (stage widths ≤ 16 or multiples of 16).</summary>
    private static PolaPyramidVisionTransformer TinyPvt(long numClasses = 10) => new(new PolaPvtOptions
    {
        ImageSize = (32, 32),
        PatchSize = 4,
        EmbedDims = [8, 16, 16, 32],
        NumHeads = [1, 2, 2, 4],
        Depths = [1, 1, 1, 1],
        MlpRatios = [2, 2, 2, 2],
        LinearSrRatios = "1111",
        NumClasses = numClasses,
        DropPathRate = 0,
    });

    /// <summary>A freshly initialised tiny model saved as safetensors: the model and the file's bytes.</summary>
    private (PolaPyramidVisionTransformer Model, byte[] Bytes) SavedCheckpoint()
    {
        var model = TinyPvt();
        _owned.Add(model);
        var path = Path.Combine(_folder, "source.safetensors");
        Checkpoint.Save(model, path);
        return (model, File.ReadAllBytes(path));
    }

    private CheckpointServer Serve(byte[] bytes)
    {
        var server = new CheckpointServer(bytes);
        _owned.Add(server);
        return server;
    }

    private static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    private static bool Same(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && (a.numel() == 0 || a.eq(b).all().item<bool>());

    private static void ShouldHoldTheWeightsOf(nn.Module loaded, nn.Module source, Func<string, bool>? except = null)
    {
        var expected = source.state_dict();
        foreach (var (name, value) in loaded.state_dict())
        {
            if (except?.Invoke(name) == true) continue;
            Same(value, expected[name]).Should().BeTrue($"{name} must hold exactly the served weights");
        }
    }

    private static void ShouldDifferSomewhere(nn.Module a, nn.Module b) =>
        a.state_dict().Any(kv => !Same(kv.Value, b.state_dict()[kv.Key])).Should()
            .BeTrue("two independently initialised models differ, otherwise a load could not be told from no load");

    /// <summary>Records every report as it is made (Progress&lt;T&gt; would post them later, on the thread pool).</summary>
    private sealed class Recorder : IProgress<DownloadProgress>
    {
        public List<DownloadProgress> Reports { get; } = [];
        public void Report(DownloadProgress value) { lock (Reports) Reports.Add(value); }
    }

    private string[] CachedFiles() => Directory.Exists(CacheFolder)
        ? Directory.GetFiles(CacheFolder, "*", SearchOption.AllDirectories)
        : [];

    [Fact]
    public void Download_then_load_gives_identical_weights_and_the_second_load_is_a_cache_hit()
    {
        using var scope = NewDisposeScope();
        var (source, bytes) = SavedCheckpoint();
        var server = Serve(bytes);
        var progress = new Recorder();
        var options = new PretrainedOptions { CacheFolder = CacheFolder, Sha256 = Sha256(bytes), Progress = progress };

        using var first = TinyPvt();
        ShouldDifferSomewhere(first, source);
        var result = PretrainedWeights.Load(first, server.Url, options);

        ShouldHoldTheWeightsOf(first, source);
        result.FromCache.Should().BeFalse();
        result.Report.Skipped.Should().BeEmpty();
        result.Path.Should().Be(PretrainedWeights.CachePath(server.Url, CacheFolder));
        File.ReadAllBytes(result.Path).Should().Equal(bytes);
        progress.Reports.Should().NotBeEmpty();
        progress.Reports[^1].Should().Be(new DownloadProgress(server.Url, bytes.Length, bytes.Length));

        using var second = TinyPvt();
        var again = PretrainedWeights.Load(second, server.Url, options);

        again.FromCache.Should().BeTrue();
        server.Requests.Should().HaveCount(1, "the second load reads the cache and sends no GET");
        ShouldHoldTheWeightsOf(second, source);
        CachedFiles().Should().Equal([result.Path], "no .partial file is left behind");
    }

    [Fact]
    public void A_corrupted_download_is_refused_by_its_sha256_and_leaves_nothing_in_the_cache()
    {
        using var scope = NewDisposeScope();
        var (_, bytes) = SavedCheckpoint();
        var server = Serve(bytes);
        server.Corrupt = true;
        var corrupted = (byte[])bytes.Clone();
        corrupted[corrupted.Length / 2] ^= 0x5A;
        using var model = TinyPvt();
        var before = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());

        var act = () => PretrainedWeights.Load(model, server.Url, new PretrainedOptions { CacheFolder = CacheFolder, Sha256 = Sha256(bytes) });

        act.Should().Throw<InvalidDataException>()
            .WithMessage($"*{server.Url}*{Sha256(corrupted)}*expected {Sha256(bytes)}*deleted*");
        CachedFiles().Should().BeEmpty("neither the partial download nor a cache entry may remain");
        foreach (var (name, value) in model.state_dict()) Same(value, before[name]).Should().BeTrue($"{name} is untouched");
    }

    [Fact]
    public void An_interrupted_download_is_resumed_with_a_range_request_and_completes()
    {
        using var scope = NewDisposeScope();
        var (source, bytes) = SavedCheckpoint();
        var server = Serve(bytes);
        long cut = bytes.Length / 3;
        server.CutAfter(cut);
        var progress = new Recorder();

        using var model = TinyPvt();
        var result = PretrainedWeights.Load(model, server.Url,
            new PretrainedOptions { CacheFolder = CacheFolder, Sha256 = Sha256(bytes), Progress = progress });

        server.Requests.Should().Equal([null, $"bytes={cut}-"], "the second GET asks only for the bytes that did not arrive");
        progress.Reports.Should().Contain(p => p.BytesReceived == cut, "the first attempt stopped there");
        File.ReadAllBytes(result.Path).Should().Equal(bytes);
        ShouldHoldTheWeightsOf(model, source);
    }

    [Fact]
    public void A_download_interrupted_more_often_than_allowed_fails_and_a_later_load_resumes_it()
    {
        using var scope = NewDisposeScope();
        var (source, bytes) = SavedCheckpoint();
        var server = Serve(bytes);
        server.CutAfter(100, responses: 2);
        var options = new PretrainedOptions { CacheFolder = CacheFolder, MaxAttempts = 2 };
        using var model = TinyPvt();

        FluentActions.Invoking(() => PretrainedWeights.Load(model, server.Url, options)).Should().Throw<IOException>();
        File.Exists(PretrainedWeights.CachePath(server.Url, CacheFolder)).Should().BeFalse("an incomplete file is not a cache entry");

        PretrainedWeights.Load(model, server.Url, options);

        server.Requests.Should().Equal([null, "bytes=100-", "bytes=200-"]);
        ShouldHoldTheWeightsOf(model, source);
    }

    [Fact]
    public void Offline_with_an_empty_cache_fails_naming_the_url_and_where_it_looked()
    {
        using var scope = NewDisposeScope();
        var (_, bytes) = SavedCheckpoint();
        var server = Serve(bytes);
        using var model = TinyPvt();

        var act = () => PretrainedWeights.Load(model, server.Url, new PretrainedOptions { CacheFolder = CacheFolder, Offline = true });

        act.Should().Throw<FileNotFoundException>()
            .WithMessage($"Offline*{server.Url}*{PretrainedWeights.CachePath(server.Url, CacheFolder)}*");
        server.Requests.Should().BeEmpty("offline mode never contacts the server");
    }

    [Fact]
    public void Offline_reads_a_file_that_is_already_cached()
    {
        using var scope = NewDisposeScope();
        var (source, bytes) = SavedCheckpoint();
        var server = Serve(bytes);
        using var model = TinyPvt();
        PretrainedWeights.Load(model, server.Url, new PretrainedOptions { CacheFolder = CacheFolder });

        using var offline = TinyPvt();
        var result = PretrainedWeights.Load(offline, server.Url, new PretrainedOptions { CacheFolder = CacheFolder, Offline = true });

        result.FromCache.Should().BeTrue();
        server.Requests.Should().HaveCount(1);
        ShouldHoldTheWeightsOf(offline, source);
    }

    [Fact]
    public void Fine_tuning_on_another_class_count_skips_only_the_head_and_says_so()
    {
        using var scope = NewDisposeScope();
        var (source, bytes) = SavedCheckpoint();
        var server = Serve(bytes);
        using var model = TinyPvt(numClasses: 5);
        var freshHead = model.state_dict().Where(kv => kv.Key.StartsWith("head.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var options = new PretrainedOptions { CacheFolder = CacheFolder };

        var result = PretrainedWeights.Load(model, server.Url, options);

        result.Report.Skipped.Should().BeEquivalentTo("head.weight", "head.bias");
        result.Report.IsExact.Should().BeTrue("everything but the head matched");
        result.Summary.Should().Contain("skipped 2 keys").And.Contain("head.weight").And.Contain("head.bias");
        result.Summary.Split('\n').Should().HaveCount(1);
        ShouldHoldTheWeightsOf(model, source, except: k => k.StartsWith("head.", StringComparison.Ordinal));
        foreach (var (name, value) in freshHead) Same(model.state_dict()[name], value).Should().BeTrue($"{name} keeps its initialisation");

        // Told not to leave the head out, the same load is a strict mismatch naming the head.
        using var strict = TinyPvt(numClasses: 5);
        FluentActions.Invoking(() => PretrainedWeights.Load(strict, server.Url, options with { ExcludeHead = false }))
            .Should().Throw<StateDictMismatchException>()
            .Which.Report.Mismatched.Select(m => m.Key).Should().BeEquivalentTo("head.weight", "head.bias");
    }

    [Fact]
    public void Same_class_count_loads_the_head_too()
    {
        using var scope = NewDisposeScope();
        var (source, bytes) = SavedCheckpoint();
        var path = Path.Combine(_folder, "local.safetensors");
        File.WriteAllBytes(path, bytes);
        using var model = TinyPvt();

        var result = PretrainedWeights.Load(model, path, new PretrainedOptions { CacheFolder = CacheFolder, Sha256 = Sha256(bytes) });

        result.Report.Skipped.Should().BeEmpty();
        result.Path.Should().Be(Path.GetFullPath(path));
        ShouldHoldTheWeightsOf(model, source);
        CachedFiles().Should().BeEmpty("local files are read in place, not copied into the cache");
    }

    [Fact]
    public void A_strict_mismatch_is_grouped_with_counts_a_few_names_and_a_prefix_hint()
    {
        using var scope = NewDisposeScope();
        using var model = TinyPvt();
        // What DataParallel's state dict looks like: every name behind "module.".
        var wrapped = model.state_dict().ToDictionary(kv => "module." + kv.Key, kv => kv.Value);
        int count = wrapped.Count;

        var error = FluentActions.Invoking(() => StateDictLoader.Load(model, wrapped, sourceName: "dp.pth"))
            .Should().Throw<StateDictMismatchException>().Which;

        var lines = error.Message.Split(Environment.NewLine);
        lines.Should().HaveCountLessThanOrEqualTo(6, "a grouped message, not one line per key");
        error.Message.Should().Contain($"{count} missing, {count} unexpected, 0 wrong shape")
            .And.Contain($"and {count - StateDictReport.NamesShown} more")
            .And.Contain("'module.'")
            .And.Contain($"{count} of the {count} unexpected keys");
        var last = model.state_dict().Keys.Last();
        error.Message.Should().NotContain("module." + last, "only the first names of each kind are listed");
        error.Report.Unexpected.Should().HaveCount(count, "the report keeps every name");
    }

    [Fact]
    public void A_prefix_the_model_has_and_the_source_lacks_is_hinted_too()
    {
        // A backbone loaded into a wrapper that keeps it under "model.": the model's names carry the prefix.
        var report = new StateDictReport(["model.a.weight", "model.b.weight", "fc.weight"], ["a.weight", "b.weight"], []);

        report.PrefixHint().Should().Contain("2 of the 3 missing keys").And.Contain("'model.'");
        report.ToString().Should().Contain("hint: 2 of the 3 missing keys");

        // One coincidental match among many names is no explanation.
        new StateDictReport(["x.a", "y", "z", "w"], ["a"], []).PrefixHint().Should().BeNull();
    }

    [Fact]
    public void A_model_without_classifier_loads_the_backbone_and_skips_the_head()
    {
        using var scope = NewDisposeScope();
        var (source, bytes) = SavedCheckpoint();
        var path = Path.Combine(_folder, "features.safetensors");
        File.WriteAllBytes(path, bytes);
        using var features = TinyPvt(numClasses: 0);

        var result = PretrainedWeights.Load(features, path, new PretrainedOptions { CacheFolder = CacheFolder });

        result.Report.Skipped.Should().BeEquivalentTo("head.weight", "head.bias");
        features.state_dict().Keys.Should().NotContain(k => k.StartsWith("head.", StringComparison.Ordinal));
        ShouldHoldTheWeightsOf(features, source);
    }

    [Fact]
    public void Shape_mismatches_are_listed_with_both_shapes_and_no_hint_when_no_prefix_explains_them()
    {
        using var scope = NewDisposeScope();
        using var model = TinyPvt();
        using var other = TinyPvt(numClasses: 3);

        var error = FluentActions.Invoking(() => StateDictLoader.Load(model, other.state_dict()))
            .Should().Throw<StateDictMismatchException>().Which;

        error.Message.Should().Contain("0 missing, 0 unexpected, 2 wrong shape")
            .And.Contain("head.weight expected (10, 32) got (3, 32)")
            .And.NotContain("hint:");
    }

    [Fact]
    public void Every_pretrained_configuration_names_a_registered_model()
    {
        PretrainedConfigs.Names.Should().NotBeEmpty();
        PretrainedConfigs.Names.Should().BeSubsetOf(ModelRegistry.Names);
        // The authors' releases (the test assembly's own family adds one of its own).
        PretrainedConfigs.All.Where(c => c.ModelName.StartsWith("pola_", StringComparison.Ordinal)).Select(c => c.ModelName).Should()
            .BeEquivalentTo(["pola_pvt_tiny", "pola_pvt_small", "pola_swin_tiny", "pola_swin_small", "pola_swin_base"]);
        PretrainedConfigs.All.Where(c => c.ModelName.StartsWith("pola_", StringComparison.Ordinal)).Should()
            .OnlyContain(c => c.NumClasses == 1000 && c.InputSize.Height == 224 && c.InputSize.Width == 224 && c.Resize == ResizeMode.Squash);
    }

    [Fact]
    public void A_model_name_without_a_confirmed_file_says_where_to_find_the_weights()
    {
        using var scope = NewDisposeScope();
        using var model = TinyPvt();
        var unconfirmed = PretrainedConfigs.All.First(c => c.Source is null).ModelName;

        FluentActions.Invoking(() => PretrainedWeights.Load(model, unconfirmed, new PretrainedOptions { CacheFolder = CacheFolder }))
            .Should().Throw<ArgumentException>().WithMessage($"*'{unconfirmed}'*{PretrainedConfigs.HubFolder}*");
        FluentActions.Invoking(() => PretrainedWeights.Load(model, "no_such_model", new PretrainedOptions { CacheFolder = CacheFolder }))
            .Should().Throw<ArgumentException>().WithMessage("*'no_such_model'*pola_pvt_tiny*URL*file*");
    }
}
