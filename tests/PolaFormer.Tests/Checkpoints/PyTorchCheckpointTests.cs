using System.Buffers.Binary;
using System.IO.Compression;
using System.Numerics;
using System.Text.Json;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Checkpoints;

/// <summary>
/// Checkpoints written by PyTorch's <c>torch.save</c> (TestData/make_pth.py, Debian's PyTorch 1.13.1) read without
/// Python: every tensor exactly as PyTorch saved it, training entries of unknown classes, the small Pola-PVT loaded
/// strictly, and damaged files refused before the model is touched.
/// </summary>
public sealed class PyTorchCheckpointTests : TorchTest, IDisposable
{
    private static readonly string DataFolder = Path.Combine(AppContext.BaseDirectory, "Checkpoints", "TestData");
    private readonly string _folder = Directory.CreateTempSubdirectory("polaformer-pth-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static string Data(string name) => Path.Combine(DataFolder, name);

    /// <summary>The small Pola-PVT whose state dict make_pth.py writes (names and shapes: pvt_small_keys.json).</summary>
    private static PolaPvtOptions SmallPvt => new()
    {
        ImageSize = (32, 32),
        PatchSize = 4,
        EmbedDims = [8, 16, 24, 32],
        NumHeads = [1, 2, 4, 8],
        Depths = [1, 1, 1, 1],
        MlpRatios = [2, 2, 2, 2],
        LinearSrRatios = "1111",
        NumClasses = 10,
        DropPathRate = 0,
    };

    /// <summary>The tensors of expected.safetensors under <paramref name="prefix"/>, prefix removed.</summary>
    private static Dictionary<string, Tensor> Expected(string prefix)
    {
        var file = SafeTensors.Load(Data("expected.safetensors"));
        return file.Tensors.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);
    }

    private static void ShouldBeIdentical(Tensor actual, Tensor expected, string name)
    {
        actual.dtype.Should().Be(expected.dtype, name);
        actual.shape.Should().Equal(expected.shape, name);
        actual.is_contiguous().Should().BeTrue(name);
        actual.device_type.Should().Be(DeviceType.CPU, name);
        Same(actual, expected).Should().BeTrue($"{name} must hold exactly the saved values");
    }

