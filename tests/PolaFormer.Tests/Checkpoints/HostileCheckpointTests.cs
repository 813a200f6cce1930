using System.Numerics;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Checkpoints;

/// <summary>
/// Hostile <c>.pth</c> files built opcode by opcode: each class of attack an audit found (deep nesting,
/// exponential keys, copy amplification, expanded or out-of-range views, conflicting storages, zip bombs) ends in
/// an <see cref="InvalidDataException"/> naming the file, within a deadline, on a small stack; and the valid
/// neighbours of each (LONG1/LONG4 integers, slices, tied weights, tuple keys) still load with their values.
/// </summary>
public sealed class HostileCheckpointTests : TorchTest, IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private readonly string _folder = Directory.CreateTempSubdirectory("polaformer-hostile-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_folder, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Reads the file on a bounded thread and returns what it threw (which must be InvalidDataException
    /// naming it).</summary>
    private static InvalidDataException Refused(string path, Func<string, object?> read)
    {
        var thrown = HostileFiles.RunBounded(() =>
        {
            using var scope = NewDisposeScope();
            read(path);
        }, Deadline, path);
        var refusal = thrown.Should().BeOfType<InvalidDataException>().Subject;
        refusal.Message.Should().Contain(path);
        return refusal;
    }

    private static object? Loaded(string path)
    {
        object? root = null;
        var thrown = HostileFiles.RunBounded(() => root = PyTorchCheckpoint.ReadObject(path), Deadline, path);
        thrown.Should().BeNull();
        return root;
    }

    // ---------------------------------------------------------------- nesting and keys

    [Fact]
    public void Lists_nested_100000_deep_are_read_without_recursion_and_refused_as_a_state_dict()
    {
        const int depth = 100_000;
        var pickle = new PickleBuilder().Proto();
        for (int i = 0; i < depth; i++) pickle.EmptyList();
        for (int i = 1; i < depth; i++) pickle.Append();
        var path = Write("deep.pth", HostileFiles.Pth(pickle.Stop().ToArray()));

        // The old recursive tensor walk overflowed the stack (a process crash) on nesting this deep.
        var root = Loaded(path);
        int levels = 0;
        for (var level = root as List<object?>; level is not null; level = level.Count > 0 ? level[0] as List<object?> : null) levels++;
        levels.Should().Be(depth);
        Refused(path, PyTorchCheckpoint.ReadStateDict).Message.Should().Contain("no state dict").And.Contain("list of 1");
    }

    /// <summary>t0 = (1,); t(i+1) = (t(i), t(i)), each kept in the memo: a few bytes per level, 2^levels leaves
    /// for a hash by value. Leaves t(levels) on the stack.</summary>
    private static PickleBuilder SelfNestedTuple(PickleBuilder pickle, uint levels)
    {
        pickle.Int(1).Tuple1().Put(0).Pop();
        for (uint i = 0; i < levels; i++) pickle.Get(i).Get(i).Tuple2().Put(i + 1).Pop();
        return pickle.Get(levels);
    }

    [Fact]
    public void A_tuple_key_nested_80_deep_in_itself_is_refused_quickly_instead_of_hashed_exponentially()
    {
        var pickle = SelfNestedTuple(new PickleBuilder().Proto().EmptyDict(), 80).Int(7).SetItem().Stop();
        pickle.ToArray().Length.Should().BeLessThan(1500);
        Refused(Write("key.pth", HostileFiles.Pth(pickle.ToArray())), PyTorchCheckpoint.ReadObject)
            .Message.Should().Contain("dictionary key or set member").And.Contain("nested more than 64 deep");

        // Twenty levels: shallow enough, but 2^21 nodes to hash.
        var wide = SelfNestedTuple(new PickleBuilder().Proto().EmptyDict(), 20).Int(7).SetItem().Stop();
        Refused(Write("wide.pth", HostileFiles.Pth(wide.ToArray())), PyTorchCheckpoint.ReadObject)
            .Message.Should().Contain("more than 4096 elements");

        // The same tuple as a set member.
        var set = SelfNestedTuple(new PickleBuilder().Proto().Mark(), 80).FrozenSet().Stop();
        Refused(Write("set.pth", HostileFiles.Pth(set.ToArray())), PyTorchCheckpoint.ReadObject)
            .Message.Should().Contain("set member");
    }

    [Fact]
    public void Equal_tuple_keys_built_separately_still_collapse_into_one_entry()
    {
        var pickle = new PickleBuilder().Proto().EmptyDict()
            .Mark().Str("layer").Int(1).Tuple().Int(10).SetItem()
            .Mark().Str("layer").Int(1).Tuple().Int(20).SetItem()
            .Mark().Str("layer").Int(2).Tuple().Int(30).SetItem()
            .Stop();
        var root = Loaded(Write("keys.pth", HostileFiles.Pth(pickle.ToArray())))
            .Should().BeOfType<Dictionary<object, object?>>().Subject;
        root.Should().HaveCount(2);
        root[new object?[] { "layer", 1L }].Should().Be(20L, "Python keeps the last value of equal keys");
        root[new object?[] { "layer", 2L }].Should().Be(30L);
    }

    [Fact]
    public void Copying_one_list_thousands_of_times_is_refused_by_the_element_budget()
    {
        // list(x) five thousand times over a list of 20,000: 55 KB asking for 100 million references.
        var pickle = new PickleBuilder().Proto().Global("builtins", "list").Put(0).Mark();
        for (int i = 0; i < 20_000; i++) pickle.None();
        pickle.List().Put(1).Pop();
        for (int i = 0; i < 5_000; i++) pickle.Get(0).Get(1).Tuple1().Reduce().Pop();
        pickle.Pop().None().Stop();
        var path = Write("copies.pth", HostileFiles.Pth(pickle.ToArray()));

        Refused(path, PyTorchCheckpoint.ReadObject).Message.Should().Contain("elements in all");
    }

    // ---------------------------------------------------------------- integers

    [Fact]
    public void Long1_and_long4_integers_load_with_their_values_and_an_oversized_one_is_refused()
    {
        var pickle = new PickleBuilder().Proto().EmptyDict()
            .Str("big").Long1(1L << 40).SetItem()
            .Str("negative").Op(0x8a, 1, 0xFF).SetItem()                 // LONG1 of one byte: -1
            .Str("zero").Op(0x8a, 0).SetItem()                            // LONG1 of no bytes: 0
            .Str("huge").Op(0x8b, 9, 0, 0, 0).Op(new byte[8]).Op(1).SetItem() // LONG4: 2^64
            .Stop();
        var root = (Dictionary<object, object?>)Loaded(Write("longs.pth", HostileFiles.Pth(pickle.ToArray())))!;
        root["big"].Should().Be(1L << 40);
        root["negative"].Should().Be(-1L);
        root["zero"].Should().Be(0L);
        root["huge"].Should().Be(BigInteger.One << 64);

        // A storage whose size and offset are LONG1 integers, as Python writes values beyond 2^31.
        var tensor = new PickleBuilder().Proto().EmptyDict().Str("w")
            .Global("torch._utils", "_rebuild_tensor_v2").Mark()
            .Mark().Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Long1(6).Tuple().BinPersId()
            .Long1(2).Mark().Long1(4).Tuple().Mark().Long1(1).Tuple().NewFalse().EmptyDict().Tuple().Reduce()
            .SetItem().Stop();
        using var scope = NewDisposeScope();
        var weights = PyTorchCheckpoint.ReadStateDict(Write("long-sizes.pth", HostileFiles.Pth(tensor.ToArray(), ("0", HostileFiles.Floats(6)))));
        weights["w"].data<float>().ToArray().Should().Equal(2f, 3f, 4f, 5f);

        var oversized = new PickleBuilder().Proto().Op(0x8b, 0x00, 0x10, 0, 0).Op(new byte[4096]).Stop();
        Refused(Write("oversized.pth", HostileFiles.Pth(oversized.ToArray())), PyTorchCheckpoint.ReadObject)
            .Message.Should().Contain("4096-byte integer").And.Contain("at most 1024");
    }

    public static TheoryData<string, string, string> BadTextArguments() => new()
    {
        // case, protocol 0 opcode with its line, what the message says
        { "escape past U+10FFFF", "V\\U00110000\n", "not a Unicode scalar value" },
        { "lone surrogate escape", "V\\ud800\n", "not a Unicode scalar value" },
        { "bad string escape", "S'\\q'\n", "invalid escape" },
        { "2000-digit integer", "I" + new string('9', 2000) + "\n", "2000 characters; expected at most 1024" },
    };

    [Theory]
    [MemberData(nameof(BadTextArguments))]
    public void Protocol_0_text_arguments_that_dotnet_cannot_represent_or_parse_cheaply_are_refused(string name, string opcode, string expected)
    {
        var pickle = new PickleBuilder().Op(System.Text.Encoding.ASCII.GetBytes(opcode)).Stop().ToArray();
        Refused(Write($"{name.Replace(' ', '-')}.pth", HostileFiles.Pth(pickle)), PyTorchCheckpoint.ReadObject)
            .Message.Should().Contain(expected);
    }

    // ---------------------------------------------------------------- tensor views against their storage

    public static TheoryData<string, long, long, long[], long[], string> BadViews() => new()
    {
        // name, storage numel, offset, size, stride, what the message says
        { "stride 0 to 4 GB", 1, 0, [1L << 30], [0], "needs more than 67108880 bytes" },
        { "expanded rows", 4, 0, [1L << 24, 4], [0, 1], "expanded stride-0 views" },
        { "past the end", 4, 2, [4], [1], "reaches element 5" },
        { "offset past the end", 4, 9, [0], [1], "starts at element 9" },
        { "overflowing sizes", 8, 0, [1L << 62, 1L << 62], [0, 0], "needs more than" },
        { "overflowing strides", 8, 0, [2], [long.MaxValue], "reaches element 9223372036854775807" },
        { "empty with overflowing strides", 8, 0, [0, 1L << 62, 4], [1, 1, 1], "multiply past 2^63" },
        { "negative stride", 8, 0, [2], [-1], "none may be negative" },
        { "65 dimensions", 8, 0, Enumerable.Repeat(1L, 65).ToArray(), Enumerable.Repeat(1L, 65).ToArray(), "65 dimensions" },
    };

    [Theory]
    [MemberData(nameof(BadViews))]
    public void A_view_outside_its_storage_or_expanded_beyond_the_budget_is_refused_before_any_allocation(
        string name, long numel, long offset, long[] size, long[] stride, string expected)
    {
        var pickle = new PickleBuilder().Proto().EmptyDict().Str("w").Tensor("FloatStorage", "0", numel, offset, size, stride).SetItem().Stop();
        var path = Write($"{name.Replace(' ', '-')}.pth", HostileFiles.Pth(pickle.ToArray(), ("0", HostileFiles.Floats((int)numel))));
        Refused(path, PyTorchCheckpoint.ReadStateDict).Message.Should().Contain(expected).And.Contain("storage '0'");
    }

    [Fact]
    public void Slices_a_transpose_and_a_small_expand_of_one_storage_still_load_with_their_values()
    {
        var pickle = new PickleBuilder().Proto().EmptyDict()
            .Str("full").Tensor("FloatStorage", "0", 6, 0, [2, 3], [3, 1]).SetItem()
            .Str("row").Tensor("FloatStorage", "0", 6, 3, [3], [1]).SetItem()
            .Str("transposed").Tensor("FloatStorage", "0", 6, 0, [3, 2], [1, 3]).SetItem()
            .Str("empty").Tensor("FloatStorage", "0", 6, 6, [0, 3], [3, 1]).SetItem()
            .Str("expanded").Tensor("FloatStorage", "0", 6, 4, [3, 2], [0, 1]).SetItem()
            .Stop();
        using var scope = NewDisposeScope();
        var weights = PyTorchCheckpoint.ReadStateDict(Write("views.pth", HostileFiles.Pth(pickle.ToArray(), ("0", HostileFiles.Floats(6)))));
        weights["full"].data<float>().ToArray().Should().Equal(0f, 1f, 2f, 3f, 4f, 5f);
        weights["row"].data<float>().ToArray().Should().Equal(3f, 4f, 5f);
        weights["transposed"].data<float>().ToArray().Should().Equal(0f, 3f, 1f, 4f, 2f, 5f);
        weights["empty"].shape.Should().Equal(0, 3);
        weights["expanded"].data<float>().ToArray().Should().Equal(4f, 5f, 4f, 5f, 4f, 5f);
    }

    [Fact]
    public void A_storage_declared_with_two_dtypes_or_two_sizes_is_refused()
    {
        var dtypes = new PickleBuilder().Proto().EmptyDict()
            .Str("a").Tensor("FloatStorage", "0", 4, 0, [4], [1]).SetItem()
            .Str("b").Tensor("IntStorage", "0", 4, 0, [4], [1]).SetItem()
            .Stop();
        Refused(Write("dtypes.pth", HostileFiles.Pth(dtypes.ToArray(), ("0", HostileFiles.Floats(4)))), PyTorchCheckpoint.ReadStateDict)
            .Message.Should().Contain("storage '0'").And.Contain("torch.FloatStorage").And.Contain("torch.IntStorage");

        var sizes = new PickleBuilder().Proto().EmptyDict()
            .Str("a").Tensor("FloatStorage", "0", 4, 0, [4], [1]).SetItem()
            .Str("b").Tensor("FloatStorage", "0", 2, 0, [2], [1]).SetItem()
            .Stop();
        Refused(Write("sizes.pth", HostileFiles.Pth(sizes.ToArray(), ("0", HostileFiles.Floats(4)))), PyTorchCheckpoint.ReadStateDict)
            .Message.Should().Contain("4 elements").And.Contain("2 elements");
    }

    [Fact]
    public void A_storage_larger_than_its_entry_is_refused_before_it_is_allocated()
    {
        var pickle = new PickleBuilder().Proto().EmptyDict().Str("w").Tensor("FloatStorage", "0", 1L << 60, 0, [1], [1]).SetItem().Stop();
        var path = Write("claims.pth", HostileFiles.Pth(pickle.ToArray(), ("0", HostileFiles.Floats(1))));
        Refused(path, PyTorchCheckpoint.ReadStateDict).Message.Should().Contain("holds 4 bytes").And.Contain(((decimal)(1L << 60) * 4).ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void Rebuilding_one_storage_hundreds_of_times_is_refused_by_the_view_budget()
    {
        // 100 separate full views of a 4 MB storage: 400 MB from a few kilobytes of pickle.
        const int count = 1 << 20;
        var pickle = new PickleBuilder().Proto().EmptyDict();
        pickle.Global("torch._utils", "_rebuild_tensor_v2").Put(0)
            .Mark().Storage("FloatStorage", "0", count).Int(0).Mark().Int(count).Tuple().Mark().Int(1).Tuple().Tuple().Put(1).Pop().Pop();
        for (int i = 0; i < 100; i++) pickle.Str($"w{i}").Get(0).Get(1).Reduce().SetItem();
        var path = Write("views.pth", HostileFiles.Pth(pickle.Stop().ToArray(), ("0", HostileFiles.Floats(count))));
        Refused(path, PyTorchCheckpoint.ReadStateDict).Message.Should().Contain("times the 4194304 bytes of its storages");
    }

    [Fact]
    public void Tied_weights_load_as_copies_but_one_tensor_under_thousands_of_names_is_refused()
    {
        const int count = 1 << 20;
        var tied = new PickleBuilder().Proto().EmptyDict()
            .Str("embed").Tensor("FloatStorage", "0", count, 0, [count], [1]).Put(0).SetItem()
            .Str("head").Get(0).SetItem().Stop();
        using (var scope = NewDisposeScope())
        {
            var weights = PyTorchCheckpoint.ReadStateDict(Write("tied.pth", HostileFiles.Pth(tied.ToArray(), ("0", HostileFiles.Floats(count)))));
            weights["head"].Should().NotBeSameAs(weights["embed"]);
            weights["head"][count - 1].item<float>().Should().Be(count - 1);
        }

        var many = new PickleBuilder().Proto().EmptyDict()
            .Str("w0").Tensor("FloatStorage", "0", count, 0, [count], [1]).Put(0).SetItem();
        for (int i = 1; i < 1000; i++) many.Str($"w{i}").Get(0).SetItem();
        Refused(Write("many.pth", HostileFiles.Pth(many.Stop().ToArray(), ("0", HostileFiles.Floats(count)))), PyTorchCheckpoint.ReadStateDict)
            .Message.Should().Contain("names the same tensors so often");
    }

    [Fact]
    public void A_zip_entry_claiming_more_bytes_than_deflate_can_produce_is_refused()
    {
        var pickle = new PickleBuilder().Proto().EmptyDict().Str("w").Tensor("FloatStorage", "0", 4, 0, [4], [1]).SetItem().Stop();
        var bytes = HostileFiles.Pth(pickle.ToArray(), ("0", HostileFiles.Floats(4)));
        // Central directory record of archive/data/0: its uncompressed size (offset 24) says 1.5 GB.
        var name = System.Text.Encoding.ASCII.GetBytes("archive/data/0");
        int at = 0;
        while (true)
        {
            at = bytes.AsSpan(at).IndexOf((ReadOnlySpan<byte>)[0x50, 0x4B, 0x01, 0x02]) is var found and >= 0 ? at + found : throw new InvalidOperationException("no entry");
            if (bytes.AsSpan(at + 46, name.Length).SequenceEqual(name)) break;
            at += 4;
        }
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at + 24), 1_500_000_000);
        Refused(Write("bomb.pth", bytes), PyTorchCheckpoint.ReadStateDict).Message.Should().Contain("archive/data/0").And.Contain("1500000000");
    }

    [Fact]
    public void A_code_execution_payload_stays_inert_and_the_model_keeps_its_weights()
    {
        // os.system('touch <marker>') as the value of 'model': built as an opaque object, never called.
        var marker = Path.Combine(_folder, "pwned");
        var pickle = new PickleBuilder().Proto().EmptyDict().Str("model")
            .Global("os", "system").Mark().Str($"touch {marker}").Tuple().Reduce().SetItem().Stop();
        var path = Write("payload.pth", HostileFiles.Pth(pickle.ToArray()));
        using var scope = NewDisposeScope();
        var model = nn.Linear(2, 2);
        var before = model.weight!.clone();
        Refused(path, p => Checkpoint.Load(model, p)).Message.Should().Contain("'model' (os.system)");
        File.Exists(marker).Should().BeFalse();
        model.weight!.eq(before).all().item<bool>().Should().BeTrue();
    }
}
