using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Training.Data;

/// <summary>
/// Decodes and augments on worker threads ahead of the model and hands over batches in order.
/// <para>Determinism: the epoch's order is a permutation drawn from (seed, epoch); batch <c>b</c> holds positions
/// [b·B, (b+1)·B) of it; sample <c>i</c>'s augmentation draws from a generator keyed by (seed, epoch, i). So batch
/// <c>b</c> of epoch <c>e</c> is bit-identical whatever the worker count or thread timing. With
/// <see cref="BatchLoaderOptions.WorldSize"/> W &gt; 1 the order is the same on every rank and rank r keeps positions
/// r, r + W, r + 2W, … (padded to a multiple of W), so batch b of all ranks together is positions [b·B·W, (b+1)·B·W)
/// of the order: the batch one process with batch size B·W would read.</para>
/// <para>Prefetching: worker <c>w</c> builds batches w, w + W, w + 2W, … into its own bounded queue
/// (<see cref="BatchLoaderOptions.PrefetchPerWorker"/> deep), and the consumer reads batch b from queue b mod W, so
/// batches arrive in order with no reordering buffer and at most W × (depth + 1) batches in memory.</para>
/// <para>Workers write each batch straight into a native tensor (no managed copy); the consumer's thread takes a
/// new reference to it (<c>alias</c>), which lands in the consumer's dispose scope. An exception in a worker (e.g. an
/// image too small) is rethrown by the consumer, with its original type and message, when it reaches that batch.
/// Leaving the <c>foreach</c> early (or cancelling) stops the workers and frees every queued batch.</para>
/// </summary>
public sealed class BatchLoader
{
    /// <summary>A loader over <paramref name="dataset"/> through <paramref name="pipeline"/>.</summary>
    public BatchLoader(IImageDataset dataset, ImagePipeline pipeline, BatchLoaderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentNullException.ThrowIfNull(pipeline);
        options ??= new BatchLoaderOptions();
        options.Validate();
        if (dataset.Count == 0) throw new ArgumentException("The dataset is empty; there is nothing to load.", nameof(dataset));
        Dataset = dataset;
        Pipeline = pipeline;
        Options = options;
    }

    /// <summary>The samples.</summary>
    public IImageDataset Dataset { get; }

    /// <summary>The per-sample transform.</summary>
    public ImagePipeline Pipeline { get; }

    /// <summary>The settings.</summary>
    public BatchLoaderOptions Options { get; }

    /// <summary>Batches per epoch: ⌊N / B⌋ when dropping the last incomplete batch, else ⌈N / B⌉, N being
    /// <see cref="SamplesPerEpoch"/>.</summary>
    public int BatchesPerEpoch => Options.DropLast
        ? SamplesPerEpoch / Options.BatchSize
        : (SamplesPerEpoch + Options.BatchSize - 1) / Options.BatchSize;

    /// <summary>Samples this loader visits per epoch: the dataset, or this rank's shard of it.</summary>
    public int SamplesPerEpoch
    {
        get
        {
            int n = Dataset.Count, world = Options.WorldSize;
            if (world == 1) return n;
            return Options.EvenShards ? (n + world - 1) / world : (n - Options.Rank + world - 1) / world;
        }
    }

    /// <summary>Throughput of the epoch being read, or of the last one; null before the first batch.</summary>
    public LoaderStatistics? Statistics { get; private set; }

    /// <summary>The batches of <paramref name="epoch"/>, in order. Workers start at the first <c>MoveNext</c> and
    /// stop when the enumeration ends or is disposed.</summary>
    public IEnumerable<Batch> Epoch(int epoch, CancellationToken cancellationToken = default) => Epoch(epoch, 0, cancellationToken);

    /// <summary>The batches of <paramref name="epoch"/> from batch <paramref name="startBatch"/> on, in order — the
    /// same batches, with the same augmentation, as a full pass delivers there (for resuming inside an epoch without
    /// decoding the batches already done).</summary>
    public IEnumerable<Batch> Epoch(int epoch, int startBatch, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        if (startBatch < 0 || startBatch > BatchesPerEpoch)
            throw new ArgumentOutOfRangeException(nameof(startBatch), startBatch, $"startBatch must be in [0, {BatchesPerEpoch}].");
        return Run(epoch, startBatch, cancellationToken);
    }

    /// <summary>The dataset indices in the order <paramref name="epoch"/> visits them (this rank's shard).</summary>
    internal int[] Order(int epoch)
    {
        int[] order;
        if (Options.Shuffle)
        {
            order = SampleRng.For(Options.Seed, epoch, 0, RngStream.Shuffle).Permutation(Dataset.Count);
        }
        else
        {
            order = new int[Dataset.Count];
            for (int i = 0; i < order.Length; i++) order[i] = i;
        }
        return Options.WorldSize == 1 ? order : Shard(order, Options.Rank, Options.WorldSize, Options.EvenShards);
    }

    /// <summary>Positions rank, rank + world, … of <paramref name="order"/>, padded (when <paramref name="even"/>)
    /// to a multiple of <paramref name="world"/> by continuing from its start, as DistributedSampler does.</summary>
    internal static int[] Shard(int[] order, int rank, int world, bool even)
    {
        int n = order.Length, total = even ? (n + world - 1) / world * world : n;
        var shard = new int[Math.Max(0, (total - rank + world - 1) / world)];
        for (int k = 0, p = rank; p < total; k++, p += world) shard[k] = order[p % n];
        return shard;
    }

