using System.Diagnostics;
using System.Text.RegularExpressions;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training.Reporting;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Distributed;

/// <summary>
/// Real multi-process jobs: three ranks of tests/PolaFormer.DistributedWorker under Open MPI's mpirun on loopback,
/// on the CPU, one job at a time (see <see cref="DistributedCollection"/>).
/// </summary>
[Collection(DistributedCollection.Name)]
public sealed class MpiJobTests : TorchTest, IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-mpi-").FullName;
    private readonly ITestOutputHelper _output;

    public MpiJobTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void Three_ranks_stay_identical_after_every_step_and_equal_one_process_on_the_concatenated_batches()
    {
        var folder = Path.Combine(_root, "ddp");
        const int Steps = 5;
        var job = Mpi.Run(3, TimeSpan.FromSeconds(120), "ddp", "--out", folder, "--steps", $"{Steps}", "--batch", "4", "--bucket-bytes", "1024");
        _output.WriteLine(job.ToString());
        job.Exit.Should().Be(0, job.ToString());

        var buckets = File.ReadAllLines(Path.Combine(folder, "buckets.txt"));
        buckets.Should().Equal(["fc2.bias,fc2.weight,norm.bias,norm.weight,fc1.bias", "fc1.weight"],
            "parameters are bucketed in reverse order, a bucket closing once it reaches 1024 bytes");

        var norms = File.ReadAllLines(Path.Combine(folder, "gradient-norms.txt")).Select(l => double.Parse(l, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        _output.WriteLine("averaged gradient norms: " + string.Join(", ", norms));
        norms.Should().HaveCount(Steps);
        norms.Where((n, i) => i % 2 == 0).Should().OnlyContain(n => n > 0.3, "odd steps clip at 0.3: clipping must act there, after the average");

        using var scope = NewDisposeScope();
        Dictionary<string, Tensor> Load(string name) => SafeTensors.Load(Path.Combine(folder, name + ".safetensors")).Tensors
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        Dictionary<string, Tensor>? previous = null;
        for (int step = 1; step <= Steps; step++)
        {
            var rank0 = Load($"rank0-step{step}");
            rank0.Keys.Should().BeEquivalentTo(["fc1.weight", "fc1.bias", "norm.weight", "norm.bias", "fc2.weight", "fc2.bias"]);
            foreach (var other in new[] { 1, 2 })
            {
                var weights = Load($"rank{other}-step{step}");
                foreach (var (name, tensor) in rank0)
                    weights[name].eq(tensor).all().item<bool>().Should().BeTrue($"rank {other}'s {name} must equal rank 0's bit for bit after step {step}");
            }
            var reference = Load($"reference-step{step}");
            foreach (var (name, tensor) in reference)
            {
                double error = Tolerance.ScaledError(rank0[name], tensor);
                _output.WriteLine($"step {step} {name}: scaled error vs one process {error:E2}");
                rank0[name].ShouldBeClose(tensor, 2e-6, $"step {step}: {name} of 3 ranks vs one process on the concatenated batch");
            }
            if (previous is not null)
                rank0["fc1.weight"].eq(previous["fc1.weight"]).all().item<bool>().Should().BeFalse("the weights must move every step");
            previous = rank0;
        }
    }

    [Fact]
    public void A_hung_rank_makes_the_others_abort_naming_their_rank_and_the_collective_within_the_timeout()
    {
        var job = Mpi.Run(3, TimeSpan.FromSeconds(90), "ddp", "--out", Path.Combine(_root, "hang"), "--steps", "4", "--batch", "4",
            "--timeout", "8", "--hang-rank", "2", "--hang-at-step", "2");
        _output.WriteLine(job.ToString());

        job.Exit.Should().Be(124, "the watchdog aborts the job with the timeout exit code");
        job.Error.Should().Contain("rank 2 hangs");
        job.Error.Should().MatchRegex(@"\[rank [01]/3\] rank [01] of 3 \(mpi\): all-reduce \(sum\) of 2 tensor\(s\), 651 values: 2 gradient bucket\(s\) did not complete within the timeout of 8 s");
        job.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(60), "the job ends soon after the 8 s timeout, not never");
    }

    [Fact]
    public void A_killed_rank_ends_the_job_and_the_same_world_size_resumes_from_the_last_checkpoint_to_the_uninterrupted_result()
    {
        string[] Train(string folder) => ["train", "--out", folder, "--epochs", "2", "--batch", "4", "--train-images", "96", "--val-images", "30", "--checkpoint-every", "2"];
        var straight = Path.Combine(_root, "straight");
        var uninterrupted = Mpi.Run(3, TimeSpan.FromSeconds(120), Train(straight));
        _output.WriteLine(uninterrupted.ToString());
        uninterrupted.Exit.Should().Be(0, uninterrupted.ToString());
        uninterrupted.Output.Should().Contain("epoch 2/2: train loss").And.Contain("worker: done, epochs 2");

        // 96 images over 3 ranks in batches of 4: 8 steps per epoch; rank 1 is killed (SIGKILL) after global step 11
        // (epoch 2, step 3), when the newest checkpoint is epoch 2, step 2.
        var broken = Path.Combine(_root, "broken");
        var killedAt = TimeSpan.Zero;
        var killed = Mpi.Run(3, TimeSpan.FromSeconds(120), [.. Train(broken), "--die-rank", "1", "--die-at-step", "11"], elapsed =>
        {
            var pidFile = Path.Combine(broken, "rank1.pid");
            if (!File.Exists(pidFile) || File.ReadAllText(pidFile) is not { Length: > 0 } pid) return false;
            Process.GetProcessById(int.Parse(pid, System.Globalization.CultureInfo.InvariantCulture)).Kill(); // SIGKILL
            killedAt = elapsed;
            return true;
        });
        _output.WriteLine(killed.ToString());
        killedAt.Should().BeGreaterThan(TimeSpan.Zero, "rank 1 reached step 11 and was killed");
        killed.Exit.Should().NotBe(0);
        (killed.Elapsed - killedAt).Should().BeLessThan(TimeSpan.FromSeconds(30), "the other ranks must not wait for the dead one");
        killed.Error.Should().MatchRegex(@"rank 1 .*(signal 9|Killed)|Process name:\s*\S*[,@]1\]\s*$", "mpirun names the rank that was killed");
        Directory.GetFiles(broken, "epoch-*.ckpt").Select(Path.GetFileName).Should().Contain("epoch-0001-step-000002.ckpt");
        File.Exists(Path.Combine(broken, "model.safetensors")).Should().BeFalse("the run did not finish");

        var resumed = Mpi.Run(3, TimeSpan.FromSeconds(120), Train(broken));
        _output.WriteLine(resumed.ToString());
        resumed.Exit.Should().Be(0, resumed.ToString());
        resumed.Output.Should().Contain("resumed from epoch-0001-step-000002.ckpt").And.Contain("worker: done, epochs 2");

        using var scope = NewDisposeScope();
        var expected = Checkpoint.ReadStateDict(Path.Combine(straight, "model.safetensors"));
        var actual = Checkpoint.ReadStateDict(Path.Combine(broken, "model.safetensors"));
        actual.Keys.Should().BeEquivalentTo(expected.Keys);
        foreach (var (name, tensor) in expected)
            actual[name].eq(tensor).all().item<bool>().Should().BeTrue($"{name} must be bit-identical to the uninterrupted run's");
        static IEnumerable<(int, double, double, double)> Figures(string folder) =>
            MetricsCsv.Read(Path.Combine(folder, "metrics.csv")).Select(m => (m.Epoch, m.TrainLoss, m.ValLoss, m.ValTop1));
        Figures(broken).Should().Equal(Figures(straight), "the resumed run reports the same losses and accuracy");
    }
}

