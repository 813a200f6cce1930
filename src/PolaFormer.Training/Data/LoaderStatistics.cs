namespace PolaFormer.Training.Data;

/// <summary>Throughput of one epoch of a <see cref="BatchLoader"/> so far.</summary>
/// <param name="Epoch">The epoch.</param>
/// <param name="Batches">Batches delivered.</param>
/// <param name="Images">Images delivered.</param>
/// <param name="Elapsed">Wall time since the epoch's workers started.</param>
/// <param name="ConsumerWait">Time the consumer spent blocked waiting for a batch: near zero when the workers keep
/// up with the model.</param>
/// <param name="Workers">Worker threads used.</param>
public sealed record LoaderStatistics(int Epoch, int Batches, long Images, TimeSpan Elapsed, TimeSpan ConsumerWait, int Workers)
{
    /// <summary>Images delivered per second of wall time.</summary>
    public double ImagesPerSecond => Elapsed > TimeSpan.Zero ? Images / Elapsed.TotalSeconds : 0;

    /// <summary>"epoch e: n images in t s (x img/s, waited w s)".</summary>
    public override string ToString() =>
        FormattableString.Invariant($"epoch {Epoch}: {Images} images in {Batches} batches, {Elapsed.TotalSeconds:0.0} s ({ImagesPerSecond:0} img/s with {Workers} workers), consumer waited {ConsumerWait.TotalSeconds:0.00} s");
}
