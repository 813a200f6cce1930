using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using FluentAssertions;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using PolaFormer.Tests.Training;
using PolaFormer.Tests.Training.Data;
using PolaFormer.Training;
using PolaFormer.Training.Data;
using PolaFormer.Training.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Distributed;

[Collection(DistributedCollection.Name)]
public sealed class LaunchEnvironmentTests
{
    private static LaunchEnvironment Read(params (string Name, string Value)[] variables) =>
        LaunchEnvironment.FromVariables(variables.ToDictionary(v => v.Name, v => v.Value));

    [Fact]
    public void Torchrun_variables_win_over_mpirun_ones_which_win_over_none()
    {
        Read(("RANK", "2"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node0"), ("MASTER_PORT", "29500"),
                ("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "8"))
            .Should().Be(new LaunchEnvironment(2, 4, 1, "node0", 29500, "torchrun", 29500));
        Read(("OMPI_COMM_WORLD_RANK", "5"), ("OMPI_COMM_WORLD_SIZE", "8"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1"))
            .Should().Be(new LaunchEnvironment(5, 8, 1, null, null, "mpirun", null));
        Read().Should().Be(LaunchEnvironment.SingleProcess);
        Read(("WORLD_SIZE", "1")).Should().Be(new LaunchEnvironment(0, 1, 0, null, null, "torchrun", null));
    }

    [Fact]
    public void The_rendezvous_avoids_the_port_of_torchruns_own_store()
    {
        (string, string)[] torchrun = [("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "node0"), ("MASTER_PORT", "29500")];
        Read(torchrun).RendezvousPort.Should().Be(29500, "Kubernetes' PyTorchJob and hand-set variables leave MASTER_PORT to rank 0");
        Read([.. torchrun, ("TORCHELASTIC_USE_AGENT_STORE", "True")]).RendezvousPort.Should().Be(29501, "torchrun's agent listens on MASTER_PORT itself");
        Read([.. torchrun, ("TORCHELASTIC_USE_AGENT_STORE", "True"), ("POLAFORMER_RENDEZVOUS_PORT", "40000")]).RendezvousPort.Should().Be(40000);
    }

    [Theory]
    [InlineData("WORLD_SIZE", "0", "RANK", "0", "WORLD_SIZE is '0'; expected an integer of at least 1*")]
    [InlineData("WORLD_SIZE", "4", "RANK", "4", "RANK is '4'; expected an integer in [0, 3]*")]
    [InlineData("WORLD_SIZE", "two", "RANK", "0", "WORLD_SIZE is 'two'*")]
    [InlineData("RANK", "1", "LOCAL_RANK", "0", "RANK is set but WORLD_SIZE is not*")]
    [InlineData("WORLD_SIZE", "3", "LOCAL_RANK", "0", "WORLD_SIZE is 3 but RANK is not set*")]
    [InlineData("MASTER_PORT", "70000", "RANK", "0", "MASTER_PORT is '70000'; expected an integer in [1, 65535]*")]
    public void Malformed_variables_are_named_with_the_expectation(string name1, string value1, string name2, string value2, string message)
    {
        FluentActions.Invoking(() => Read((name1, value1), (name2, value2))).Should().Throw<ArgumentException>().WithMessage(message);
    }
}

[Collection(DistributedCollection.Name)]
public sealed class ProcessGroupTests : TorchTest
{
    [Fact]
    public void A_single_process_group_has_rank_0_of_1_and_its_collectives_change_nothing()
    {
        using var group = ProcessGroup.Create(DistributedBackend.None, environment: LaunchEnvironment.SingleProcess);
        (group.Rank, group.WorldSize, group.IsMain, group.Backend).Should().Be((0, 1, true, DistributedBackend.None));
        using var t = tensor(new[] { 1f, 2f, 3f });
        group.AllReduce(t, ReduceOperation.Average);
        group.Broadcast(t);
        group.AllReduceCoalesced([t]);
        group.Barrier();
        t.data<float>().ToArray().Should().Equal(1f, 2f, 3f);
        FluentActions.Invoking(() => group.AllReduce(tensor(new[] { 1L }), ReduceOperation.Average))
            .Should().Throw<ArgumentException>().WithMessage("*Int64*averaging needs a floating-point tensor*");
    }

    [Fact]
    public void Several_launched_processes_without_a_backend_fail_before_training_side_by_side()
    {
        FluentActions.Invoking(() => ProcessGroup.Create(DistributedBackend.None, environment: new LaunchEnvironment(1, 4, 1, null, null, "torchrun", null)))
            .Should().Throw<ArgumentException>().WithMessage("*rank 1 of 4 (torchrun variables) but no distributed backend*DistributedBackend.Mpi*");
        ProcessGroup.ParseBackend("NCCL").Should().Be(DistributedBackend.Nccl);
        FluentActions.Invoking(() => ProcessGroup.ParseBackend("gloo")).Should().Throw<ArgumentException>().WithMessage("Distributed backend 'gloo' is not known; expected none, mpi*nccl*");
    }

    [Fact]
    public void Nccl_without_libnccl_fails_with_a_message_that_says_what_to_install()
    {
        FluentActions.Invoking(() => NcclLibrary.Load(["libnccl-not-installed.so.2"]))
            .Should().Throw<DistributedException>().WithMessage("The nccl backend needs NVIDIA's NCCL library (libnccl-not-installed.so.2)*not found*libnccl2*DistributedBackend.Mpi*");

        int port = FreePort();
        var env = new LaunchEnvironment(0, 2, 0, "127.0.0.1", port, "torchrun", port);
        var failure = FluentActions.Invoking(() => ProcessGroup.Create(DistributedBackend.Nccl, TimeSpan.FromSeconds(2), env))
            .Should().Throw<DistributedException>().Which;
        if (!NativeLibrary.TryLoad("libnccl.so.2", out _))
            failure.Message.Should().StartWith("The nccl backend needs NVIDIA's NCCL library (libnccl.so.2 or libnccl.so)");
        else
            failure.Message.Should().Contain("nccl").And.Contain("CUDA", "this machine has NCCL, but the tests run on LibTorch's CPU build");
    }

    [Fact]
    public void Mpi_without_open_mpi_fails_with_a_message_that_says_what_to_install()
    {
        FluentActions.Invoking(() => MpiLibrary.Load(["libmpi-not-installed.so.40"]))
            .Should().Throw<DistributedException>().WithMessage("The mpi backend needs Open MPI's library (libmpi-not-installed.so.40)*apt-get install openmpi-bin*");
    }

    internal static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}

[Collection(DistributedCollection.Name)]
public sealed class TcpRendezvousTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    private static T[] OnThreads<T>(int ranks, Func<int, T> body)
    {
        var results = new T[ranks];
        var errors = new Exception?[ranks];
        var threads = Enumerable.Range(0, ranks).Select(r => new Thread(() =>
        {
            try { results[r] = body(r); }
            catch (Exception e) { errors[r] = e; }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (errors.FirstOrDefault(e => e is not null) is { } error) throw error;
        return results;
    }

    [Fact]
    public void Three_ranks_on_loopback_receive_rank_0s_id_and_pass_barriers_together()
    {
        int port = ProcessGroupTests.FreePort();
        var id = Enumerable.Range(0, 128).Select(i => (byte)(i * 7)).ToArray();
        var passed = 0;
        var received = OnThreads(3, rank =>
        {
            if (rank == 2) Thread.Sleep(300); // a late rank: the others wait for it
            using var rendezvous = TcpRendezvous.Join("127.0.0.1", port, rank, 3, Timeout);
            var bytes = rendezvous.Broadcast(rank == 0 ? id : null);
            if (rank == 1) Thread.Sleep(200);
            rendezvous.Barrier();
            Interlocked.Increment(ref passed);
            rendezvous.Barrier();
            Volatile.Read(ref passed).Should().Be(3, "nobody leaves a barrier before everyone reached it");
            return bytes;
        });
        received.Should().AllSatisfy(r => r.Should().Equal(id));
    }

    [Fact]
    public void A_rank_that_never_comes_is_named_by_rank_0_after_the_timeout()
    {
        int port = ProcessGroupTests.FreePort();
        var errors = OnThreads(2, rank =>
        {
            try
            {
                // Rank 1 waits longer than rank 0, so it sees rank 0 give up rather than time out itself.
                using var rendezvous = TcpRendezvous.Join("127.0.0.1", port, rank, 3, TimeSpan.FromSeconds(rank == 0 ? 1.5 : 20));
                rendezvous.Broadcast(rank == 0 ? [1, 2, 3] : null);
                return "";
            }
            catch (DistributedException e)
            {
                return e.Message;
            }
        });
        errors[0].Should().Match("rank 0 of 3: rank(s) 2 did not join the rendezvous at 127.0.0.1:*within 1.5 s*MASTER_ADDR/MASTER_PORT/WORLD_SIZE*");
        errors[1].Should().Match("rank 1 of 3: *connection to rank 0 broke*rank 0 has probably died*");
    }

    [Fact]
    public void A_rank_that_dies_is_named_by_the_ranks_waiting_for_it()
    {
        int port = ProcessGroupTests.FreePort();
        var errors = OnThreads(3, rank =>
        {
            var rendezvous = TcpRendezvous.Join("127.0.0.1", port, rank, 3, Timeout);
            try
            {
                if (rank == 2)
                {
                    rendezvous.Dispose(); // dies without a word
                    return "";
                }
                rendezvous.Barrier("barrier (checkpoint written)");
                return "";
            }
            catch (DistributedException e)
            {
                return e.Message;
            }
            finally
            {
                rendezvous.Dispose();
            }
        });
        errors[0].Should().Match("rank 0 of 3: the connection to rank 2 broke during barrier (checkpoint written)*rank 2 has probably died*");
        errors[1].Should().Match("rank 1 of 3: the connection to rank 0 broke during barrier (checkpoint written)*");
    }

    [Fact]
    public void Ranks_started_with_different_world_sizes_are_told_so()
    {
        int port = ProcessGroupTests.FreePort();
        var errors = OnThreads(2, rank =>
        {
            try
            {
                using var rendezvous = TcpRendezvous.Join("127.0.0.1", port, rank, rank == 0 ? 2 : 3, Timeout);
                rendezvous.Barrier();
                return "";
            }
            catch (DistributedException e)
            {
                return e.Message;
            }
        });
        errors[0].Should().Be("rank 0: rank 1 was started with WORLD_SIZE 3, this rank with 2; start every rank with the same WORLD_SIZE.");
    }
}

[Collection(DistributedCollection.Name)]
public sealed class DistributedDataParallelTests : TorchTest
{
    private sealed class Net : nn.Module<Tensor, Tensor>
    {
#pragma warning disable IDE1006 // registered by field name, like PyTorch attributes
        private readonly Linear shared = nn.Linear(6, 4);
        private readonly Linear odd = nn.Linear(4, 4);
        private readonly Linear unused = nn.Linear(4, 4);
#pragma warning restore IDE1006
        public int Rank { get; init; }

        public Net() : base("Net") => RegisterComponents();

        // The odd ranks' forward uses a layer the even ranks' does not: its gradient exists on rank 1 only.
        public override Tensor forward(Tensor x) => Rank % 2 == 1 ? odd.forward(shared.forward(x)) : shared.forward(x);
    }

    [Fact]
    public void Buckets_fill_in_reverse_parameter_order_up_to_their_capacity()
    {
        using var net = new Net();
        using var ddp = new DistributedDataParallel(net, ProcessGroup.Single(), bucketBytes: 100);
        // unused.bias 16 B, unused.weight 64 B, odd.bias 16 B → 96 B, + odd.weight 64 B → 160 B ≥ 100: closed; ...
        ddp.Buckets.Should().BeEquivalentTo(new[]
        {
            new[] { "unused.bias", "unused.weight", "odd.bias", "odd.weight" },
            new[] { "shared.bias", "shared.weight" },
        }, o => o.WithStrictOrdering());
        using var whole = new DistributedDataParallel(net, ProcessGroup.Single());
        whole.Buckets.Should().ContainSingle().Which.Should().HaveCount(6);
    }

    [Fact]
    public void Three_ranks_start_from_rank_0s_weights_and_end_each_backward_with_the_mean_gradient()
    {
        var results = ThreadProcessGroup.Run(3, group =>
        {
            using var scope = NewDisposeScope();
            var generator = new Generator((ulong)(10 + group.Rank)); // different weights and data on every rank
            var net = new Net { Rank = group.Rank };
            using (no_grad())
                foreach (var p in net.parameters()) p.copy_(randn(p.shape, generator: generator));
            using var ddp = new DistributedDataParallel(net, group, bucketBytes: 100);
            ddp.SynchronizeParameters();
            var weights = net.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());

            var x = randn([5, 6], generator: generator);
            net.forward(x).square().sum().backward();
            var local = net.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad?.clone());
            ddp.AverageGradients();
            var averaged = net.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad?.clone());
            foreach (var t in weights.Values.Concat(local.Values).Concat(averaged.Values)) t?.MoveToOuterDisposeScope();
            return (Weights: weights, Local: local, Averaged: averaged);
        });

        foreach (var rank in new[] { 1, 2 })
            foreach (var (name, w) in results[0].Weights)
                results[rank].Weights[name].eq(w).all().item<bool>().Should().BeTrue($"rank {rank}'s {name} must be rank 0's after the broadcast");

        foreach (var name in new[] { "shared.weight", "shared.bias" })
        {
            var mean = (results[0].Local[name]! + results[1].Local[name]! + results[2].Local[name]!) / 3;
            foreach (var r in results) r.Averaged[name]!.ShouldBeClose(mean, 1e-6, $"{name} averaged over the ranks");
            results[1].Averaged[name]!.eq(results[0].Averaged[name]!).all().item<bool>().Should().BeTrue("every rank gets the same bits");
        }
        results[0].Local["odd.weight"].Should().BeNull("rank 0 does not use that layer");
        foreach (var r in results)
            r.Averaged["odd.weight"]!.ShouldBeClose(results[1].Local["odd.weight"]! / 3, 1e-6, "a gradient of rank 1 only, averaged with two zeros");
        results.Select(r => r.Averaged["unused.weight"]).Should().AllSatisfy(g => g.Should().BeNull(), "a parameter no rank used keeps no gradient, so the optimiser skips it");
    }

    [Fact]
    public void Different_models_on_the_ranks_are_reported_before_any_weight_moves()
    {
        var act = () => ThreadProcessGroup.Run(2, group =>
        {
            using nn.Module<Tensor, Tensor> net = group.Rank == 0 ? nn.Linear(4, 4) : nn.Linear(4, 5);
            using var ddp = new DistributedDataParallel(net, group);
            ddp.SynchronizeParameters();
            return 0;
        });
        act.Should().Throw<AggregateException>().WithInnerException<DistributedException>()
            .WithMessage("rank 1: the model differs from rank 0's (2 tensors, 25 values here; rank 0: 2 tensors, 20 values*every rank must build the same model.");
    }

    [Fact]
    public void Sharded_validation_over_three_ranks_reports_the_whole_sets_figures()
    {
        var data = InMemoryDataset.Synthetic(23, classes: 4);
        var pipeline = ImagePipeline.Eval(DataRecipe.ImageNet with { ImageSize = 32 });
        manual_seed(3);
        using var model = TrainingFixtures.TinyPvt(4, CPU);
        model.eval(); // the ranks share this model: none may switch it back to training (drop path) while another evaluates
        var single = Trainer.Evaluate(model, data, pipeline, batchSize: 4, workers: 1, CPU);
        var sharded = ThreadProcessGroup.Run(3, group => Trainer.Evaluate(model, data, pipeline, batchSize: 4, workers: 1, CPU, group));
        foreach (var result in sharded)
        {
            result.Images.Should().Be(23);
            result.Top1.Should().Be(single.Top1);
            result.Top5.Should().Be(single.Top5);
            result.Loss.Should().BeApproximately(single.Loss, 1e-5);
        }
    }
}

[Collection(DistributedCollection.Name)]
public sealed class DistributedSamplerTests : TorchTest
{
    private static readonly ImagePipeline Train = ImagePipeline.Train(DataRecipe.ImageNet with { ImageSize = 24 });

    [Fact]
    public void Shards_are_strided_padded_from_the_start_or_unpadded()
    {
        int[] order = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
        BatchLoader.Shard(order, 0, 3, even: true).Should().Equal(10, 13, 16, 19);
        BatchLoader.Shard(order, 1, 3, even: true).Should().Equal(11, 14, 17, 10);
        BatchLoader.Shard(order, 2, 3, even: true).Should().Equal(12, 15, 18, 11);
        BatchLoader.Shard(order, 2, 3, even: false).Should().Equal(12, 15, 18);
        BatchLoader.Shard([5, 6], 3, 4, even: true).Should().Equal(6); // fewer samples than ranks: the order repeats
        BatchLoader.Shard([5, 6], 3, 4, even: false).Should().BeEmpty();
    }

    [Fact]
    public void Batch_b_of_all_ranks_is_batch_b_of_one_process_with_the_global_batch_size_image_for_image()
    {
        var dataset = InMemoryDataset.Synthetic(24);
        var options = new BatchLoaderOptions { BatchSize = 2, Seed = 5, Workers = 1 };
        var ranks = Enumerable.Range(0, 3).Select(r => new BatchLoader(dataset, Train, options with { Rank = r, WorldSize = 3 })).ToList();
        var single = new BatchLoader(dataset, Train, options with { BatchSize = 6 });
        ranks.Should().OnlyContain(l => l.BatchesPerEpoch == 4 && l.SamplesPerEpoch == 8);
        single.BatchesPerEpoch.Should().Be(4);

        var perRank = ranks.Select(l => l.Epoch(1).Select(b => { using (b) return (b.Indices.ToArray(), b.Images.bytes.ToArray()); }).ToList()).ToList();
        int batch = 0;
        foreach (var b in single.Epoch(1))
            using (b)
            {
                var expected = b.Indices.ToArray();
                var together = perRank.SelectMany(r => r[batch].Item1).ToArray();
                together.Should().BeEquivalentTo(expected, $"batch {batch} of the three ranks holds the samples of the global batch {batch}");
                int sample = 3 * 24 * 24 * 4; // bytes per image
                for (int r = 0; r < 3; r++)
                    for (int k = 0; k < 2; k++)
                    {
                        int at = Array.IndexOf(expected, perRank[r][batch].Item1[k]);
                        perRank[r][batch].Item2.AsSpan(k * sample, sample).SequenceEqual(b.Images.bytes.Slice(at * sample, sample))
                            .Should().BeTrue("a sample's augmentation depends on (seed, epoch, index), not on the rank");
                    }
                batch++;
            }
        batch.Should().Be(4);
    }

    [Fact]
    public void Evaluation_shards_visit_every_sample_exactly_once()
    {
        var dataset = InMemoryDataset.Synthetic(11);
        var options = new BatchLoaderOptions { BatchSize = 2, Shuffle = false, DropLast = false, Workers = 1, WorldSize = 3, EvenShards = false };
        var seen = Enumerable.Range(0, 3).SelectMany(r => new BatchLoader(dataset, ImagePipeline.Eval(DataRecipe.ImageNet with { ImageSize = 24 }), options with { Rank = r })
            .Epoch(0).SelectMany(b => { using (b) return b.Indices.ToArray(); })).ToList();
        seen.Should().BeEquivalentTo(Enumerable.Range(0, 11));
        FluentActions.Invoking(() => new BatchLoader(dataset, Train, options with { Rank = 3 })).Should().Throw<ArgumentException>().WithMessage("*Rank = 3*[0, 3)*");
    }
}
