using TorchSharp;

namespace PolaFormer.Benchmarks;

/// <summary><c>flops [--name NAME] [--size S] --json</c>: multiply–accumulates of one forward of one image for every
/// registered model and the two softmax baselines (or one), at the preset size or S. See <see cref="FlopCounter"/>
/// for what is counted.</summary>
internal static class FlopsCommand
{
    public static int Run(Arguments args)
    {
        string? only = args.Text("name", "") is { Length: > 0 } n ? n : null;
        if (only is not null && !ModelZoo.Names.Contains(only))
            throw new ArgumentException($"--name is '{only}'; expected one of {string.Join(", ", ModelZoo.Names)}.");
        torch.set_num_threads((int)args.Int("threads", 2));
        foreach (var name in only is null ? ModelZoo.Names : [only])
        {
            var (family, attention, presetSize) = ModelZoo.Describe(name);
            long size = args.Int("size", presetSize);
            var count = FlopCounter.Count(name, size);
            long parameters;
            using (var model = ModelZoo.Create(name, size, torch.META)) parameters = model.parameters().Sum(p => p.numel());
            var report = new
            {
                benchmark = "flops", name, family, attention, size, parameters,
                macs = count.Total, gmacs = count.Total / 1e9,
                linear_gmacs = count.LinearMacs / 1e9, conv_gmacs = count.ConvMacs / 1e9, attention_gmacs = count.AttentionMacs / 1e9,
            };
            Report.Print(report, args.Flag("json"));
        }
        return 0;
    }
}
