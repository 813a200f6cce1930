using System.Diagnostics;
using System.Text;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Checkpoints;

/// <summary>
/// A standing fuzz test of both readers: seeded generators of mutated and structurally random pickles (in
/// torch.save zips) and safetensors files. Every case must load, or be refused with the documented exception
/// (<see cref="InvalidDataException"/>, or <see cref="NotSupportedException"/> for what is valid but unsupported)
/// whose message names the file, on a bounded thread within a deadline: never a crash, a hang or another exception.
/// </summary>
public sealed class CheckpointFuzzTests : TorchTest, IDisposable
{
    /// <summary>Fixed so that a failure reproduces; POLAFORMER_FUZZ_SEED explores other streams of cases.</summary>
    private static readonly int Seed = int.TryParse(Environment.GetEnvironmentVariable("POLAFORMER_FUZZ_SEED"), out var seed) ? seed : 20261204;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);
    private readonly string _folder = Directory.CreateTempSubdirectory("polaformer-fuzz-").FullName;
    private readonly ITestOutputHelper _output;

    public CheckpointFuzzTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void Two_thousand_mutated_and_random_pth_files_load_or_are_refused_cleanly_within_the_deadline()
    {
        var random = new Random(Seed);
        var outcomes = Run(2000, "pth", i => (i % 3) switch
        {
            0 => HostileFiles.Pth(Mutate(random, Template(random, i)), Storages(random)),
            1 => HostileFiles.Pth(RandomPickle(random), Storages(random)),
            _ => MutateBytes(random, HostileFiles.Pth(Template(random, i), Storages(random)), zip: true),
        }, (path, i) =>
        {
            if (i % 2 == 0) PyTorchCheckpoint.ReadObject(path);
            else Checkpoint.ReadStateDict(path);
        });
        // The generators reach both outcomes (else they would test nothing) and every refusal kind is accounted for.
        outcomes.Should().ContainKey("loaded").WhoseValue.Should().BeGreaterThan(20);
        outcomes.Should().ContainKey("InvalidDataException").WhoseValue.Should().BeGreaterThan(500);
    }

    [Fact]
    public void Two_thousand_random_and_mutated_safetensors_files_load_or_are_refused_cleanly_within_the_deadline()
    {
        var random = new Random(Seed + 1);
        var outcomes = Run(2000, "safetensors", i => i % 2 == 0 ? RandomSafeTensors(random) : MutateBytes(random, ValidSafeTensors(random), zip: false),
            (path, i) =>
            {
                if (i % 2 == 0) SafeTensors.Load(path).Dispose();
                else Checkpoint.ReadStateDict(path);
            });
        outcomes.Should().ContainKey("loaded").WhoseValue.Should().BeGreaterThan(50);
        outcomes.Should().ContainKey("InvalidDataException").WhoseValue.Should().BeGreaterThan(500);
    }

    /// <summary>Runs every case on a bounded thread; returns the count of each outcome and fails on any other.</summary>
    private Dictionary<string, int> Run(int cases, string extension, Func<int, byte[]> generate, Action<string, int> read)
    {
        var outcomes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var failures = new List<string>();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < cases; i++)
        {
            var bytes = generate(i);
            var path = Path.Combine(_folder, $"case-{i:D5}.{extension}");
            File.WriteAllBytes(path, bytes);
            Exception? thrown;
            try
            {
                thrown = HostileFiles.RunBounded(() =>
                {
                    using var scope = NewDisposeScope();
                    read(path, i);
                }, Deadline, $"case {i} ({bytes.Length} bytes, seed {Seed})");
            }
            catch (TimeoutException e)
            {
                failures.Add(e.Message);
                break;
            }
            string outcome = thrown switch
            {
                null => "loaded",
                InvalidDataException or NotSupportedException when thrown.Message.Contains(path, StringComparison.Ordinal) => thrown.GetType().Name,
                _ => "failed",
            };
            if (outcome == "failed")
            {
                var kept = Path.Combine(_folder, "..", $"polaformer-fuzz-failure-{i:D5}.{extension}");
                File.Copy(path, kept, overwrite: true);
                failures.Add($"case {i} (kept as {Path.GetFullPath(kept)}): {thrown!.GetType().Name}: {thrown.Message}\n{thrown.StackTrace}");
            }
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            File.Delete(path);
        }
        _output.WriteLine($"{cases} {extension} cases in {clock.Elapsed.TotalSeconds:0.0} s: " +
                          string.Join(", ", outcomes.Select(kv => $"{kv.Key} {kv.Value}")));
        foreach (var failure in failures) _output.WriteLine(failure);
        failures.Should().BeEmpty("every case loads or is refused with the documented exception naming the file");
        return new Dictionary<string, int>(outcomes);
    }

    // ---------------------------------------------------------------- pickles

    private static readonly string[] StorageTypes = ["FloatStorage", "IntStorage", "LongStorage", "HalfStorage", "BoolStorage", "DoubleStorage", "ByteStorage", "QInt8Storage"];

    private static (string, byte[])[] Storages(Random random) =>
        [("0", HostileFiles.Floats(random.Next(0, 3) == 0 ? random.Next(0, 16) : 12)), ("1", RandomBytes(random, random.Next(0, 64)))];

    /// <summary>A valid checkpoint pickle: a state dict with views of shared storages and a training entry with
    /// every kind of value the reader builds.</summary>
    private static byte[] Template(Random random, int i)
    {
        var p = new PickleBuilder().Proto((byte)random.Next(2, 6)).EmptyDict().Put(0);
        p.Str("model").EmptyDict()
            .Str("w").Tensor("FloatStorage", "0", 12, 0, [3, 4], [4, 1]).Put(1).SetItem()
            .Str("row").Tensor("FloatStorage", "0", 12, 4, [4], [1]).SetItem()
            .Str("t").Tensor("FloatStorage", "0", 12, 0, [4, 3], [1, 4]).SetItem()
            .Str("e").Tensor("FloatStorage", "0", 12, 2, [5, 2], [0, 1]).SetItem()
            .Str("tied").Get(1).SetItem()
            .Str("bytes").Tensor("ByteStorage", "1", 8, 0, [2, 4], [4, 1]).SetItem()
            .SetItem();
        p.Str("epoch").Int(i).SetItem()
            .Str("big").Long1(1L << 50).SetItem()
            .Str("pair").Mark().Str("a").Int(-3).Tuple().Put(2).SetItem()
            .Str("again").Get(2).SetItem()
            .Str("keys").EmptyDict().Mark().Str("x").Int(1).Tuple().Str("v").SetItem().SetItem()
            .Str("list").Global("builtins", "list").Mark().Mark().Int(1).Int(2).Int(3).List().Tuple().Reduce().SetItem()
            .Str("set").Mark().Int(1).Str("s").FrozenSet().SetItem()
            .Str("config").Global("yacs.config", "CfgNode").EmptyTuple().Op(0x81).Op((byte)'}').Str("LR").Op((byte)'G', 0x3F, 0xB9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9A).SetItem().Op((byte)'b').SetItem()
            .Str("payload").Global("os", "system").Mark().Str("echo unreachable").Tuple().Reduce().SetItem();
        return p.Stop().ToArray();
    }

    private static byte[] Mutate(Random random, byte[] pickle) => MutateBytes(random, pickle, zip: false);

    /// <summary>One to four byte-level mutations: flips, opcode overwrites, insertions, deletions, duplications,
    /// interesting 4-byte integers, truncation.</summary>
    private static byte[] MutateBytes(Random random, byte[] source, bool zip)
    {
        var bytes = new List<byte>(source);
        int mutations = random.Next(1, 5);
        for (int m = 0; m < mutations && bytes.Count > 0; m++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(zip ? 3 : 7))
            {
                case 0: bytes[at] ^= (byte)(1 << random.Next(8)); break;
                case 1: bytes[at] = (byte)random.Next(256); break;
                case 2:
                {
                    uint value = Interesting[random.Next(Interesting.Length)];
                    for (int k = 0; k < 4 && at + k < bytes.Count; k++) bytes[at + k] = (byte)(value >> (8 * k));
                    break;
                }
                case 3: bytes.Insert(at, Opcodes[random.Next(Opcodes.Length)]); break;
                case 4: bytes.RemoveRange(at, Math.Min(random.Next(1, 16), bytes.Count - at)); break;
                case 5:
                {
                    int length = Math.Min(random.Next(1, 64), bytes.Count - at);
                    var slice = bytes.GetRange(at, length);
                    bytes.InsertRange(random.Next(bytes.Count), Enumerable.Repeat(slice, random.Next(1, 4)).SelectMany(s => s));
                    break;
                }
                default: bytes.RemoveRange(at, bytes.Count - at); break;
            }
        }
        return [.. bytes];
    }

    private static readonly uint[] Interesting = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x40000000, 1000, 65];

    private static readonly byte[] Opcodes = Encoding.ASCII.GetBytes("()0123NIJKMLFGSTUVXBC]})lt.dasuecRbipqrgjhPQ")
        .Concat(Enumerable.Range(0x80, 0x19).Select(b => (byte)b)).ToArray();

    private static readonly (string Module, string Name)[] Globals =
    [
        ("builtins", "list"), ("builtins", "set"), ("builtins", "dict"), ("collections", "OrderedDict"), ("_codecs", "encode"),
        ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"), ("os", "system"),
        ("copyreg", "_reconstructor"), ("builtins", "bytearray"),
    ];

    /// <summary>A structurally random pickle: opcodes drawn from a grammar of pushes, containers, memo traffic,
    /// calls and persistent ids, sometimes with a long run of nesting.</summary>
    private static byte[] RandomPickle(Random random)
    {
        var p = new PickleBuilder().Proto((byte)random.Next(2, 6));
        int steps = random.Next(1, 120);
        for (int s = 0; s < steps; s++)
        {
            switch (random.Next(24))
            {
                case 0: p.None(); break;
                case 1: p.Int(random.Next(-5, 300)); break;
                case 2: p.Long1(random.NextInt64()); break;
                case 3: p.Op(0x8a, (byte)random.Next(0, 12)).Op(RandomBytes(random, random.Next(0, 12))); break;
                case 4: p.Str(random.Next(4) switch { 0 => "storage", 1 => "0", 2 => "cpu", _ => "k" + random.Next(5) }); break;
                case 5: p.EmptyList(); break;
                case 6: p.EmptyDict(); break;
                case 7: p.EmptyTuple(); break;
                case 8: p.Mark(); break;
                case 9: p.Op(random.Next(6) switch { 0 => (byte)'t', 1 => (byte)'l', 2 => (byte)'d', 3 => 0x91, 4 => (byte)'u', _ => (byte)'e' }); break;
                case 10: p.Op(random.Next(3) switch { 0 => 0x85, 1 => 0x86, _ => 0x87 }); break;
                case 11: p.Op(random.Next(4) switch { 0 => (byte)'a', 1 => (byte)'s', 2 => (byte)'2', _ => (byte)'0' }); break;
                case 12: p.Put((uint)random.Next(8)); break;
                case 13: p.Get((uint)random.Next(8)); break;
                case 14:
                {
                    var (module, name) = Globals[random.Next(Globals.Length)];
                    p.Global(module, name);
                    break;
                }
                case 15: p.Reduce(); break;
                case 16: p.Storage(StorageTypes[random.Next(StorageTypes.Length)], random.Next(3).ToString(System.Globalization.CultureInfo.InvariantCulture), random.Next(4) == 0 ? random.NextInt64() : random.Next(0, 20)); break;
                case 17:
                    p.Tensor(StorageTypes[random.Next(StorageTypes.Length)], random.Next(2).ToString(System.Globalization.CultureInfo.InvariantCulture), random.Next(0, 20), random.Next(-1, 20),
                        Enumerable.Range(0, random.Next(0, 4)).Select(_ => Dimension(random)).ToArray(),
                        Enumerable.Range(0, random.Next(0, 4)).Select(_ => Dimension(random)).ToArray());
                    break;
                case 18: p.Op((byte)'b'); break;
                case 19: p.Op(0x81); break;
                case 20: p.Op((byte)'G').Op(RandomBytes(random, 8)); break;
                case 21: p.Op((byte)'B').Op(BitConverter.GetBytes(random.Next(0, 8))).Op(RandomBytes(random, random.Next(0, 8))); break;
                case 22:
                {
                    // A long run of nesting: lists, tuples or dicts thousands deep.
                    int depth = random.Next(1000, 5000);
                    switch (random.Next(3))
                    {
                        case 0:
                            for (int d = 0; d < depth; d++) p.EmptyList();
                            for (int d = 1; d < depth; d++) p.Append();
                            break;
                        case 1:
                            p.None();
                            for (int d = 0; d < depth; d++) p.Tuple1();
                            break;
                        default:
                            for (int d = 0; d < depth; d++) p.EmptyDict().Str("k");
                            p.None();
                            for (int d = 0; d < depth; d++) p.SetItem();
                            break;
                    }
                    break;
                }
                default:
                {
                    // A self-nested tuple, then used as a key or set member.
                    uint levels = (uint)random.Next(1, 90);
                    p.Int(1).Tuple1().Put(100).Pop();
                    for (uint l = 0; l < levels; l++) p.Get(100 + l).Get(100 + l).Tuple2().Put(101 + l).Pop();
                    p.EmptyDict().Get(100 + levels).None().SetItem();
                    break;
                }
            }
        }
        return p.Stop().ToArray();
    }

    private static long Dimension(Random random) => random.Next(8) switch
    {
        0 => 0,
        1 => random.NextInt64(),
        2 => -random.Next(1, 4),
        3 => 1L << random.Next(20, 63),
        _ => random.Next(1, 6),
    };

    // ---------------------------------------------------------------- safetensors

    private static readonly string[] Dtypes = ["F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "", "f32"];

    /// <summary>A valid file written by <see cref="SafeTensors.Save(Stream, IEnumerable{KeyValuePair{string, Tensor}}, IReadOnlyDictionary{string, string}?)"/>.</summary>
    private static byte[] ValidSafeTensors(Random random)
    {
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>();
        int count = random.Next(1, 5);
        for (int t = 0; t < count; t++)
        {
            var shape = Enumerable.Range(0, random.Next(0, 3)).Select(_ => (long)random.Next(0, 4)).ToArray();
            tensors[$"t{t}"] = (random.Next(3) switch { 0 => ones(shape), 1 => arange(shape.Aggregate(1L, (a, b) => a * b), dtype: int64).reshape(shape), _ => zeros(shape, dtype: float16) });
        }
        using var stream = new MemoryStream();
        SafeTensors.Save(stream, tensors, random.Next(2) == 0 ? new Dictionary<string, string> { ["epoch"] = "3" } : null);
        return stream.ToArray();
    }

    /// <summary>A header written by hand: names that may repeat, dtypes that may be unknown, shapes that may be
    /// negative or overflow, offsets consistent or perturbed, and data that may be short or long.</summary>
    private static byte[] RandomSafeTensors(Random random)
    {
        var header = new StringBuilder("{");
        long offset = 0;
        int count = random.Next(0, 5);
        var parts = new List<string>();
        if (random.Next(4) == 0) parts.Add(random.Next(2) == 0 ? "\"__metadata__\":{\"a\":\"b\"}" : "\"__metadata__\":{\"a\":" + random.Next(9) + "}");
        for (int t = 0; t < count; t++)
        {
            string dtype = Dtypes[random.Next(Dtypes.Length)];
            int size = dtype switch { "F64" or "I64" => 8, "F32" or "I32" => 4, "F16" or "BF16" or "I16" => 2, _ => 1 };
            var shape = Enumerable.Range(0, random.Next(0, 4)).Select(_ => random.Next(10) == 0 ? Dimension(random) : random.Next(0, 5)).ToArray();
            long bytes = shape.Aggregate((long)size, (a, b) => unchecked(a * b));
            long begin = random.Next(8) == 0 ? offset + random.Next(-8, 9) : offset;
            long end = random.Next(8) == 0 ? begin + random.Next(-8, 9) : begin + bytes;
            parts.Add($"\"{(random.Next(6) == 0 ? "t0" : $"t{t}")}\":{{\"dtype\":\"{dtype}\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[{begin},{end}]}}");
            offset = Math.Max(offset, end);
        }
        header.Append(string.Join(",", parts)).Append('}');
        long dataLength = Math.Clamp(offset + (random.Next(6) == 0 ? random.Next(-8, 9) : 0), 0, 1 << 16);
        var file = HostileFiles.SafeTensors(header.ToString(), RandomBytes(random, (int)dataLength));
        if (random.Next(10) == 0) BitConverter.GetBytes((ulong)(uint)random.Next()).CopyTo(file, 0);
        return file;
    }

    private static byte[] RandomBytes(Random random, int count)
    {
        var bytes = new byte[count];
        random.NextBytes(bytes);
        return bytes;
    }
}
