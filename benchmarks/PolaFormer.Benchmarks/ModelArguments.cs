namespace PolaFormer.Benchmarks;

/// <summary>The arguments the whole-model modes share: <c>--name NAME --batch B --size S --mode infer|train
/// --threads T|auto</c>, validated. <c>auto</c> keeps the count the CPU runtime chose (TorchRuntime.ConfigureCpu caps it
/// at the processors the process may use: its affinity mask and CPU quota).</summary>
internal sealed record ModelArguments(string Name, long Batch, long Size, string Mode, int Threads)
{
    public static ModelArguments From(Arguments args, long defaultBatch)
    {
        var a = new ModelArguments(args.Text("name", "pola_pvt_tiny"), args.Int("batch", defaultBatch), args.Int("size", 224),
            args.Text("mode", "infer"), args.Text("threads", "2") == "auto" ? TorchSharp.torch.get_num_threads() : (int)args.Int("threads", 2));
        if (a.Mode is not ("infer" or "train")) throw new ArgumentException($"--mode is '{a.Mode}'; expected infer or train.");
        if (!ModelZoo.Names.Contains(a.Name))
            throw new ArgumentException($"--name is '{a.Name}'; expected one of {string.Join(", ", ModelZoo.Names)}.");
        if (a.Batch < 1) throw new ArgumentException($"--batch is {a.Batch}; expected 1 or more.");
        if (a.Size < 1) throw new ArgumentException($"--size is {a.Size}; expected 1 or more.");
        return a;
    }
}
