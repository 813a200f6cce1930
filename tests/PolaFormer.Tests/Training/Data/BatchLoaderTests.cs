using FluentAssertions;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Training.Data;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Training.Data;

public sealed class BatchLoaderTests : TorchTest
{
    // The official augmentations (RandAugment, erasing) at a small size, so every random stage runs.
    private static readonly ImagePipeline Train = ImagePipeline.Train(DataRecipe.ImageNet with { ImageSize = 24 });

    private static List<(byte[] Images, long[] Labels, int[] Indices)> ReadEpoch(BatchLoader loader, int epoch)
    {
        var batches = new List<(byte[], long[], int[])>();
        foreach (var batch in loader.Epoch(epoch))
            using (batch)
            {
                batch.Images.shape.Should().Equal(batch.Count, 3, 24, 24);
                batches.Add((batch.Images.bytes.ToArray(), batch.Labels.data<long>().ToArray(), batch.Indices.ToArray()));
            }
        return batches;
    }

    [Fact]
    public void A_sample_is_augmented_identically_for_the_same_seed_epoch_and_index_only()
    {
        var image = TestImages.Gradient(50, 40);
        var a = Train.Process(image, seed: 3, epoch: 2, index: 9);
        Train.Process(image, seed: 3, epoch: 2, index: 9).Should().Equal(a);
        Train.Process(image, seed: 3, epoch: 3, index: 9).Should().NotEqual(a);
        Train.Process(image, seed: 3, epoch: 2, index: 10).Should().NotEqual(a);
        Train.Process(image, seed: 4, epoch: 2, index: 9).Should().NotEqual(a);
    }

    [Fact]
    public void One_worker_and_three_workers_give_bit_identical_batches_in_the_same_order()
    {
        var dataset = InMemoryDataset.Synthetic(30);
        var options = new BatchLoaderOptions { BatchSize = 4, Seed = 11, Workers = 1 };
        var single = ReadEpoch(new BatchLoader(dataset, Train, options), 1);
        var three = ReadEpoch(new BatchLoader(dataset, Train, options with { Workers = 3, PrefetchPerWorker = 1 }), 1);

        single.Should().HaveCount(7, "30 samples in batches of 4, the last 2 dropped");
        three.Should().HaveCount(7);
        for (int b = 0; b < 7; b++)
        {
            three[b].Images.Should().Equal(single[b].Images);
            three[b].Labels.Should().Equal(single[b].Labels);
            three[b].Indices.Should().Equal(single[b].Indices);
            single[b].Labels.Should().Equal(single[b].Indices.Select(i => (long)(i % 4)));
        }
        single.SelectMany(b => b.Indices).Should().OnlyHaveUniqueItems();

        var next = ReadEpoch(new BatchLoader(dataset, Train, options with { Workers = 2 }), 2);
        next.SelectMany(b => b.Indices).Should().NotEqual(single.SelectMany(b => b.Indices), "each epoch has its own order");
        next[0].Images.Should().NotEqual(single[0].Images);
    }

    [Fact]
    public void Evaluation_order_keeps_every_sample_once_with_a_short_last_batch()
    {
        var dataset = InMemoryDataset.Synthetic(10);
        var loader = new BatchLoader(dataset, ImagePipeline.Eval(DataRecipe.ImageNet with { ImageSize = 24 }),
            new BatchLoaderOptions { BatchSize = 4, Shuffle = false, DropLast = false, Workers = 2 });
        loader.BatchesPerEpoch.Should().Be(3);
        var batches = ReadEpoch(loader, 0);
        batches.Select(b => b.Indices.Length).Should().Equal(4, 4, 2);
        batches.SelectMany(b => b.Indices).Should().Equal(Enumerable.Range(0, 10));
        loader.Statistics!.Images.Should().Be(10);
        loader.Statistics.Batches.Should().Be(3);
    }

    [Fact]
    public void Unreadable_images_are_replaced_by_the_next_readable_sample()
    {
        var images = Enumerable.Range(0, 8).Select(i => TestImages.Noise(30, 30, i)).ToArray();
        var dataset = new InMemoryDataset(images, Enumerable.Range(0, 8).ToArray(), 8, unreadable: new HashSet<int> { 3, 4 });
        var loader = new BatchLoader(dataset, Train, new BatchLoaderOptions { BatchSize = 8, Shuffle = false, Workers = 1 });
        var batch = ReadEpoch(loader, 0).Single();
        batch.Indices.Should().Equal(0, 1, 2, 5, 5, 5, 6, 7);
        batch.Labels.Should().Equal(0, 1, 2, 5, 5, 5, 6, 7);
        // Substitutes keep the randomness of the position they fill, so the three copies of sample 5 differ.
        int length = 3 * 24 * 24 * 4;
        batch.Images.AsSpan(3 * length, length).SequenceEqual(batch.Images.AsSpan(5 * length, length)).Should().BeFalse();
    }

    [Fact]
    public void A_worker_exception_reaches_the_consumer_with_its_message_at_that_batch()
    {
        var dataset = new InMemoryDataset(Enumerable.Range(0, 12).Select(i => TestImages.Noise(30, 30, i)).ToArray(),
            new int[12], 1, throwing: new HashSet<int> { 9 });
        var loader = new BatchLoader(dataset, Train, new BatchLoaderOptions { BatchSize = 2, Shuffle = false, Workers = 3 });
        int delivered = 0;
        FluentActions.Invoking(() =>
        {
            foreach (var batch in loader.Epoch(0))
                using (batch) delivered++;
        }).Should().Throw<InvalidDataException>().WithMessage("sample 9 is broken on purpose");
        delivered.Should().Be(4, "batches 0..3 are fine; batch 4 holds sample 9");
    }

    [Fact]
    public void Leaving_early_or_cancelling_stops_the_workers_and_the_loader_can_run_again()
    {
        var dataset = InMemoryDataset.Synthetic(40);
        var loader = new BatchLoader(dataset, Train, new BatchLoaderOptions { BatchSize = 2, Workers = 3, PrefetchPerWorker = 1 });
        foreach (var batch in loader.Epoch(0))
        {
            batch.Dispose();
            break;
        }
        using var cancel = new CancellationTokenSource();
        int seen = 0;
        FluentActions.Invoking(() =>
        {
            foreach (var batch in loader.Epoch(0, cancel.Token))
            {
                batch.Dispose();
                if (++seen == 2) cancel.Cancel();
            }
        }).Should().Throw<OperationCanceledException>();
        seen.Should().Be(2);
        ReadEpoch(loader, 0).Should().HaveCount(20);
    }

    [Fact]
    public void Batch_tensors_join_the_consumers_dispose_scope()
    {
        var loader = new BatchLoader(InMemoryDataset.Synthetic(4), Train, new BatchLoaderOptions { BatchSize = 4, Workers = 1 });
        Tensor images;
        using (var scope = NewDisposeScope())
        {
            var batch = loader.Epoch(0).Single();
            images = batch.Images;
            images.IsInvalid.Should().BeFalse();
        }
        images.IsInvalid.Should().BeTrue("the scope disposed the batch's tensors");
    }
}
