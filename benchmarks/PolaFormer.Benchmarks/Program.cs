using BenchmarkDotNet.Running;
using PolaFormer.Benchmarks;

// Scripted modes print one JSON object per measurement; anything else goes to BenchmarkDotNet.
try
{
    return args.FirstOrDefault() switch
    {
        "attention" => AttentionCommand.Run(new Arguments(args.Skip(1))),
        "model" => ModelCommand.Run(new Arguments(args.Skip(1))),
        "matmul" => MatmulCommand.Run(new Arguments(args.Skip(1))),
        "flops" => FlopsCommand.Run(new Arguments(args.Skip(1))),
        "profile-attention" => ProfileAttentionCommand.Run(new Arguments(args.Skip(1))),
        "profile-model" => ProfileModelCommand.Run(new Arguments(args.Skip(1))),
        "models" => ListModelsCommand.Run(),
        "kernels" => KernelsCommand.Run(new Arguments(args.Skip(1))),
        _ => RunBenchmarkDotNet(args),
    };
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 2;
}

static int RunBenchmarkDotNet(string[] args)
{
    BenchmarkSwitcher.FromAssembly(typeof(Arguments).Assembly).Run(args);
    return 0;
}
