using System.Globalization;

namespace PolaFormer.Training.Checkpointing;

/// <summary>
/// The checkpoints of one run in its output folder: <c>epoch-NNNN[-step-SSSSSS].ckpt</c> (the newest
/// <see cref="Keep"/> are kept), <c>best.ckpt</c>, and the newest one that verifies for resuming.
/// </summary>
public sealed class CheckpointFolder
{
    /// <summary>Uses <paramref name="folder"/> (created when missing).</summary>
    public CheckpointFolder(string folder, int keep = 2)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (keep < 1) throw new ArgumentOutOfRangeException(nameof(keep), keep, "keep must be at least 1.");
        Folder = Path.GetFullPath(folder);
        Keep = keep;
        Directory.CreateDirectory(Folder);
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

    /// <summary>Deletes periodic checkpoints beyond the newest <see cref="Keep"/>.</summary>
    public void Prune()
    {
        foreach (var old in Periodic().Skip(Keep)) File.Delete(old);
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
