using System.Diagnostics;
using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;

namespace PolaFormer.Tests.Training;

/// <summary>Tests that measure the whole process (resident memory) or depend on process-wide state (LibTorch's global
/// random generator, which a run checkpoints and restores; the thread count; oneDNN), so nothing else may run beside
/// them.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideMeasurements
{
    public const string Name = "process-wide measurements";
}

[Collection(ProcessWideMeasurements.Name)]
public sealed class LeakTests : TorchTest, IDisposable
{
    private readonly TrainerTests _fixture;
    private readonly ITestOutputHelper _output;

    public LeakTests(ITestOutputHelper output)
    {
        _output = output;
        _fixture = new TrainerTests(output);
    }

    public void Dispose() => _fixture.Dispose();

    [Fact]
    public void Live_tensors_and_memory_stay_flat_over_hundreds_of_steps()
    {
        var data = _fixture.Data(trainPerClass: 200, valPerClass: 4);   // 150 steps per epoch
        var trainer = _fixture.Make(TrainerTests.Options(epochs: 2) with { ModelEma = false }, data, "leak");
        var samples = new List<(long Step, long Live, long Rss)>();
        trainer.StepCompleted += step =>
        {
            if (step is 50 or 100 or 200 or 300)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                samples.Add((step, DisposeScopeManager.Statistics.ThreadTotalLiveCount, Process.GetCurrentProcess().WorkingSet64));
            }
        };
        trainer.Run();
        foreach (var s in samples) _output.WriteLine($"step {s.Step}: live tensors {s.Live}, RSS {s.Rss / 1048576.0:0.0} MiB");
        samples.Should().HaveCount(4);
        (samples[^1].Live - samples[0].Live).Should().BeLessThanOrEqualTo(0, "no tensor may survive a step");
        (samples[^1].Rss - samples[0].Rss).Should().BeLessThan(64L << 20, "resident memory must not grow with the steps");
    }

}
