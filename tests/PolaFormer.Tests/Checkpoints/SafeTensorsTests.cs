using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Checkpoints;

public sealed class SafeTensorsTests : TorchTest, IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("polaformer-st-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void Round_trip_keeps_every_dtype_shape_value_and_the_metadata()
    {
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>
        {
            ["a.f32"] = randn(3, 4),
            ["b.f64"] = randn(2, 2, 2, dtype: float64),
            ["c.i64"] = arange(10),
            ["d.bf16"] = randn(5).to(bfloat16),
            ["e.scalar"] = tensor(3.5f),
            ["f.empty"] = zeros(0, 3),
            ["g.view"] = randn(4, 6).t(),   // non-contiguous
        };
        var path = Path.Combine(_folder, "round.safetensors");
        SafeTensors.Save(path, tensors, new Dictionary<string, string> { ["case"] = "round trip" });

        using var loaded = SafeTensors.Load(path);
        loaded.Metadata.Should().ContainKey("case").WhoseValue.Should().Be("round trip");
        loaded.Tensors.Keys.Should().Equal(tensors.Keys);
        foreach (var (name, t) in tensors)
        {
            loaded.Tensors[name].dtype.Should().Be(t.dtype, name);
            loaded.Tensors[name].shape.Should().Equal(t.shape, name);
            loaded.Tensors[name].eq(t).all().item<bool>().Should().BeTrue(name);
        }
    }

    [Fact]
    public void Reads_the_golden_files_written_by_python()
    {
        using var file = SafeTensors.Load(Path.Combine(GoldenCase.BundledFolder, "attn_swin_softmax_w7_d96_h3_nomask.safetensors"));
        file.Tensors["relative_position_index"].dtype.Should().Be(int64);
        file.Tensors["relative_position_index"].shape.Should().Equal(49, 49);
        file.Tensors["input.x"].shape.Should().Equal(4, 49, 96);
        file.Metadata["module"].Should().Be("models.pola_swin.WindowAttention");
    }

    [Fact]
    public void A_truncated_file_is_reported_as_truncated()
    {
        var path = Path.Combine(_folder, "cut.safetensors");
        SafeTensors.Save(path, [new("w", randn(100, 100))]);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 1000)]);
        FluentActions.Invoking(() => SafeTensors.Load(path)).Should().Throw<InvalidDataException>()
            .WithMessage("*truncated*'w'*");
    }

    [Fact]
    public void A_corrupted_header_is_reported()
    {
        var path = Path.Combine(_folder, "bad.safetensors");
        SafeTensors.Save(path, [new("w", randn(4))]);
        var bytes = File.ReadAllBytes(path);
        bytes[8] = (byte)'#';
        File.WriteAllBytes(path, bytes);
        FluentActions.Invoking(() => SafeTensors.Load(path)).Should().Throw<InvalidDataException>().WithMessage("*header*");
        File.WriteAllBytes(path, [1, 2, 3]);
        FluentActions.Invoking(() => SafeTensors.Load(path)).Should().Throw<InvalidDataException>().WithMessage("*not a safetensors file*");
    }

    [Fact]
    public void Saving_replaces_the_file_atomically_and_leaves_no_temporary_files()
    {
        var path = Path.Combine(_folder, "atomic.safetensors");
        SafeTensors.Save(path, [new("w", ones(3))]);
        SafeTensors.Save(path, [new("w", zeros(3))]);
        using var loaded = SafeTensors.Load(path);
        loaded.Tensors["w"].sum().item<float>().Should().Be(0f);
        Directory.GetFiles(_folder).Should().ContainSingle();
    }
}
