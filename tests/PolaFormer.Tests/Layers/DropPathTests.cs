using FluentAssertions;
using PolaFormer.Layers;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Layers;

public sealed class DropPathTests : TorchTest
{
    /// <summary>The official rule, computed by LibTorch: [x.item() for x in torch.linspace(0, rate, n)].</summary>
    private static double[] TorchLinspace(double rate, int n)
    {
        using var values = linspace(0, rate, n, dtype: ScalarType.Float32);
        return values.data<float>().Select(v => (double)v).ToArray();
    }

    public static TheoryData<double, int> PresetSchedules() => new()
    {
        { 0.1, 8 }, { 0.1, 16 }, { 0.1, 28 }, { 0.1, 41 },   // Pola-PVT tiny, small, medium, large (and PolaFormer++ b0: 8)
        { 0.1, 12 },                                          // Pola-ViT presets (and PolaFormer++ b2)
        { 0.2, 12 }, { 0.3, 24 }, { 0.5, 24 },               // Pola-Swin tiny, small, base (and base 384)
        { 0.1, 10 }, { 0.15, 20 }, { 0.4, 28 }, { 0.55, 38 }, // PolaFormer++ b1, b3, b4, b5
    };

    [Theory]
    [MemberData(nameof(PresetSchedules))]
    public void LinearSchedule_is_torch_linspace_in_float32_for_the_presets(double rate, int totalBlocks)
    {
        DropPath.LinearSchedule(rate, totalBlocks).Should().Equal(TorchLinspace(rate, totalBlocks));
    }

    [Fact]
    public void LinearSchedule_is_torch_linspace_in_float32_bit_for_bit()
    {
        var mismatches = new List<string>();
        foreach (double rate in new[] { 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 1.0 / 3, 0.4, 0.5, 0.55, 0.7, 0.9, 0.999, 0.123456789 })
            for (int n = 0; n <= 200; n++)
            {
                var expected = TorchLinspace(rate, n);
                var actual = DropPath.LinearSchedule(rate, n);
                for (int k = 0; k < n; k++)
                    if (BitConverter.DoubleToInt64Bits(actual[k]) != BitConverter.DoubleToInt64Bits(expected[k]))
                        mismatches.Add($"rate {rate}, {n} blocks, block {k}: {actual[k]:R} vs torch {expected[k]:R}");
                actual.Length.Should().Be(n);
            }
        mismatches.Should().BeEmpty();
    }

    [Fact]
    public void LinearSchedule_has_the_float32_values_the_official_item_calls_give()
    {
        var schedule = DropPath.LinearSchedule(0.1, 8);
        schedule[0].Should().Be(0);
        schedule[^1].Should().Be((double)0.1f, "the last block gets the float32 rate, widened");
        schedule.Should().OnlyContain(p => (double)(float)p == p, "every value is a float32 widened to double");
        schedule.Should().BeInAscendingOrder();
        DropPath.LinearSchedule(0.3, 1).Should().Equal(0.0);
        DropPath.LinearSchedule(0.3, 0).Should().BeEmpty();
        DropPath.LinearSchedule(0, 5).Should().OnlyContain(p => p == 0);
    }

    [Fact]
    public void LinearSchedule_refuses_bad_arguments()
    {
        FluentActions.Invoking(() => DropPath.LinearSchedule(1, 4)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("rate");
        FluentActions.Invoking(() => DropPath.LinearSchedule(double.NaN, 4)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("rate");
        FluentActions.Invoking(() => DropPath.LinearSchedule(0.1, -1)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("totalBlocks");
    }
}
