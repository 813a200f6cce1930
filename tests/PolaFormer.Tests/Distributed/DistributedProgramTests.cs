using System.Diagnostics;
using System.Runtime.InteropServices;
using FluentAssertions;
using Xunit;

namespace PolaFormer.Tests.Distributed;

/// <summary>The training program's --dist-backend as a user meets it: wrong choices are one line and a non-zero exit.</summary>
[Collection(DistributedCollection.Name)]
public sealed class DistributedProgramTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-dist-cli-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static (int Exit, string Out, string Error) Run(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = here.Name, configuration = here.Parent!.Name;
        var repo = here.Parent!.Parent!.Parent!.Parent!.Parent!;
        var program = Path.Combine(repo.FullName, "samples", "PolaFormer.Train", "bin", configuration, tfm, "polaformer-train.dll");
        File.Exists(program).Should().BeTrue($"the sample program must be built ({program}); `dotnet test PolaFormer.sln` builds it");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(program);
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var name in new[] { "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT" }) start.Environment.Remove(name);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        process.WaitForExit(120_000).Should().BeTrue("the program must finish");
        return (process.ExitCode, output.Result, error.Result);
    }

    private static void ShouldFailWithOneLine((int Exit, string Out, string Error) result, string expected)
    {
        result.Exit.Should().NotBe(0);
        var lines = result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().ContainSingle($"one line, not a stack trace: {result.Error}");
        lines[0].Should().StartWith("error: ").And.Match(expected);
    }

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