    private static Dictionary<string, Tensor> Snapshot(nn.Module model) =>
        model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());

    private static void ShouldBeUnchanged(nn.Module model, Dictionary<string, Tensor> before)
    {
        foreach (var (name, value) in model.state_dict())
            Same(value, before[name]).Should().BeTrue($"{name} must be untouched by a failed load");
    }

    // ---------------------------------------------------------------- tensors exactly as saved

    [Fact]
    public void Swin_style_checkpoint_yields_every_model_tensor_with_its_dtype_shape_and_values()
    {
        using var scope = NewDisposeScope();
        var expected = Expected("swin/");
        var loaded = PyTorchCheckpoint.ReadStateDict(Data("swin_style_checkpoint.pth"));

        loaded.Keys.Should().Equal(expected.Keys, "the model entry's order is kept");
        foreach (var (name, value) in expected) ShouldBeIdentical(loaded[name], value, name);
        loaded["big_slice"].dtype.Should().Be(float32);
        loaded["index"].dtype.Should().Be(int64);
        loaded["half"].dtype.Should().Be(float16);
        loaded["bfloat16"].dtype.Should().Be(bfloat16);
        loaded["mask"].dtype.Should().Be(@bool);
        loaded["scalar"].shape.Should().BeEmpty();
        loaded["empty"].shape.Should().Equal(0, 3);
        // Views of one storage come out as independent tensors.
        loaded["big"].fill_(0);
        loaded["big_slice"].eq(expected["big_slice"]).all().item<bool>().Should().BeTrue();
        loaded["big_column"][0].item<float>().Should().Be(-1.5f, "big[0, 3] = 3 * 0.5 - 3");
    }

    [Fact]
    public void Swin_style_checkpoint_keeps_optimizer_scheduler_and_unknown_classes_readable()
    {
        using var scope = NewDisposeScope();
        var root = PyTorchCheckpoint.ReadObject(Data("swin_style_checkpoint.pth")).Should()
            .BeOfType<Dictionary<object, object?>>().Subject;
        root.Keys.Should().Equal("model", "optimizer", "lr_scheduler", "max_accuracy", "scaler", "epoch", "config", "args");
        root["epoch"].Should().Be(299L);
        root["max_accuracy"].Should().Be(81.2);

        // yacs.config.CfgNode: a dict subclass of a module the reader has never heard of.
        var config = root["config"].Should().BeOfType<PickledObject>().Subject;
        config.ClassName.Should().Be("yacs.config.CfgNode");
        var modelConfig = config.DictItems["MODEL"].Should().BeOfType<PickledObject>().Subject;
        modelConfig.DictItems["NAME"].Should().Be("pola_pvt_tiny");
        modelConfig.DictItems["DROP_PATH_RATE"].Should().Be(0.1);
        config.DictItems["TAG"].Should().BeNull();
        config.DictItems["AMP_ENABLE"].Should().Be(true);
        var optimizerConfig = ((PickledObject)((PickledObject)config.DictItems["TRAIN"]!).DictItems["OPTIMIZER"]!);
        optimizerConfig.DictItems["BETAS"].Should().BeEquivalentTo(new object[] { 0.9, 0.999 });
        var attributes = config.State.Should().BeOfType<Dictionary<object, object?>>().Subject;
        attributes["__immutable__"].Should().Be(true);
        attributes["__deprecated_keys__"].Should().BeOfType<HashSet<object?>>().Which.Should().BeEmpty();

        // A plain object holding a dtype, a device, a numpy scalar, a set and an integer beyond 64 bits.
        var args = root["args"].Should().BeOfType<PickledObject>().Subject;
        args.ClassName.Should().Be("__main__.Namespace");
        var fields = (Dictionary<object, object?>)args.State!;
        fields["batch_size"].Should().Be(128L);
        fields["data_path"].Should().Be("/data/imagenet");
        fields["amp_dtype"].Should().Be(new PickledGlobal("torch", "float16"));
        var device = fields["device"].Should().BeOfType<PickledObject>().Subject;
        device.ClassName.Should().Be("torch.device");
        device.Arguments.Should().Equal("cpu");
        var top1 = fields["top1"].Should().BeOfType<PickledObject>().Subject;
        top1.ClassName.Should().Be("numpy.core.multiarray.scalar");
        BitConverter.ToDouble(top1.Arguments[1].Should().BeOfType<byte[]>().Subject).Should().Be(81.2);
        fields["seen"].Should().BeOfType<HashSet<object?>>().Which.Should().BeEquivalentTo(new object[] { 1L, 2L, 3L });
        fields["big"].Should().Be(BigInteger.Pow(2, 70));

        // The AdamW state: integer keys, tensors, tuples, None.
        var optimizer = (Dictionary<object, object?>)root["optimizer"]!;
        var state = (Dictionary<object, object?>)optimizer["state"]!;
        state.Keys.Should().Equal(0L, 1L);
        var expected = Expected("optimizer/");
        expected.Should().NotBeEmpty();
        foreach (var (name, value) in expected)
        {
            var parts = name.Split('/');
            var tensor = ((Dictionary<object, object?>)state[long.Parse(parts[0])]!)[parts[1]].Should().BeAssignableTo<Tensor>().Subject;
            ShouldBeIdentical(tensor, value, name);
        }
        var group = (Dictionary<object, object?>)((List<object?>)optimizer["param_groups"]!).Single()!;
        group["betas"].Should().BeEquivalentTo(new object[] { 0.9, 0.999 });
        group["params"].Should().BeEquivalentTo(new List<object?> { 0L, 1L });
        group["foreach"].Should().BeNull();
        ((Dictionary<object, object?>)root["lr_scheduler"]!)["base_values"].Should().BeEquivalentTo(new List<object?> { 1e-3 });
    }

    [Fact]
    public void Bare_state_dict_and_a_data_parallel_protocol_4_checkpoint_give_the_same_tensors()
    {
        using var scope = NewDisposeScope();
        var expected = Expected("bare/");
        var bare = PyTorchCheckpoint.ReadStateDict(Data("bare_state_dict.pth"));
        var prefixed = Checkpoint.ReadStateDict(Data("data_parallel_protocol4.pth"));

        bare.Keys.Should().Equal("0.weight", "0.bias", "1.weight", "1.bias");
        prefixed.Keys.Should().Equal(bare.Keys, "the 'module.' prefix of DataParallel is removed");
        foreach (var (name, value) in expected)
        {
            ShouldBeIdentical(bare[name], value, name);
            ShouldBeIdentical(prefixed[name], value, name);
        }
    }

    [Fact]
    public void A_module_prefixed_checkpoint_loads_strictly_into_a_module_without_the_prefix()
    {
        using var scope = NewDisposeScope();
        var model = nn.Sequential(("0", nn.Linear(4, 3)), ("1", nn.LayerNorm(3)));
        var report = Checkpoint.Load(model, Data("data_parallel_protocol4.pth"));

        report.IsExact.Should().BeTrue();
        var expected = Expected("bare/");
        foreach (var (name, value) in model.state_dict()) ShouldBeIdentical(value, expected[name], name);
    }

    [Fact]
    public void A_big_endian_archive_is_byte_swapped()
    {
        using var scope = NewDisposeScope();
        var path = Path.Combine(_folder, "big_endian.pth");
        // PyTorch 2.1 and later write '<archive>/byteorder'; 1.13 did not (its files are little-endian).
        RewriteArchive(Data("bare_state_dict.pth"), path,
            (name, data) => name.Contains("/data/", StringComparison.Ordinal) ? SwapFloat32(data) : data,
            ("bare_state_dict/byteorder", "big"u8.ToArray()));

        var loaded = PyTorchCheckpoint.ReadStateDict(path);
        foreach (var (name, value) in Expected("bare/")) ShouldBeIdentical(loaded[name], value, name);
    }

    // ---------------------------------------------------------------- a model-shaped checkpoint

    [Fact]
    public void The_small_pvt_checkpoint_loads_strictly_and_the_model_computes_with_its_weights()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var model = new PolaPyramidVisionTransformer(SmallPvt);
        model.eval();

        // The Python script wrote the names and shapes this model lists; they must not drift apart.
        using (var listing = JsonDocument.Parse(File.ReadAllText(Data("pvt_small_keys.json"))))
        {
            var written = listing.RootElement.GetProperty("state_dict").EnumerateArray()
                .Select(e => $"{e[0].GetString()} {string.Join(",", e[1].EnumerateArray().Select(d => d.GetInt64()))}");
            model.state_dict().Select(kv => $"{kv.Key} {string.Join(",", kv.Value.shape)}").Should().Equal(written);
        }

        var x = randn(2, 3, 32, 32);
        Tensor before, after;
        using (no_grad()) before = model.forward(x);

        var report = Checkpoint.Load(model, Data("pola_pvt_small.pth"));
        report.IsExact.Should().BeTrue(report.ToString());
        var expected = Expected("pvt/");
        foreach (var (name, value) in model.state_dict()) ShouldBeIdentical(value, expected[name], name);

        using (no_grad()) after = model.forward(x);
        after.shape.Should().Equal(2, 10);
        Same(after, before).Should().BeFalse("the loaded weights replace the random ones");

        // The same weights put in directly give bit-identical outputs.
        manual_seed(2);
        var direct = new PolaPyramidVisionTransformer(SmallPvt);
        direct.eval();
        StateDictLoader.Load(direct, expected);
        using (no_grad()) Same(direct.forward(x), after).Should().BeTrue();
    }

    // ---------------------------------------------------------------- damaged files leave the model untouched

    public static TheoryData<string> Damages() => new()
    {
        "cut in the middle",
        "cut before the central directory",
        "central directory flipped",
        "data.pkl flipped",
        "storage flipped",
    };

    [Theory]
    [MemberData(nameof(Damages))]
    public void A_damaged_checkpoint_is_refused_and_the_model_keeps_its_weights(string damage)
    {
        using var scope = NewDisposeScope();
        var bytes = File.ReadAllBytes(Data("pola_pvt_small.pth"));
        int centralDirectory = IndexOf(bytes, [0x50, 0x4B, 0x01, 0x02]);
        centralDirectory.Should().BePositive();
        switch (damage)
        {
            case "cut in the middle": bytes = bytes[..(bytes.Length / 2)]; break;
            case "cut before the central directory": bytes = bytes[..centralDirectory]; break;
            case "central directory flipped":
                for (int i = centralDirectory; i < centralDirectory + 64; i++) bytes[i] ^= 0x5A;
                break;
            case "data.pkl flipped": bytes[EntryData(bytes, "pola_pvt_small/data.pkl") + 100] ^= 0x01; break;
            case "storage flipped": bytes[EntryData(bytes, "pola_pvt_small/data/10") + 2] ^= 0x01; break;
        }
        var path = Path.Combine(_folder, "damaged.pth");
        File.WriteAllBytes(path, bytes);

        manual_seed(3);
        var model = new PolaPyramidVisionTransformer(SmallPvt);
        var before = Snapshot(model);
        FluentActions.Invoking(() => Checkpoint.Load(model, path)).Should().Throw<InvalidDataException>()
            .Which.Message.Should().Contain(path).And.ContainAny("truncated", "corrupted");
        ShouldBeUnchanged(model, before);
    }

    [Fact]
    public void Any_single_byte_flip_in_data_pkl_is_read_or_refused_cleanly()
    {
        // CRCs are recomputed, so the pickle machine itself must cope with every damaged opcode and argument.
        var source = Data("bare_state_dict.pth");
        int length;
        using (var zip = ZipFile.OpenRead(source)) length = (int)zip.GetEntry("bare_state_dict/data.pkl")!.Length;
        var path = Path.Combine(_folder, "flipped.pth");
        int refused = 0;
        for (int at = 0; at < length; at++)
        {
            RewriteArchive(source, path, (name, data) =>
            {
                if (name.EndsWith("/data.pkl", StringComparison.Ordinal)) data[at] ^= 0xFF;
                return data;
            });
            using var scope = NewDisposeScope();
            try
            {
                PyTorchCheckpoint.ReadObject(path);
            }
            catch (Exception e) when (e is InvalidDataException or NotSupportedException)
            {
                e.Message.Should().Contain(path);
                refused++;
            }
        }
        refused.Should().BeGreaterThan(length / 2, "most flipped bytes break the pickle");
    }

    [Fact]
    public void A_strict_mismatch_lists_the_renamed_key_and_copies_nothing_while_non_strict_reports_it()
    {
        using var scope = NewDisposeScope();
        var weights = Checkpoint.ReadStateDict(Data("pola_pvt_small.pth"));
        weights["head.w"] = weights["head.weight"];
        weights.Remove("head.weight");
        var path = Path.Combine(_folder, "renamed.safetensors");
        SafeTensors.Save(path, weights);

        manual_seed(4);
        var model = new PolaPyramidVisionTransformer(SmallPvt);
        var before = Snapshot(model);
        var strict = FluentActions.Invoking(() => Checkpoint.Load(model, path)).Should().Throw<StateDictMismatchException>().Which;
        strict.Report.Missing.Should().Equal("head.weight");
        strict.Report.Unexpected.Should().Equal("head.w");
        strict.Message.Should().Contain(path).And.Contain("head.weight").And.Contain("head.w");
        ShouldBeUnchanged(model, before);

        var report = Checkpoint.Load(model, path, strict: false);
        report.Missing.Should().Equal("head.weight");
        report.Unexpected.Should().Equal("head.w");
        Same(model.state_dict()["head.weight"], before["head.weight"]).Should().BeTrue("nothing was given for it");
        Same(model.state_dict()["head.bias"], weights["head.bias"]).Should().BeTrue();
    }

    [Fact]
    public void Safetensors_round_trip_through_save_and_load_gives_bit_identical_outputs()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var source = new PolaPyramidVisionTransformer(SmallPvt);
        source.eval();
        var path = Path.Combine(_folder, "round.safetensors");
        Checkpoint.Save(source, path, new Dictionary<string, string> { ["preset"] = "small test" });

        manual_seed(6);
        var target = new PolaPyramidVisionTransformer(SmallPvt);
        target.eval();
        Checkpoint.Load(target, path).IsExact.Should().BeTrue();

        var x = randn(2, 3, 32, 32);
        using (no_grad()) Same(target.forward(x), source.forward(x)).Should().BeTrue();
        using var file = SafeTensors.Load(path);
        file.Metadata["preset"].Should().Be("small test");
    }

    // ---------------------------------------------------------------- what cannot be read says why

    [Fact]
    public void A_checkpoint_without_a_state_dict_names_what_it_holds()
    {
        var path = Data("no_state_dict.pth");
        FluentActions.Invoking(() => PyTorchCheckpoint.ReadStateDict(path)).Should().Throw<InvalidDataException>()
            .Which.Message.Should().Contain(path).And.Contain("'model'").And.Contain("'epoch'").And.Contain("'optimizer'");
    }

    [Fact]
    public void The_legacy_format_is_refused_with_advice()
    {
        // The start of a pre-1.6 torch.save file: PROTO 2, then LONG1 holding PyTorch's magic number.
        var path = Path.Combine(_folder, "legacy.pth");
        File.WriteAllBytes(path, [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]);
        var model = nn.Linear(2, 2);
        FluentActions.Invoking(() => Checkpoint.Load(model, path)).Should().Throw<NotSupportedException>()
            .Which.Message.Should().Contain(path).And.Contain("legacy").And.Contain("safetensors");

        // A safetensors file whose header is 0x180 bytes long also starts with 0x80 0x01: still safetensors.
        PyTorchCheckpoint.IsLegacy([0x80, 0x01, 0x00, 0x00]).Should().BeFalse();
        PyTorchCheckpoint.IsLegacy([0x80, 0x02, 0x00, 0x00]).Should().BeFalse();
    }

    [Fact]
    public void A_missing_file_and_a_file_in_no_known_format_are_reported_with_their_path()
    {
        var missing = Path.Combine(_folder, "absent.pth");
        FluentActions.Invoking(() => Checkpoint.ReadStateDict(missing)).Should().Throw<FileNotFoundException>()
            .Which.Message.Should().Contain(missing);
        FluentActions.Invoking(() => PyTorchCheckpoint.ReadStateDict(missing)).Should().Throw<FileNotFoundException>();

        var text = Path.Combine(_folder, "notes.pth");
        File.WriteAllText(text, "these are not weights");
        FluentActions.Invoking(() => Checkpoint.ReadStateDict(text)).Should().Throw<InvalidDataException>()
            .Which.Message.Should().Contain(text);
        FluentActions.Invoking(() => PyTorchCheckpoint.ReadStateDict(text)).Should().Throw<InvalidDataException>()
            .Which.Message.Should().Contain("zip");
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>Copies a zip archive entry by entry through <paramref name="transform"/> (new CRCs are computed).</summary>
    private static void RewriteArchive(string source, string target, Func<string, byte[], byte[]> transform,
        (string Name, byte[] Data)? extra = null)
    {
        File.Delete(target);
        using var input = ZipFile.OpenRead(source);
        using var output = ZipFile.Open(target, ZipArchiveMode.Create);
        if (extra is var (extraName, extraData))
        {
            using var e = output.CreateEntry(extraName, CompressionLevel.NoCompression).Open();
            e.Write(extraData);
        }
        foreach (var entry in input.Entries)
        {
            var data = new byte[entry.Length];
            using (var s = entry.Open()) s.ReadExactly(data);
            var copy = output.CreateEntry(entry.FullName, CompressionLevel.NoCompression);
            using var d = copy.Open();
            d.Write(transform(entry.FullName, data));
        }
    }

    private static byte[] SwapFloat32(byte[] data)
    {
        var swapped = (byte[])data.Clone();
        for (int i = 0; i + 4 <= swapped.Length; i += 4) Array.Reverse(swapped, i, 4);
        return swapped;
    }

    private static readonly byte[] LocalHeader = [0x50, 0x4B, 0x03, 0x04];

    /// <summary>Same dtype, shape and values.</summary>
    private static bool Same(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && (a.numel() == 0 || a.eq(b).all().item<bool>());

    private static int IndexOf(byte[] bytes, byte[] pattern) => bytes.AsSpan().IndexOf(pattern);

    /// <summary>Where the data of a stored entry starts: after its local header, name and extra field.</summary>
    private static int EntryData(byte[] bytes, string name)
    {
        var nameBytes = System.Text.Encoding.UTF8.GetBytes(name);
        int at = 0;
        while (bytes.AsSpan(at).IndexOf(LocalHeader) is var found and >= 0)
        {
            at += found;
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(at + 26));
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(at + 28));
            if (bytes.AsSpan(at + 30, nameLength).SequenceEqual(nameBytes)) return at + 30 + nameLength + extraLength;
            at += 4;
        }
        throw new InvalidOperationException($"No entry '{name}'.");
    }
}
