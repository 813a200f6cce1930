namespace PolaFormer.Training.Data;

/// <summary>Settings of a <see cref="BatchLoader"/>. The defaults suit training; evaluation wants
/// <c>Shuffle = false, DropLast = false</c>.</summary>
public sealed record BatchLoaderOptions
{
    /// <summary>Samples per batch.</summary>
    public int BatchSize { get; init; } = 128;

    /// <summary>Whether each epoch visits the samples in a random order (a permutation drawn from (seed, epoch)).</summary>
    public bool Shuffle { get; init; } = true;

    /// <summary>Whether a last, incomplete batch is dropped (the official training loader drops it, the evaluation
    /// loader keeps it).</summary>
    public bool DropLast { get; init; } = true;

    /// <summary>Worker threads that decode and augment; default: all cores but one (the consumer's).</summary>
    public int Workers { get; init; } = Math.Max(1, Environment.ProcessorCount - 1);

    /// <summary>Ready batches each worker may queue ahead of the consumer (memory: Workers × (this + 1) batches of
    /// B × 3 × size² floats, e.g. 77 MB each at 128 × 224²).</summary>
    public int PrefetchPerWorker { get; init; } = 2;

    /// <summary>Seed of the shuffling and of every sample's augmentation.</summary>
    public long Seed { get; init; }

    internal void Validate()
    {
        if (BatchSize <= 0) throw new ArgumentException($"BatchLoaderOptions.BatchSize = {BatchSize}; it must be positive.");
        if (Workers <= 0) throw new ArgumentException($"BatchLoaderOptions.Workers = {Workers}; it must be at least 1.");
        if (PrefetchPerWorker <= 0) throw new ArgumentException($"BatchLoaderOptions.PrefetchPerWorker = {PrefetchPerWorker}; it must be at least 1.");
    }
}