    private IEnumerable<Batch> Run(int epoch, int startBatch, CancellationToken cancellationToken)
    {
        int batches = BatchesPerEpoch;
        if (batches - startBatch <= 0) yield break;
        var order = Order(epoch);
        int workers = Math.Min(Options.Workers, batches - startBatch);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var queues = new Channel<Pending>[workers];
        var threads = new Thread[workers];
        for (int w = 0; w < workers; w++)
        {
            queues[w] = Channel.CreateBounded<Pending>(new BoundedChannelOptions(Options.PrefetchPerWorker)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            });
            int worker = w;
            threads[w] = new Thread(() => Work(startBatch + worker, workers, batches, order, epoch, queues[worker].Writer, stop.Token))
            {
                IsBackground = true,
                Name = $"BatchLoader worker {w}",
            };
        }

        var clock = Stopwatch.StartNew();
        foreach (var thread in threads) thread.Start();
        var waited = TimeSpan.Zero;
        long images = 0;
        try
        {
            for (int b = startBatch; b < batches; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long before = Stopwatch.GetTimestamp();
                var pending = Read(queues[(b - startBatch) % workers].Reader, stop.Token);
                waited += Stopwatch.GetElapsedTime(before);
                pending.Error?.Throw();
                Batch batch;
                try
                {
                    batch = new Batch(epoch, b, pending.Images!.alias(), pending.Labels!.alias(), pending.Indices);
                }
                finally
                {
                    pending.Dispose();
                }
                images += batch.Count;
                Statistics = new LoaderStatistics(epoch, b + 1 - startBatch, images, clock.Elapsed, waited, workers);
                yield return batch;
            }
        }
        finally
        {
            stop.Cancel();
            foreach (var thread in threads)
                if (thread.ThreadState != System.Threading.ThreadState.Unstarted) thread.Join();
            foreach (var queue in queues)
                while (queue.Reader.TryRead(out var left)) left.Dispose();
        }
    }

    private static Pending Read(ChannelReader<Pending> reader, CancellationToken token)
    {
        while (true)
        {
            if (reader.TryRead(out var item)) return item;
            if (!reader.WaitToReadAsync(token).AsTask().GetAwaiter().GetResult())
                throw new InvalidOperationException("A BatchLoader worker stopped without delivering its batch.");
        }
    }

    private void Work(int firstBatch, int workers, int batches, int[] order, int epoch, ChannelWriter<Pending> writer, CancellationToken token)
    {
        try
        {
            for (int b = firstBatch; b < batches && !token.IsCancellationRequested; b += workers)
            {
                Pending pending;
                try
                {
                    pending = Build(b, order, epoch, token);
                }
                catch (OperationCanceledException) when (token.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception e)
                {
                    pending = new Pending(null, null, [], ExceptionDispatchInfo.Capture(e));
                    b = batches; // deliver the error in this batch's place, then stop
                }
                try
                {
                    writer.WriteAsync(pending, token).AsTask().GetAwaiter().GetResult();
                }
                catch (OperationCanceledException)
                {
                    pending.Dispose();
                    return;
                }
            }
        }
        finally
        {
            writer.TryComplete();
        }
    }

    private Pending Build(int batch, int[] order, int epoch, CancellationToken token)
    {
        int batchSize = Options.BatchSize, start = batch * batchSize;
        int n = Math.Min(batchSize, order.Length - start);
        int size = Pipeline.OutputSize, sampleLength = Pipeline.SampleLength;
        // A worker thread has no dispose scope, so these tensors are owned by the Pending until handed over.
        var images = empty([n, 3, size, size], ScalarType.Float32);
        try
        {
            var labels = new long[n];
            var indices = new int[n];
            var data = MemoryMarshal.Cast<byte, float>(images.bytes);
            for (int k = 0; k < n; k++)
            {
                token.ThrowIfCancellationRequested();
                int index = order[start + k];
                var (image, used) = Load(index);
                labels[k] = Dataset.Label(used);
                indices[k] = used;
                Pipeline.Process(image, SampleRng.For(Options.Seed, epoch, index, RngStream.Sample), data.Slice(k * sampleLength, sampleLength));
            }
            return new Pending(images, tensor(labels, [n]), indices, null);
        }
        catch
        {
            images.Dispose();
            throw;
        }
    }

    /// <summary>The image at <paramref name="index"/>, or if it is unreadable the next readable one (wrapping).</summary>
    private (RgbImage Image, int Index) Load(int index)
    {
        int count = Dataset.Count;
        for (int k = 0; k < count; k++)
        {
            int j = (index + k) % count;
            if (Dataset.TryLoadImage(j, out var image)) return (image, j);
        }
        throw new InvalidDataException(
            $"None of the dataset's {count} images can be read (the first is '{Dataset.Source(0)}'); check the data folder.");
    }

    private sealed record Pending(Tensor? Images, Tensor? Labels, int[] Indices, ExceptionDispatchInfo? Error) : IDisposable
    {
        public void Dispose()
        {
            Images?.Dispose();
            Labels?.Dispose();
        }
    }
}
