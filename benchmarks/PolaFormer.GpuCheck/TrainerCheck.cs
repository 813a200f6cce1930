using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using PolaFormer.Training;
using PolaFormer.Training.Data;
using PolaFormer.Training.Reporting;

namespace PolaFormer.GpuCheck;

/// <summary>
/// <c>trainer [--model pola_pvt_tiny] [--epochs 2] [--dtypes float32,bfloat16] [--min-top1 90]</c>: the library's own
/// <see cref="Trainer"/> — the flat training state, the EMA, checkpoints, the data loader — on the bundled digits
/// with the digits recipe of the training program, on the device. PASS when every epoch's loss is finite and the last
/// test top-1 reaches <c>--min-top1</c>. Prints the trainer's own progress lines (images/s per epoch).
/// </summary>
internal static class TrainerCheck
{
    public static int Run(Context ctx)
    {
        var a = ctx.Args;
        string model = a.Text("model", "pola_pvt_tiny");
        int epochs = (int)a.Int("epochs", ctx.Quick ? 1 : 2);
        double minTop1 = a.Real("min-top1", ctx.Quick ? 0 : 90);
        var splits = Datasets.Open(null);
        if (ctx.Quick) splits = splits with { Train = new FirstImages(splits.Train, 512), Validation = new FirstImages(splits.Validation, 256) };
        int failures = 0;
        foreach (var dtype in a.List("dtypes", "float32,bfloat16"))
        {
            var options = new TrainingOptions
            {
                Model = model, Epochs = epochs, BatchSize = 64, BaseLr = 8e-3, WarmupEpochs = 0.5, Seed = 0,
                Workers = (int)a.Int("workers", 4), Device = ctx.Device, Dtype = TrainingOptions.ParseDtype(dtype), ModelEma = true,
            };
            string folder = Path.Combine(Path.GetTempPath(), $"polaformer-trainer-check-{dtype}-{Environment.ProcessId}");
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            try
            {
                var result = new Trainer(options, splits, folder, new ProgressReporter(Console.Out, live: false)).Run(autoResume: false);
                bool ok = result.Epochs.All(e => double.IsFinite(e.TrainLoss)) && result.FinalTop1 >= minTop1;
                if (!ok) failures++;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{(ok ? "PASS" : "FAIL")} trainer {model} {dtype} {ctx.DeviceName}: {epochs} epoch(s) of {splits.Train.Count} digits, batch 64, " +
                    $"top-1 {string.Join(" · ", result.Epochs.Select(e => e.ValTop1.ToString("0.00", CultureInfo.InvariantCulture)))} %, " +
                    $"train images/s {string.Join(" · ", result.Epochs.Select(e => e.ImagesPerSecond.ToString("0", CultureInfo.InvariantCulture)))} (min top-1 {minTop1})"));
            }
            finally
            {
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            }
        }
        return failures == 0 ? 0 : 1;
    }

    /// <summary>The first <c>count</c> images of a dataset (--quick: a dry run of the mode on a CPU).</summary>
    private sealed class FirstImages(IImageDataset inner, int count) : IImageDataset
    {
        public int Count { get; } = Math.Min(count, inner.Count);
        public IReadOnlyList<string> ClassNames => inner.ClassNames;
        public int Label(int index) => inner.Label(index);
        public bool TryLoadImage(int index, [NotNullWhen(true)] out RgbImage? image) => inner.TryLoadImage(index, out image);
        public string Source(int index) => inner.Source(index);
    }
}
