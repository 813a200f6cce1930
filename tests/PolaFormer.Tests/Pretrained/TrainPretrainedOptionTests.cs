using FluentAssertions;
using PolaFormer.Pretrained;
using PolaFormer.Tests.Infrastructure;
using Xunit;

namespace PolaFormer.Tests.Pretrained;

/// <summary>The training program's <c>--pretrained</c>: weights it cannot find end the run at once with one line.</summary>
public sealed class TrainPretrainedOptionTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("polaformer-train-pretrained-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void Train_with_unknown_or_unconfirmed_pretrained_weights_fails_with_one_line_before_training()
    {
        var environment = new Dictionary<string, string> { [PretrainedWeights.CacheFolderVariable] = Path.Combine(_folder, "cache") };

        var (exit, output, error) = TrainProgram.Run(environment, "train", "--pretrained", "no_such_weights", "--epochs", "1",
            "--output", Path.Combine(_folder, "run"));

        exit.Should().Be(2, $"a wrong --pretrained is a usage error (stdout: {output}, stderr: {error})");
        error.Should().Contain("error: 'no_such_weights' is not a model with released weights");
        output.Should().NotContain("top-1:", "no training happened");

        var unconfirmed = PretrainedConfigs.All.First(c => c.Source is null).ModelName;
        (exit, _, error) = TrainProgram.Run(environment, "train", "--pretrained", unconfirmed, "--epochs", "1",
            "--output", Path.Combine(_folder, "run"));

        exit.Should().Be(2);
        error.Should().Contain(PretrainedConfigs.HubFolder);
    }
}
