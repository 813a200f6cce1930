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

    /// <summary>This process's rank in a data-parallel job: it reads its shard of each epoch's order (PyTorch's
    /// <c>DistributedSampler</c>: positions <c>Rank</c>, <c>Rank + WorldSize</c>, …).</summary>
    public int Rank { get; init; }

    /// <summary>Number of processes sharing each epoch (1: this loader reads everything).</summary>
    public int WorldSize { get; init; } = 1;

    /// <summary>With several processes: pad the order by repeating its start so every rank gets the same number of
    /// samples, as <c>DistributedSampler</c> does (training: every rank must run the same number of steps); false
    /// takes the unpadded order so each sample counts once (evaluation).</summary>
    public bool EvenShards { get; init; } = true;

    internal void Validate()
    {
        if (WorldSize <= 0) throw new ArgumentException($"BatchLoaderOptions.WorldSize = {WorldSize}; it must be at least 1.");
        if (Rank < 0 || Rank >= WorldSize) throw new ArgumentException($"BatchLoaderOptions.Rank = {Rank}; it must be in [0, {WorldSize}).");
        if (BatchSize <= 0) throw new ArgumentException($"BatchLoaderOptions.BatchSize = {BatchSize}; it must be positive.");
        if (Workers <= 0) throw new ArgumentException($"BatchLoaderOptions.Workers = {Workers}; it must be at least 1.");
        if (PrefetchPerWorker <= 0) throw new ArgumentException($"BatchLoaderOptions.PrefetchPerWorker = {PrefetchPerWorker}; it must be at least 1.");
    }
}
