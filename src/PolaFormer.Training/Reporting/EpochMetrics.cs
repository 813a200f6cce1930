using System.Globalization;
using PolaFormer.Checkpoints;

namespace PolaFormer.Training.Reporting;

/// <summary>One row of <c>metrics.csv</c>.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="TrainLoss">Mean training loss over the epoch.</param>
/// <param name="ValLoss">Validation loss (cross entropy against the true labels).</param>
/// <param name="ValTop1">Validation top-1 accuracy, %.</param>
/// <param name="ValTop5">Validation top-5 accuracy, %.</param>
/// <param name="Lr">Learning rate at the end of the epoch.</param>
/// <param name="Seconds">Wall-clock seconds of the epoch (training and validation).</param>
/// <param name="ImagesPerSecond">Training throughput.</param>
public sealed record EpochMetrics(int Epoch, double TrainLoss, double ValLoss, double ValTop1, double ValTop5, double Lr,
    double Seconds, double ImagesPerSecond);

/// <summary>Reads and writes <c>metrics.csv</c> (rewritten atomically after every epoch).</summary>
public static class MetricsCsv
{
    private const string Header = "epoch,train_loss,val_loss,val_top1,val_top5,lr,seconds,images_per_second";

    /// <summary>Writes every row, replacing the file atomically.</summary>
    public static void Write(string path, IEnumerable<EpochMetrics> rows)
    {
        var lines = new List<string> { Header };
        lines.AddRange(rows.Select(r => string.Join(',',
            r.Epoch.ToString(CultureInfo.InvariantCulture), F(r.TrainLoss), F(r.ValLoss), F(r.ValTop1), F(r.ValTop5),
            F(r.Lr), F(r.Seconds), F(r.ImagesPerSecond))));
        AtomicFile.Write(path, stream =>
        {
            using var writer = new StreamWriter(stream, leaveOpen: true);
            foreach (var line in lines) writer.WriteLine(line);
        });
    }

    /// <summary>Reads the rows of an existing file (none when it does not exist).</summary>
    public static List<EpochMetrics> Read(string path)
    {
        if (!File.Exists(path)) return [];
        var rows = new List<EpochMetrics>();
        foreach (var line in File.ReadLines(path).Skip(1))
        {
            var f = line.Split(',');
            if (f.Length < 8) continue;
            double D(int i) => double.Parse(f[i], CultureInfo.InvariantCulture);
            rows.Add(new EpochMetrics(int.Parse(f[0], CultureInfo.InvariantCulture), D(1), D(2), D(3), D(4), D(5), D(6), D(7)));
        }
        return rows;
    }

    private static string F(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
