using FluentAssertions;
using PolaFormer.Training;
using PolaFormer.Training.Reporting;
using Xunit;

namespace PolaFormer.Tests.Training;

/// <summary>Warmup clamping, the learning-rate description and the epoch axis of the plot.</summary>
public sealed class TrainingScheduleOptionsTests
{
    [Theory]
    [InlineData(300, 20, 20, null)]
    [InlineData(40, 20, 20, null)]
    [InlineData(30, 20, 15, "warmup 20 epochs > half the run of 30 epochs: clamped to 15 epochs")]
    [InlineData(1, 20, 0.5, "warmup 20 epochs > half the run of 1 epoch: clamped to 0.5 epoch")]
    [InlineData(3, 1, 1, null)]
    [InlineData(1, 1, 0.5, "warmup 1 epoch > half the run of 1 epoch: clamped to 0.5 epoch")]
    [InlineData(5, 0, 0, null)]
    public void Warmup_takes_at_most_half_the_run(int epochs, double warmup, double scheduled, string? message)
    {
        var options = new TrainingOptions { Epochs = epochs, WarmupEpochs = warmup };
        options.Validate();
        options.ScheduledWarmupEpochs().Should().Be(scheduled);
        options.DescribeWarmupClamp().Should().Be(message);
    }

    [Fact]
    public void Learning_rates_are_described_after_linear_scaling()
    {
        new TrainingOptions().DescribeLearningRates(8).Should().Be("lr 5e-4 per 512 images × 8/512 = 7.81e-6 (warmup from 7.81e-9, cosine to 7.81e-8)");
        new TrainingOptions().DescribeLearningRates(1024).Should().Be("lr 5e-4 per 512 images × 1024/512 = 1e-3 (warmup from 1e-6, cosine to 1e-5)");
        new TrainingOptions { LrReferenceBatch = 0, BaseLr = 1e-3 }.DescribeLearningRates(64).Should().Be("lr 1e-3 (no batch scaling) (warmup from 5e-7, cosine to 5e-6)");
    }

    [Fact]
    public void Errors_name_the_property_not_a_flag()
    {
        FluentActions.Invoking(() => new TrainingOptions { WarmupEpochs = -1 }.Validate()).Should().Throw<ArgumentException>()
            .WithMessage("TrainingOptions.WarmupEpochs is -1; expected 0 or more*").Which.ParamName.Should().Be("WarmupEpochs");
        FluentActions.Invoking(() => new TrainingOptions { BaseLr = 0 }.Validate()).Should().Throw<ArgumentException>()
            .WithMessage("TrainingOptions.BaseLr is 0; expected a positive number*").Which.Message.Should().NotContain("--");
    }

    [Theory]
    [InlineData(new double[] { 1 }, 0.5, 1.5, new[] { 1 })]
    [InlineData(new double[] { 1, 2 }, 1, 2, new[] { 1, 2 })]
    [InlineData(new double[] { 3 }, 2.5, 3.5, new[] { 3 })]
    [InlineData(new double[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22 }, 1, 22, new[] { 1, 4, 7, 10, 13, 16, 19, 22 })]
    public void Epoch_ticks_are_whole_epochs_within_the_run(double[] epochs, double min, double max, int[] ticks)
    {
        var axis = TrainingPlot.EpochAxis(epochs);
        axis.Min.Should().Be(min);
        axis.Max.Should().Be(max);
        axis.Ticks.Should().Equal(ticks);
    }

    [Theory]
    [InlineData(0.704, 0.704, 0.6, 0.85, new[] { 0.6, 0.65, 0.7, 0.75, 0.8, 0.85 })]
    [InlineData(50, 100, 40, 100, new double[] { 40, 60, 80, 100 })]
    [InlineData(0.1, 2.3, 0, 3, new double[] { 0, 1, 2, 3 })]
    [InlineData(0, 0, -0.1, 0.1, new[] { -0.1, -0.05, 0, 0.05, 0.1 })]
    public void Value_ticks_are_round_numbers_around_the_values(double low, double high, double min, double max, double[] ticks)
    {
        var axis = TrainingPlot.ValueAxis(low, high);
        axis.Min.Should().BeApproximately(min, 1e-12);
        axis.Max.Should().BeApproximately(max, 1e-12);
        axis.Ticks.Should().Equal(ticks, (a, b) => Math.Abs(a - b) < 1e-12);
    }
}
