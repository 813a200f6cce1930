using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training;
using PolaFormer.Training.Checkpointing;
using PolaFormer.Training.Data;
using PolaFormer.Training.Reporting;
using Xunit;
using Xunit.Abstractions;

namespace PolaFormer.Tests.Training;

/// <summary>A run cannot be lost or mixed up with another: its folder is checked before training, pruning never
/// deletes the only good checkpoint, best.ckpt is replaced atomically, temporary files of killed runs go, and a folder
/// holding another run (or a finished one) is refused.</summary>
[Collection(ProcessWideMeasurements.Name)]
public sealed class RunSafetyTests : TorchTest, IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-safety-").FullName;
    private readonly ITestOutputHelper _output;

    public RunSafetyTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static TrainingOptions Options(int epochs) => TrainerTests.Options(epochs) with { ModelEma = false };

    private DatasetSplits Data()
    {
        var folder = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "data"), classes: 3, trainPerClass: 8, valPerClass: 4);
        return Datasets.Open(folder) with { Recipe = TrainingFixtures.SmallImageNetRecipe };
    }

    private Trainer Make(TrainingOptions options, DatasetSplits data, string run, StringWriter? log = null) =>
        new(options, data, Path.Combine(_root, run), new ProgressReporter(log ?? new StringWriter(), live: false), TrainingFixtures.TinyPvt);

    [Fact]
    public void Newer_named_broken_checkpoints_do_not_make_pruning_delete_the_good_ones()
    {
        var data = Data();
        var run = Path.Combine(_root, "run");
        Directory.CreateDirectory(run);
        // Junk named far ahead of the run: by name alone they are the "newest" and would push the real ones out.
        File.WriteAllText(Path.Combine(run, "epoch-0099.ckpt"), "not a checkpoint");
        File.WriteAllBytes(Path.Combine(run, "epoch-0098-step-000001.ckpt"), new byte[100]);

        var log = new StringWriter();
        Make(Options(epochs: 3) with { KeepCheckpoints = 1 }, data, "run", log).Run();

        var folder = new CheckpointFolder(run, keep: 1);
        folder.Periodic().Select(Path.GetFileName).Should().Equal("epoch-0099.ckpt", "epoch-0098-step-000001.ckpt", "epoch-0003.ckpt");
        TrainingCheckpoint.ReadState(Path.Combine(run, "epoch-0003.ckpt")).Epoch.Should().Be(3);
        folder.FindResumable()!.Value.Path.Should().EndWith("epoch-0003.ckpt");
        log.ToString().Should().Contain("epoch-0099.ckpt in '" + run + "' does not verify");
    }

    [Fact]
    public void Pruning_a_folder_without_any_good_checkpoint_deletes_nothing_and_keeps_the_newest_good_one()
    {
        var data = Data();
        var run = Path.Combine(_root, "run");
        Make(Options(epochs: 2) with { KeepCheckpoints = 2 }, data, "run").Run();
        File.WriteAllText(Path.Combine(run, "epoch-0007.ckpt"), "junk");
        var folder = new CheckpointFolder(run, keep: 1);
        folder.Prune();
        folder.Periodic().Select(Path.GetFileName).Should().Equal("epoch-0007.ckpt", "epoch-0002.ckpt");

        var broken = new CheckpointFolder(Path.Combine(_root, "broken"), keep: 1);
        File.WriteAllText(Path.Combine(broken.Folder, "epoch-0001.ckpt"), "junk");
        File.WriteAllText(Path.Combine(broken.Folder, "epoch-0002.ckpt"), "junk");
        broken.Prune();
        broken.Periodic().Should().HaveCount(2, "nothing can replace them, so nothing is deleted");
    }

    [Fact]
    public void Best_ckpt_is_replaced_by_rename_not_rewritten_in_place()
    {
        var data = Data();
        var run = Path.Combine(_root, "run");
        Directory.CreateDirectory(run);
        // best.ckpt as a second name of another file: a copy that truncates and rewrites best.ckpt in place writes
        // through to that file (and a full disk would leave both truncated); an atomic replace only swaps the name.
        var other = Path.Combine(_root, "other.bin");
        File.WriteAllText(other, "the previous best");
        HardLink(other, Path.Combine(run, "best.ckpt"));

        Make(Options(epochs: 1), data, "run").Run();

        File.ReadAllText(other).Should().Be("the previous best");
        TrainingCheckpoint.ReadState(Path.Combine(run, "best.ckpt")).Epoch.Should().Be(1);
        Directory.EnumerateFiles(run, "*.tmp").Should().BeEmpty();
    }

    private static void HardLink(string existing, string link)
    {
        using var ln = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("ln", [existing, link]) { RedirectStandardError = true })!;
        ln.WaitForExit();
        ln.ExitCode.Should().Be(0, ln.StandardError.ReadToEnd());
    }

    [Fact]
    public void Temporary_files_of_a_killed_run_are_removed_at_start_but_not_those_of_a_living_writer()
    {
        var run = Path.Combine(_root, "run");
        Directory.CreateDirectory(run);
        int gone = DeadProcessId();
        var stale = Path.Combine(run, $".epoch-0001.ckpt.{gone}.0123456789abcdef0123456789abcdef.tmp");
        File.WriteAllBytes(stale, new byte[1 << 20]);
        var living = Path.Combine(run, $".metrics.csv.1.0123456789abcdef0123456789abcdef.tmp");   // pid 1 always runs
        File.WriteAllText(living, "in progress");

        var log = new StringWriter();
        Make(Options(epochs: 1), Data(), "run", log).Run();

        File.Exists(stale).Should().BeFalse();
        File.Exists(living).Should().BeTrue();
        log.ToString().Should().Contain($"removed 1 temporary file(s)").And.Contain(Path.GetFileName(stale));
    }

    private static int DeadProcessId()
    {
        for (int pid = 3_999_999; ; pid--)
        {
            try
            {
                using var _ = System.Diagnostics.Process.GetProcessById(pid);
            }
            catch (ArgumentException)
            {
                return pid;
            }
        }
    }

    [Fact]
    public void A_folder_holding_another_run_is_refused_with_the_differences_named_unless_told_to_continue()
    {
        var data = Data();
        using var stop = new CancellationTokenSource();
        var first = Make(Options(epochs: 2), data, "run");
        first.StepCompleted += step => { if (step == 2) stop.Cancel(); };
        FluentActions.Invoking(() => first.Run(cancellationToken: stop.Token)).Should().Throw<OperationCanceledException>();

        var run = Path.Combine(_root, "run");
        FluentActions.Invoking(() => Make(Options(epochs: 2) with { Seed = 8, WeightDecay = 0.1 }, data, "run").Run())
            .Should().Throw<ArgumentException>()
            .WithMessage($"Checkpoint '{Path.Combine(run, "epoch-0000-step-000002.ckpt")}' belongs to another run (WeightDecay 0.05 → 0.1; Seed 7 → 8); use another output folder*TrainingOptions.ContinueRun*");

        var otherData = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "data2"), classes: 2, trainPerClass: 12, valPerClass: 4);
        FluentActions.Invoking(() => Make(Options(epochs: 2), Datasets.Open(otherData) with { Recipe = TrainingFixtures.SmallImageNetRecipe }, "run").Run())
            .Should().Throw<ArgumentException>()
            .WithMessage("*another run (data: 24 train / 12 validation images, 32 px, classes class0,class1,class2 → 24 train / 8 validation images, 32 px, classes class0,class1)*");

        // Where and how fast it runs is not part of the run.
        var log = new StringWriter();
        var result = Make(Options(epochs: 2) with { Workers = 1, CheckpointEverySteps = 3 }, data, "run", log).Run();
        Path.GetFileName(result.ResumedFrom).Should().Be("epoch-0000-step-000002.ckpt");
        result.Epochs.Should().HaveCount(2);
        _output.WriteLine(log.ToString());
    }

    [Fact]
    public void A_finished_run_is_not_silently_continued_and_continues_with_more_epochs_when_asked()
    {
        var data = Data();
        Make(Options(epochs: 1), data, "run").Run();
        var run = Path.Combine(_root, "run");

        FluentActions.Invoking(() => Make(Options(epochs: 1), data, "run").Run()).Should().Throw<ArgumentException>()
            .WithMessage($"Checkpoint '{Path.Combine(run, "epoch-0001.ckpt")}' ends a finished run (1 of 1 epochs)*TrainingOptions.ContinueRun with a larger TrainingOptions.Epochs*");
        FluentActions.Invoking(() => Make(Options(epochs: 2), data, "run").Run()).Should().Throw<ArgumentException>()
            .WithMessage("*belongs to another run (Epochs 1 → 2)*");

        var log = new StringWriter();
        var result = Make(Options(epochs: 2) with { ContinueRun = true }, data, "run", log).Run();
        Path.GetFileName(result.ResumedFrom).Should().Be("epoch-0001.ckpt");
        result.Epochs.Select(e => e.Epoch).Should().Equal(1, 2);
        log.ToString().Should().Contain("warning: continuing epoch-0001.ckpt with other settings: Epochs 1 → 2");
    }

    [Fact]
    public void Changing_the_batch_size_on_resume_is_refused_naming_both_sizes()
    {
        var data = Data();
        using var stop = new CancellationTokenSource();
        var first = Make(Options(epochs: 2), data, "run");
        first.StepCompleted += step => { if (step == 4) stop.Cancel(); };
        FluentActions.Invoking(() => first.Run(cancellationToken: stop.Token)).Should().Throw<OperationCanceledException>();

        var checkpoint = Path.Combine(_root, "run", "epoch-0000-step-000004.ckpt");
        foreach (bool explicitResume in new[] { false, true })
            FluentActions.Invoking(() => Make(Options(epochs: 2) with { BatchSize = 8, ContinueRun = true }, data, "run").Run(explicitResume ? checkpoint : null))
                .Should().Throw<ArgumentException>()
                .WithMessage($"Checkpoint '{checkpoint}' was written with TrainingOptions.BatchSize 4; this run asks for TrainingOptions.BatchSize 8.*resume with TrainingOptions.BatchSize 4*");
    }

    [Fact]
    public void A_full_disk_is_recognised_and_reported_with_the_size_needed_and_the_checkpoint_kept()
    {
        // Needs no privileges: /dev/full fails every write with ENOSPC, the error the atomic writer passes up when the
        // disk is full. The test after this one fills a real file system where the tests may mount one.
        File.Exists("/dev/full").Should().BeTrue("Linux provides /dev/full");
        var real = FluentActions.Invoking(() =>
        {
            using var full = new FileStream("/dev/full", FileMode.Open, FileAccess.Write);
            full.Write(new byte[4096]);
            full.Flush();
        }).Should().Throw<IOException>().Which;
        Trainer.IsDiskFull(real).Should().BeTrue(real.Message);
        Trainer.IsDiskFull(new IOException("No space left on device", 28)).Should().BeTrue();
        Trainer.IsDiskFull(new IOException("Disk quota exceeded", 122)).Should().BeTrue();
        Trainer.IsDiskFull(new IOException("Input/output error", 5)).Should().BeFalse();

        Make(Options(epochs: 1), Data(), "run").Run();
        var folder = new CheckpointFolder(Path.Combine(_root, "run"));
        var error = Trainer.DiskFull(new IOException("No space left on device", 28), folder, folder.PathFor(1, 3), 123_400_000);
        error.Message.Should().Match($"The file system of '{folder.Folder}' is full: checkpoint epoch-0001-step-000003.ckpt needs about 123.4 MB, * MB free; the previous checkpoint epoch-0001.ckpt is intact. Free space and run the same command to continue from it.");
        error.InnerException!.Message.Should().Be("No space left on device");
    }

    [MountFact]
    public void On_a_real_full_file_system_the_run_stops_naming_the_space_keeps_its_checkpoint_and_resumes_to_the_uninterrupted_result()
    {
        var data = Data();
        var uninterrupted = Make(Options(epochs: 2), data, "straight").Run();

        // Room for the run's checkpoints, filled to the last byte once epoch 2 has begun: its checkpoint cannot be written.
        using var disk = SmallFileSystem.Mount(Path.Combine(_root, "full"), 16L << 20);
        var first = Make(Options(epochs: 2), data, "full");
        first.StepCompleted += step => { if (step == 7) disk.Fill(); };   // 6 steps per epoch
        var error = FluentActions.Invoking(() => first.Run()).Should().Throw<IOException>().Which;
        _output.WriteLine(error.Message);
        error.Message.Should().Match($"The file system of '{disk.Folder}' is full: checkpoint epoch-0002.ckpt needs about * MB, * MB free; "
            + "the previous checkpoint epoch-0001.ckpt is intact. Free space and run the same command to continue from it.");
        Directory.EnumerateFiles(disk.Folder, "*.tmp*").Should().BeEmpty("the failed write removes its temporary file");
        TrainingCheckpoint.ReadState(Path.Combine(disk.Folder, "epoch-0001.ckpt")).Epoch.Should().Be(1);

        disk.Free();
        var resumed = Make(Options(epochs: 2), data, "full").Run();
        resumed.ResumedFrom.Should().EndWith("epoch-0001.ckpt");
        using var scope = TorchSharp.torch.NewDisposeScope();
        var expected = PolaFormer.Checkpoints.Checkpoint.ReadStateDict(uninterrupted.WeightsPath);
        var actual = PolaFormer.Checkpoints.Checkpoint.ReadStateDict(resumed.WeightsPath);
        actual.Keys.Should().BeEquivalentTo(expected.Keys);
        foreach (var (name, tensor) in expected)
            actual[name].eq(tensor).all().item<bool>().Should().BeTrue($"{name} must be bit-identical to the uninterrupted run's");
    }

    [Fact]
    public void An_output_that_is_a_file_or_a_dangling_link_or_not_writable_or_too_small_is_refused_naming_the_path()
    {
        var file = Path.Combine(_root, "file");
        File.WriteAllText(file, "x");
        FluentActions.Invoking(() => new CheckpointFolder(file)).Should().Throw<IOException>().WithMessage($"Output folder '{file}' is a file; expected a folder*");

        var dangling = Path.Combine(_root, "dangling");
        File.CreateSymbolicLink(dangling, Path.Combine(_root, "missing-target"));
        FluentActions.Invoking(() => new CheckpointFolder(dangling)).Should().Throw<IOException>()
            .WithMessage($"Output folder '{dangling}' is a symbolic link to '{Path.Combine(_root, "missing-target")}', which does not exist*");

        var ok = new CheckpointFolder(Path.Combine(_root, "ok"));
        long free = ok.FreeBytes();
        free.Should().BePositive();
        ok.CheckWritable(1 << 20);
        FluentActions.Invoking(() => ok.CheckWritable(free * 4)).Should().Throw<IOException>()
            .WithMessage($"Output folder '{ok.Folder}' has * MB free; a checkpoint needs about * MB*");
        Directory.EnumerateFileSystemEntries(ok.Folder).Should().BeEmpty("the probe file is removed");

        var (folder, how) = UnwritableFolder(_root);
        _output.WriteLine($"unwritable folder: {folder} ({how})");
        FluentActions.Invoking(() => new CheckpointFolder(folder).CheckWritable(1)).Should().Throw<IOException>()
            .WithMessage($"Output folder '{folder}' is not writable (*); pass a folder you can write to.");
    }

    /// <summary>A folder this process cannot write into: chmod 555 works for ordinary users; root ignores the mode,
    /// so for root a kernel folder (/sys/kernel: refuses new files even to root) stands in.</summary>
    internal static (string Folder, string How) UnwritableFolder(string root)
    {
        var folder = Path.Combine(root, "read-only");
        Directory.CreateDirectory(folder);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            if (!CanWrite(folder)) return (folder, "chmod 555");
            File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        const string kernel = "/sys/kernel";
        Directory.Exists(kernel).Should().BeTrue("running as root, chmod does not stop writes; /sys/kernel must exist to stand in");
        CanWrite(kernel).Should().BeFalse("/sys/kernel refuses new files even to root");
        return (kernel, "root: chmod ineffective, /sys/kernel used");
    }

    private static bool CanWrite(string folder)
    {
        var probe = Path.Combine(folder, ".can-write-probe");
        try
        {
            File.WriteAllText(probe, "x");
            File.Delete(probe);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
