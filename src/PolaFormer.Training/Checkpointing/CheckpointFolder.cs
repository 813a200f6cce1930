using System.Globalization;

namespace PolaFormer.Training.Checkpointing;

/// <summary>
/// The checkpoints of one run in its output folder: <c>epoch-NNNN[-step-SSSSSS].ckpt</c> (the newest
/// <see cref="Keep"/> are kept), <c>best.ckpt</c>, and the newest one that verifies for resuming.
/// </summary>
public sealed class CheckpointFolder
{
    private readonly HashSet<string> _verified = new(StringComparer.Ordinal);

    /// <summary>Uses <paramref name="folder"/> (created when missing).</summary>
    /// <exception cref="IOException">The path is a file, a dangling symbolic link, or cannot be created as a folder;
    /// the message names the path.</exception>
    public CheckpointFolder(string folder, int keep = 2)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (keep < 1) throw new ArgumentOutOfRangeException(nameof(keep), keep, "keep must be at least 1.");
        Folder = Path.GetFullPath(folder);
        Keep = keep;
        CreateFolder(Folder);
    }

    private static void CreateFolder(string folder)
    {
        // Directory.CreateDirectory on a file or a dangling link throws a bare IOException that does not say which
        // part of the path is wrong; these are the mistakes users make with --output.
        // A dangling link counts as an existing file for File.Exists on Unix, so it is looked at first.
        var info = new FileInfo(folder);
        if (info.LinkTarget is not null && !Directory.Exists(folder) && !File.Exists(info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? folder))
            throw new IOException($"Output folder '{folder}' is a symbolic link to '{info.LinkTarget}', which does not exist; create the target folder or choose another output folder.");
        if (File.Exists(folder))
            throw new IOException($"Output folder '{folder}' is a file; expected a folder (existing, or one that can be created).");
        try
        {
            Directory.CreateDirectory(folder);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Output folder '{folder}' cannot be created as a folder ({e.Message}); pass a folder you can write to.", e);
        }
    }

    /// <summary>
    /// Checks, before any training, that the folder takes files and has room for one more checkpoint of about
    /// <paramref name="checkpointBytes"/> bytes, so a run does not fail only after its first epoch.
    /// </summary>
    /// <exception cref="IOException">The folder is not writable, or its file system has less free space than
    /// needed; the message names the folder and both sizes.</exception>
    public void CheckWritable(long checkpointBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(checkpointBytes);
        var probe = Path.Combine(Folder, $".write-probe.{Environment.ProcessId}.tmp");
        try
        {
            File.WriteAllBytes(probe, [1]);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Output folder '{Folder}' is not writable ({e.Message}); pass a folder you can write to.", e);
        }
        long free = FreeBytes();
        // An atomic write needs the new file beside the old one until the rename.
        if (free >= 0 && free < checkpointBytes)
            throw new IOException(string.Create(CultureInfo.InvariantCulture,
                $"Output folder '{Folder}' has {Megabytes(free)} free; a checkpoint needs about {Megabytes(checkpointBytes)}. Free space or choose another output folder."));
    }

    /// <summary>Free bytes on the folder's file system, or −1 when the system does not say.</summary>
    public long FreeBytes()
    {
        try
        {
            return new DriveInfo(Folder).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            return -1;
        }
    }

    internal static string Megabytes(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1e6:0.#} MB");

    /// <summary>
    /// Deletes temporary files that an interrupted write (kill -9, power loss) left behind: <c>.*.tmp</c> files of
    /// the atomic writer whose process is gone. Call it before this process writes into the folder. Returns the
    /// names removed.
    /// </summary>
    public IReadOnlyList<string> RemoveStaleTemporaryFiles()
    {
        var removed = new List<string>();
        foreach (var path in Directory.EnumerateFiles(Folder, ".*.tmp"))
        {
            // The writer puts its process id in the name (.<file>.<pid>.<guid>.tmp): another living process's file
            // is being written right now. This process has written nothing yet when a run starts, so a file with
            // its own id (a reused id after kill -9) is stale too.
            var parts = Path.GetFileName(path).Split('.');
            if (parts.Length >= 4 && int.TryParse(parts[^3], NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                && pid != Environment.ProcessId && IsAlive(pid))
                continue;
            try
            {
                File.Delete(path);
                removed.Add(Path.GetFileName(path));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Another process may be finishing it; it is removed on a later start.
            }
        }
        return removed;
    }

    private static bool IsAlive(int pid)
    {
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>The output folder.</summary>
    public string Folder { get; }

    /// <summary>How many periodic checkpoints are kept.</summary>
    public int Keep { get; }

    /// <summary>Path of the best checkpoint.</summary>
    public string BestPath => Path.Combine(Folder, "best.ckpt");

    /// <summary>Path for a checkpoint at (epoch, step in epoch); step 0 = the start of that epoch.</summary>
    public string PathFor(int epoch, int stepInEpoch) => Path.Combine(Folder, stepInEpoch == 0
        ? string.Create(CultureInfo.InvariantCulture, $"epoch-{epoch:D4}.ckpt")
        : string.Create(CultureInfo.InvariantCulture, $"epoch-{epoch:D4}-step-{stepInEpoch:D6}.ckpt"));

    /// <summary>Periodic checkpoints, newest first (by the position their names record).</summary>
    public IReadOnlyList<string> Periodic() => Directory.EnumerateFiles(Folder, "epoch-*.ckpt")
        .Select(p => (Path: p, Position: Position(Path.GetFileNameWithoutExtension(p))))
        .Where(x => x.Position is not null)
        .OrderByDescending(x => x.Position!.Value.Epoch).ThenByDescending(x => x.Position!.Value.Step)
        .Select(x => x.Path).ToList();

    /// <summary>(epoch, step) from "epoch-NNNN" or "epoch-NNNN-step-SSSSSS"; null for other names.</summary>
    private static (int Epoch, int Step)? Position(string name)
    {
        var parts = name.Split('-');
        if (parts.Length == 2 && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var epoch)) return (epoch, 0);
        if (parts.Length == 4 && parts[2] == "step"
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out epoch)
            && int.TryParse(parts[3], NumberStyles.None, CultureInfo.InvariantCulture, out var step)) return (epoch, step);
        return null;
    }

    /// <summary>
    /// Deletes periodic checkpoints beyond the newest <see cref="Keep"/> that verify. Files that do not verify are
    /// neither counted nor deleted when named newer than the newest good one (they may be another writer's, and a
    /// broken file named newer must not push the good ones out); older broken ones are deleted, since a good newer
    /// checkpoint replaces them. A folder without a checkpoint that verifies is left as it is.
    /// </summary>
    /// <param name="warn">Receives one line per broken checkpoint that is left in place.</param>
    public void Prune(Action<string>? warn = null)
    {
        int good = 0;
        foreach (var path in Periodic())
        {
            bool verified = Verifies(path);
            if (good == 0 && !verified)
            {
                warn?.Invoke($"{Path.GetFileName(path)} in '{Folder}' does not verify as a checkpoint; left in place, not counted among the {Keep} kept");
                continue;
            }
            if (verified && good < Keep)
            {
                good++;
                continue;
            }
            File.Delete(path);
            lock (_verified) _verified.Remove(path);
        }
    }

    /// <summary>Records that <paramref name="path"/> was just written and verified, so pruning need not read it again.</summary>
    internal void MarkVerified(string path)
    {
        lock (_verified) _verified.Add(Path.GetFullPath(path));
    }

    private bool Verifies(string path)
    {
        lock (_verified)
            if (_verified.Contains(path)) return true;
        try
        {
            TrainingCheckpoint.ReadState(path);
            MarkVerified(path);
            return true;
        }
        catch (InvalidDataException)
        {
            return false;
        }
    }

    /// <summary>
    /// The newest periodic checkpoint that verifies, or null. Bad ones are skipped, each reported through
    /// <paramref name="warn"/> with the reason, so a half-written or corrupted file falls back to the one before.
    /// </summary>
    public (string Path, TrainingState State)? FindResumable(Action<string>? warn = null)
    {
        foreach (var path in Periodic())
        {
            try
            {
                return (path, TrainingCheckpoint.ReadState(path));
            }
            catch (InvalidDataException e)
            {
                warn?.Invoke($"skipping {Path.GetFileName(path)}: {e.Message}");
            }
        }
        return null;
    }
}
