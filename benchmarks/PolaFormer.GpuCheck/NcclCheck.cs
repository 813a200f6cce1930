using System.Globalization;
using PolaFormer.Models;
using PolaFormer.Training.Distributed;
using PolaFormer.Training.Optimization;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.GpuCheck;

/// <summary>
/// <c>nccl</c>: the training step through a real NCCL process group of one rank on one GPU: NCCL loaded, the
/// communicator initialised over the TCP rendezvous, an all-reduce of a known tensor, a few flat-state training
/// steps whose gradients go through <see cref="DistributedDataParallel.AverageGradients"/> (at one rank the mean
/// must equal the gradient itself), and a clean shutdown. PASS/FAIL lines.
/// </summary>
internal static class NcclCheck
{
    public static int Run(Context ctx)
    {
        if (!ctx.IsCuda)
        {
            Console.WriteLine("SKIP nccl: needs --device cuda (NCCL runs on GPUs only)");
            return 0;
        }
        int failures = 0;
        void Report(bool ok, string what)
        {
            if (!ok) failures++;
            Console.WriteLine($"{(ok ? "PASS" : "FAIL")} nccl {what}");
        }

        var env = LaunchEnvironment.FromVariables(new Dictionary<string, string>
        {
            ["WORLD_SIZE"] = "1", ["RANK"] = "0", ["LOCAL_RANK"] = "0", ["MASTER_ADDR"] = "127.0.0.1",
            ["MASTER_PORT"] = ctx.Args.Text("port", "29531"),
        });
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var group = ProcessGroup.Create(DistributedBackend.Nccl, TimeSpan.FromSeconds(60), env);
        Report(group.Backend == DistributedBackend.Nccl && !group.SkipsCollectives,
            string.Create(CultureInfo.InvariantCulture, $"process group created: backend {group.Backend}, rank {group.Rank}/{group.WorldSize}, device {group.Device}, {clock.Elapsed.TotalMilliseconds:0} ms"));

        using (var values = arange(1000, dtype: ScalarType.Float32, device: group.Device))
        {
            using var expected = values.clone();
            group.AllReduce(values, ReduceOperation.Sum, "check tensor");
            ctx.Synchronize();
            Report(values.eq(expected).all().item<bool>(), "all-reduce (sum) of 1,000 floats at one rank leaves them unchanged");
        }

        manual_seed(3);
        using var master = ModelRegistry.Create(ctx.Args.Text("model", "pola_pvt_tiny"), numClasses: 10, dropPathRate: 0, imageSize: (64, 64), device: group.Device);
        master.train();
        var (decay, noDecay) = ParameterGroups.Split(master);
        using var flat = FlatParameters.Create([decay, noDecay]);
        using var adamW = new FlatAdamW(flat, [0.05, 0], lr: 1e-3);
        using var ddp = new DistributedDataParallel(master, group, flat, bucketBytes: 4L << 20);
        ddp.SynchronizeParameters();
        using var x = randn(8, 3, 64, 64, device: group.Device);
        using var labels = randint(0, 10, 8, device: group.Device);
        var losses = new List<double>();
        bool averagedEqual = true;
        for (int i = 0; i < 5; i++)
        {
            using var scope = NewDisposeScope();
            adamW.ZeroGradients();
            var loss = nn.functional.cross_entropy(master.forward(x), labels);
            loss.backward();
            var before = flat.Gradients.clone();
            ddp.AverageGradients();
            averagedEqual &= flat.Gradients.eq(before).all().item<bool>();
            adamW.Step();
            losses.Add(loss.item<float>());
        }
        Report(averagedEqual, $"AverageGradients over {ddp.Buckets.Count} bucket(s) (slices of the flat gradient) returns the gradient itself at one rank");
        Report(losses[^1] < losses[0] && losses.All(double.IsFinite),
            "five DDP training steps lower the loss: " + string.Join(" ", losses.Select(l => l.ToString("0.0000", CultureInfo.InvariantCulture))));
        group.Barrier("end of the check");
        return failures == 0 ? 0 : 1;
    }
}
