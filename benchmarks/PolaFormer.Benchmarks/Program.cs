using BenchmarkDotNet.Running;
using PolaFormer;
using PolaFormer.Benchmarks;

// Scripted modes print one JSON object per measurement; anything else goes to BenchmarkDotNet.
try
{
    // Before any tensor: the OpenMP wait policy is read when LibTorch loads. Every scripted mode accepts
    // --cpu-runtime tuned|passive|spin|default (tuned = TorchRuntime.ConfigureCpu(), what the training program does: passive waiting; spin = tuned with OpenMP's spinning; the
    // Python side applies the same settings) and reports it as cpu_runtime.
    RunInfo.CpuRuntime = Arguments.CpuRuntime(args) switch
    {
        "tuned" => TorchRuntime.ConfigureCpu(),
        "passive" => TorchRuntime.ConfigureCpu(new CpuRuntimeOptions { WaitPolicy = OpenMpWaitPolicy.Passive }),
        "spin" => TorchRuntime.ConfigureCpu(new CpuRuntimeOptions { WaitPolicy = OpenMpWaitPolicy.Default }),
        "default" => "CPU runtime: defaults",
        var other => throw new ArgumentException($"--cpu-runtime is '{other}'; expected tuned, passive or default."),
    };

    return args.FirstOrDefault() switch
    {
        "attention" => AttentionCommand.Run(new Arguments(args.Skip(1))),
        "model" => ModelCommand.Run(new Arguments(args.Skip(1))),
        "matmul" => MatmulCommand.Run(new Arguments(args.Skip(1))),
        "conv-check" => ConvolutionCheckCommand.Run(new Arguments(args.Skip(1))),
        "flops" => FlopsCommand.Run(new Arguments(args.Skip(1))),
        "profile-attention" => ProfileAttentionCommand.Run(new Arguments(args.Skip(1))),
        "profile-model" => ProfileModelCommand.Run(new Arguments(args.Skip(1))),
        "models" => ListModelsCommand.Run(),
        "kernels" => KernelsCommand.Run(new Arguments(args.Skip(1))),
        "scalar-stress" => ScalarStressCommand.Run(new Arguments(args.Skip(1))),
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
