using System.Text.Json;
using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training;
using Xunit;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training;

/// <summary>
/// <see cref="TrainingOptions.Device"/> and <see cref="TrainingOptions.Dtype"/> are typed (a TorchSharp device and
/// dtype), yet checkpoints keep the JSON they always had ("cpu", "cuda:1", "bfloat16"), so a checkpoint written before
/// the change still resumes.
/// </summary>
public sealed class TrainingOptionsJsonTests : TorchTest
{
    [Fact]
    public void Device_and_dtype_are_written_by_their_pytorch_names_and_read_back()
    {
        var options = new TrainingOptions { Device = new Device(DeviceType.CUDA, 1), Dtype = ScalarType.BFloat16 };

        var json = JsonSerializer.Serialize(options);

        json.Should().Contain("\"Device\":\"cuda:1\"").And.Contain("\"Dtype\":\"bfloat16\"");
        var back = JsonSerializer.Deserialize<TrainingOptions>(json)!;
        back.Device.type.Should().Be(DeviceType.CUDA);
        back.Device.index.Should().Be(1);
        back.Dtype.Should().Be(ScalarType.BFloat16);
        back.RecipeDifferences(options).Should().BeEmpty("the round trip changes nothing a run computes");
        // Read on this machine, which may have no CUDA: recorded options of a GPU run must still load.
        JsonSerializer.Deserialize<TrainingOptions>("""{"Device":"cuda"}""")!.Device.type.Should().Be(DeviceType.CUDA);
    }

    [Fact]
    public void The_json_of_a_checkpoint_written_with_string_options_still_reads()
    {
        // The options as TrainingOptions wrote them while Device and Dtype were strings.
        const string before = """{"Model":"pola_pvt_tiny","Epochs":5,"BatchSize":64,"Device":"cpu","Dtype":"float16","Seed":3}""";

        var options = JsonSerializer.Deserialize<TrainingOptions>(before)!;

        options.Device.type.Should().Be(DeviceType.CPU);
        options.Dtype.Should().Be(ScalarType.Float16);
        options.Epochs.Should().Be(5);
        JsonSerializer.Serialize(options).Should().Contain("\"Device\":\"cpu\"").And.Contain("\"Dtype\":\"float16\"");
    }

    [Fact]
    public void A_wrong_dtype_in_json_names_the_option()
    {
        FluentActions.Invoking(() => JsonSerializer.Deserialize<TrainingOptions>("""{"Dtype":"float8"}"""))
            .Should().Throw<JsonException>().WithMessage("TrainingOptions.Dtype is 'float8'; expected float32, bfloat16 or float16*");
    }
}
