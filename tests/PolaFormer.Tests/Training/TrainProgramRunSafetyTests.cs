using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training.Checkpointing;
using PolaFormer.Training.Reporting;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training;

/// <summary>The training program as schedulers and users treat it: stopped by SIGTERM, pointed at bad output
/// folders, given corrupt or diverged checkpoints. Each case ends in a resumable state or one line naming the path.</summary>
[Collection(ProcessWideMeasurements.Name)]
public sealed class TrainProgramRunSafetyTests : TorchTest, IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-cli-safety-").FullName;
    private readonly ITestOutputHelper _output;

    public TrainProgramRunSafetyTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        // chmod 555 folders (UnwritableFolder, when not root) must be writable again to be deleted.
        if (!OperatingSystem.IsWindows())
            foreach (var folder in Directory.EnumerateDirectories(_root, "*", SearchOption.AllDirectories))
                File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Directory.Delete(_root, recursive: true);
    }

    /// <summary>A PFDIGITS file of <paramref name="count"/> random 28 × 28 digits, the last 40 for validation.</summary>
    private string Digits(int count)
    {
        var path = Path.Combine(_root, "digits.bin.gz");
        var random = new Random(3);
        var header = new byte[28];
        Encoding.ASCII.GetBytes("PFDIGITS").CopyTo(header, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), (uint)count);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(16), 28);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(20), 28);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(24), (uint)(count - 40));
        var labels = Enumerable.Range(0, count).Select(i => (byte)(i % 10)).ToArray();
        var pixels = new byte[count * 28 * 28];
        random.NextBytes(pixels);
        using var file = File.Create(path);
        using var gzip = new GZipStream(file, CompressionLevel.Fastest);
        gzip.Write(header);
        gzip.Write(labels);
        gzip.Write(pixels);
        return path;
    }

    private string[] TrainArgs(string data, string output) =>
        ["train", "--data", data, "--output", output, "--epochs", "1", "--batch-size", "8", "--workers", "1", "--threads", "1", "--checkpoint-every", "25", "--warmup-epochs", "0.5", "--lr", "8e-3"];

    [Fact]
    public void Sigterm_leaves_a_resumable_checkpoint_of_the_current_step_and_the_same_command_finishes_the_run()
    {
        var data = Digits(640);   // 75 steps of 8: the resumed run stays short on a busy 2-core machine
        var output = Path.Combine(_root, "run");
        var (process, stdout, stderr) = TrainProgram.Start(TrainArgs(data, output));
        using (process)
        {
            WaitFor(() => File.Exists(Path.Combine(output, "epoch-0000-step-000025.ckpt")), process, stderr, "the checkpoint of step 25");
            TrainProgram.Signal(process, "TERM");
            process.WaitForExit(120_000).Should().BeTrue("SIGTERM must stop the run at the next step");
            process.WaitForExit();
            _output.WriteLine(stdout + "\n" + stderr);
            process.ExitCode.Should().Be(130);
        }
        var folder = new CheckpointFolder(output);
        var (path, state) = folder.FindResumable()!.Value;
        state.Epoch.Should().Be(0);
        state.StepInEpoch.Should().BeInRange(26, 74, "a checkpoint of the step the signal arrived in, not the periodic one");
        stdout.ToString().Should().Contain($"stopped at epoch 1, step {state.StepInEpoch}; checkpoint written");
        stderr.ToString().Should().Contain("SIGTERM: stopping after this step");

        var (exit, resumedOut, error) = TrainProgram.Run(null, TrainArgs(data, output));
        _output.WriteLine(resumedOut + "\n" + error);
        exit.Should().Be(0, error);
        resumedOut.Should().Contain($"resumed from {Path.GetFileName(path)}: epoch 1, step {state.StepInEpoch}");
        MetricsCsv.Read(Path.Combine(output, "metrics.csv")).Should().ContainSingle().Which.Epoch.Should().Be(1);
        File.Exists(Path.Combine(output, "model.safetensors")).Should().BeTrue();
    }

    [SignalFact("INT")]
    public void A_second_signal_aborts_at_once()
    {
        var data = Digits(1640);
        var output = Path.Combine(_root, "run");
        var (process, stdout, stderr) = TrainProgram.Start(TrainArgs(data, output));
        using (process)
        {
            WaitFor(() => File.Exists(Path.Combine(output, "epoch-0000-step-000025.ckpt")), process, stderr, "the checkpoint of step 25");
            TrainProgram.Signal(process, "INT");
            WaitFor(() => stderr.ToString().Contains("SIGINT: stopping"), process, stderr, "the first signal's message");
            var clock = Stopwatch.StartNew();
            TrainProgram.Signal(process, "INT");
            process.WaitForExit(30_000).Should().BeTrue("a second signal aborts");
            process.WaitForExit();
            _output.WriteLine(stdout + "\n" + stderr + $"\nexit after {clock.Elapsed.TotalSeconds:0.0} s");
            process.ExitCode.Should().Be(130);
            stderr.ToString().Should().Contain("SIGINT again: aborted");
        }
        new CheckpointFolder(output).FindResumable().Should().NotBeNull("the checkpoints written before stay");
    }

    private static void WaitFor(Func<bool> condition, Process process, StringBuilder stderr, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (process.HasExited) throw new InvalidOperationException($"the program exited ({process.ExitCode}) before {what}: {stderr}");
            if (clock.Elapsed > TimeSpan.FromSeconds(120)) throw new TimeoutException($"no {what} after 120 s: {stderr}");
            Thread.Sleep(50);
        }
    }

    [Fact]
    public void An_output_that_is_a_file_or_not_writable_fails_before_training_with_one_line()
    {
        var file = Path.Combine(_root, "a-file");
        File.WriteAllText(file, "x");
        TrainProgram.ShouldFailWithOneLine(TrainProgram.Run(null, "train", "--output", file), $"error: --output '{file}' is a file; expected a folder*");

        var (folder, how) = RunSafetyTests.UnwritableFolder(_root);
        _output.WriteLine($"unwritable folder: {folder} ({how})");
        var clock = Stopwatch.StartNew();
        TrainProgram.ShouldFailWithOneLine(TrainProgram.Run(null, "train", "--output", folder), $"error: --output '{folder}' is not writable*");
        clock.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(100), "it fails before the first epoch");
    }

    [Fact]
    public void A_corrupt_ckpt_is_named_in_eval_and_resume()
    {
        var corrupt = Path.Combine(_root, "broken.ckpt");
        File.WriteAllBytes(corrupt, Enumerable.Repeat((byte)7, 1000).ToArray());
        TrainProgram.ShouldFailWithOneLine(TrainProgram.Run(null, "eval", "--checkpoint", corrupt), $"error: Checkpoint '{corrupt}' is corrupted or incomplete*");
        TrainProgram.ShouldFailWithOneLine(TrainProgram.Run(null, "train", "--resume", corrupt, "--output", Path.Combine(_root, "out")),
            $"error: Checkpoint '{corrupt}' is corrupted or incomplete*");
    }

    [Fact]
    public void Eval_of_nan_weights_fails_with_the_tensor_named()
    {
        var path = Path.Combine(_root, "nan.safetensors");
        using (var model = ModelRegistry.Create("pola_pvt_tiny", numClasses: 10, imageSize: (32, 32)))
        using (no_grad())
        {
            model.state_dict()["head.weight"][0, 0].fill_(double.NaN);
            Checkpoint.Save(model, path, new Dictionary<string, string> { ["model"] = "pola_pvt_tiny" });
        }
        TrainProgram.ShouldFailWithOneLine(TrainProgram.Run(null, "eval", "--checkpoint", path),
            $"error: Checkpoint '{path}' holds 1 non-finite value(s) (NaN or ±infinity) in 'head.weight'*");
    }
}
