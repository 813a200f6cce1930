using System.Buffers.Binary;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Checkpoints;

/// <summary>safetensors files whose header lies, each refused with an <see cref="InvalidDataException"/> that names
/// the file and says what was expected, before any tensor buffer is allocated.</summary>
public sealed class SafeTensorsHostileTests : TorchTest, IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("polaformer-st-hostile-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private const string F32x4 = "\"dtype\":\"F32\",\"shape\":[4]";

    public static TheoryData<string, string, int, string> BadHeaders() => new()
    {
        // case, header JSON, data bytes, what the message says
        { "negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", 16, "expected no negative size" },
        { "overlapping offsets", $"{{\"a\":{{{F32x4},\"data_offsets\":[0,16]}},\"b\":{{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}}}", 24, "overlaps the tensor before it" },
        { "gap between tensors", $"{{\"a\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}},\"b\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}}}", 24, "belong to no tensor" },
        { "trailing bytes", $"{{\"a\":{{{F32x4},\"data_offsets\":[0,16]}}}}", 20, "cover 16 bytes of the data section, which has 20" },
        { "past the data", $"{{\"a\":{{{F32x4},\"data_offsets\":[0,16]}}}}", 12, "ends at byte 16 of the data section, which has only 12" },
        { "duplicate key", $"{{\"a\":{{{F32x4},\"data_offsets\":[0,16]}},\"a\":{{{F32x4},\"data_offsets\":[16,32]}}}}", 32, "names 'a' twice" },
        { "unknown dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "unsupported dtype 'F8_E4M3'" },
        { "overflowing shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "multiply past 2^63" },
        { "shape that wraps to zero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0, "multiply past 2^63" },
        { "empty with overflowing strides", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904,4],\"data_offsets\":[0,0]}}", 0, "multiply past 2^63" },
        { "bytes overflowing the dtype size", "{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}", 0, "needs more than 9223372036854775807 bytes" },
        { "shape and span differ", $"{{\"a\":{{{F32x4},\"data_offsets\":[0,12]}}}}", 12, "needs 16 bytes" },
        { "reversed offsets", $"{{\"a\":{{{F32x4},\"data_offsets\":[16,0]}}}}", 16, "expected 0 <= begin <= end" },
        { "root is an array", "[1,2]", 0, "expected an object of tensors" },
        { "entry is a number", "{\"a\":5}", 0, "expected an object with dtype, shape and data_offsets" },
        { "metadata not a string", "{\"__metadata__\":{\"epoch\":3}}", 0, "expected a string" },
        { "65 dimensions", $"{{\"a\":{{\"dtype\":\"F32\",\"shape\":[{string.Join(",", Enumerable.Repeat(1, 65))}],\"data_offsets\":[0,4]}}}}", 4, "expected at most 64" },
        { "not JSON", "{\"a\":", 0, "corrupted safetensors header" },
        { "fractional size", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "is malformed" },
    };

    [Theory]
    [MemberData(nameof(BadHeaders))]
    public void A_lying_header_is_refused_with_the_path_and_what_was_expected(string name, string header, int dataBytes, string expected)
    {
        var path = Path.Combine(_folder, $"{name.Replace(' ', '-')}.safetensors");
        File.WriteAllBytes(path, HostileFiles.SafeTensors(header, new byte[dataBytes]));
        var refusal = FluentActions.Invoking(() => SafeTensors.Load(path)).Should().Throw<InvalidDataException>().Which;
        refusal.Message.Should().Contain(path).And.Contain(expected);
        // Through the format-detecting entry point too.
        FluentActions.Invoking(() => Checkpoint.ReadStateDict(path)).Should().Throw<InvalidDataException>().Which.Message.Should().Contain(path);
    }

    [Theory]
    [InlineData(0UL, "out of range")]
    [InlineData(1UL << 40, "out of range")]
    [InlineData(1000UL, "claims 1000 bytes but only 20 follow")]
    public void A_header_length_out_of_range_or_past_the_file_is_refused_before_it_is_allocated(ulong length, string expected)
    {
        var bytes = new byte[28];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, length);
        var path = Path.Combine(_folder, "length.safetensors");
        File.WriteAllBytes(path, bytes);
        FluentActions.Invoking(() => SafeTensors.Load(path)).Should().Throw<InvalidDataException>()
            .Which.Message.Should().Contain(path).And.Contain(expected);
    }

    [Fact]
    public void A_non_seekable_stream_declaring_a_gigabyte_tensor_is_refused_by_its_real_length()
    {
        var bytes = HostileFiles.SafeTensors("{\"a\":{\"dtype\":\"U8\",\"shape\":[1073741824],\"data_offsets\":[0,1073741824]}}", new byte[16]);
        using var stream = new ForwardOnlyStream(bytes);
        FluentActions.Invoking(() => SafeTensors.Load(stream, "upload")).Should().Throw<InvalidDataException>()
            .Which.Message.Should().Contain("'upload' is truncated").And.Contain("which has only 16");
    }

    [Fact]
    public void Tensors_listed_out_of_offset_order_load_in_header_order_with_their_values()
    {
        var data = new byte[24];
        for (int i = 0; i < 6; i++) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(i * 4), i + 0.5f);
        var header = "{\"__metadata__\":{\"format\":\"pt\"},\"second\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]}," +
                     "\"first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"none\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[24,24]}}";
        var path = Path.Combine(_folder, "ordered.safetensors");
        File.WriteAllBytes(path, HostileFiles.SafeTensors(header, data));
        using var file = SafeTensors.Load(path);
        file.Tensors.Keys.Should().Equal("second", "first", "none");
        file.Tensors["first"].data<float>().ToArray().Should().Equal(0.5f, 1.5f);
        file.Tensors["second"].data<float>().ToArray().Should().Equal(2.5f, 3.5f, 4.5f, 5.5f);
        file.Tensors["none"].shape.Should().Equal(0);
        file.Metadata["format"].Should().Be("pt");
    }

    /// <summary>A stream that cannot seek or tell its length, as a network upload would be.</summary>
    private sealed class ForwardOnlyStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    }
}
