using System.Diagnostics;
using System.Runtime.InteropServices;
using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using Xunit;

namespace PolaFormer.Tests.Distributed;

/// <summary>The training program's --dist-backend as a user meets it: wrong choices are one line and a non-zero exit.</summary>
[Collection(DistributedCollection.Name)]
public sealed class DistributedProgramTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-dist-cli-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static (int Exit, string Out, string Error) Run(IReadOnlyDictionary<string, string>? environment, params string[] args) =>
        TrainProgram.Run(environment, args);

    private static void ShouldFailWithOneLine((int Exit, string Out, string Error) result, string expected) =>
        TrainProgram.ShouldFailWithOneLine(result, expected);

    [Fact]
    public void Nccl_without_the_library_says_what_to_install()
    {
        if (NativeLibrary.TryLoad("libnccl.so.2", out _)) return; // a machine with NCCL fails later, on CUDA (see ProcessGroupTests)
        var environment = new Dictionary<string, string> { ["RANK"] = "0", ["WORLD_SIZE"] = "2", ["MASTER_ADDR"] = "127.0.0.1", ["MASTER_PORT"] = "29999" };
        ShouldFailWithOneLine(Run(environment, "train", "--dist-backend", "nccl", "--device", "cuda", "--output", Path.Combine(_root, "out")),
            "error: The nccl backend needs NVIDIA's NCCL library (libnccl.so.2 or libnccl.so), which was not found*--dist-backend mpi*");
    }

    [Fact]
    public void Launched_as_several_ranks_without_a_backend_or_with_an_unknown_one()
    {
        var environment = new Dictionary<string, string> { ["RANK"] = "1", ["WORLD_SIZE"] = "2" };
        ShouldFailWithOneLine(Run(environment, "train", "--output", Path.Combine(_root, "out")),
            "error: This process was launched as rank 1 of 2 (torchrun variables) but no distributed backend was chosen*");
        ShouldFailWithOneLine(Run(null, "train", "--dist-backend", "gloo", "--output", Path.Combine(_root, "out")),
            "error: --dist-backend is 'gloo'; expected none, mpi*or nccl*");
        ShouldFailWithOneLine(Run(null, "train", "--dist-timeout", "0", "--output", Path.Combine(_root, "out")),
            "error: --dist-timeout is 0; expected a positive number of seconds*");
    }

    [Fact]
    public void Help_lists_the_distributed_options()
    {
        var (exit, output, _) = Run(null, "train", "--help");
        exit.Should().Be(0);
        output.Should().Contain("--dist-backend").And.Contain("[default: none]").And.Contain("--dist-timeout").And.Contain("[default: 600]");
    }
}