/// <summary>Starts jobs of the distributed test worker under mpirun.</summary>
internal static class Mpi
{
    public sealed record Job(int Exit, string Output, string Error, TimeSpan Elapsed)
    {
        public override string ToString() => $"exit {Exit} after {Elapsed.TotalSeconds:0.0} s\n--- stdout\n{Output}\n--- stderr\n{Error}";
    }

    public static Job Run(int ranks, TimeSpan limit, params string[] args) => Run(ranks, limit, args, null);

    /// <summary>Runs a job; <paramref name="whileRunning"/> is polled with the elapsed time until it returns true.</summary>
    public static Job Run(int ranks, TimeSpan limit, string[] args, Func<TimeSpan, bool>? whileRunning)
    {
        var mpirun = FindOnPath("mpirun")
            ?? throw new InvalidOperationException("mpirun is not installed; run eng/prerequisites.sh (it installs Debian's openmpi-bin).");
        var start = new ProcessStartInfo(mpirun) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", $"{ranks}", "dotnet", WorkerPath() }.Concat(args))
            start.ArgumentList.Add(a);
        // A rank must not inherit a launcher's variables from the test process (e.g. when the suite itself runs under one).
        foreach (var name in new[] { "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT" }) start.Environment.Remove(name);
        // Containers often forbid the cross-process memory copy Open MPI's shared-memory transport uses for larger
        // messages; copying through the shared segment works everywhere (Open MPI 4 calls it vader, 5 sm).
        start.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        start.Environment["OMPI_MCA_btl_sm_single_copy_mechanism"] = "none";
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        while (whileRunning is not null && !process.HasExited && clock.Elapsed < limit)
        {
            if (whileRunning(clock.Elapsed)) break;
            Thread.Sleep(50);
        }
        if (!process.WaitForExit(limit - clock.Elapsed > TimeSpan.Zero ? limit - clock.Elapsed : TimeSpan.Zero))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"the mpirun job did not end within {limit.TotalSeconds} s:\n{output.Result}\n{error.Result}");
        }
        process.WaitForExit();
        return new Job(process.ExitCode, output.Result, Clean(error.Result), clock.Elapsed);
    }

    /// <summary>tests/PolaFormer.Tests/bin/&lt;Configuration&gt;/&lt;tfm&gt;/ → tests/PolaFormer.DistributedWorker/bin/… (built by
    /// the tests' project reference).</summary>
    public static string WorkerPath()
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = here.Name, configuration = here.Parent!.Name;
        var tests = here.Parent!.Parent!.Parent!.Parent!;
        var path = Path.Combine(tests.FullName, "PolaFormer.DistributedWorker", "bin", configuration, tfm, "polaformer-dist-worker.dll");
        File.Exists(path).Should().BeTrue($"the distributed worker must be built ({path}); building PolaFormer.Tests builds it");
        return path;
    }

    private static string? FindOnPath(string name) => (Environment.GetEnvironmentVariable("PATH") ?? "")
        .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
        .Select(dir => Path.Combine(dir, name)).FirstOrDefault(File.Exists);

    /// <summary>Drops terminal control sequences some runtimes print.</summary>
    private static string Clean(string text) => Regex.Replace(text, @"\x1b\[[0-9;?]*[A-Za-z=>]|\x1b[=>]", "");
}
