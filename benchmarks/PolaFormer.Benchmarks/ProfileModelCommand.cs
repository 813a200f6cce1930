using PolaFormer.Attention;
using PolaFormer.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>
/// <c>profile-model --name NAME --batch B --size S --mode infer|train --threads T --json</c>: where the time of a
/// whole model goes. One forward records every block's input (forward pre-hooks on the blocks, which fire because the
/// models call them with <c>call()</c>; PolaFormer++ runs its blocks through <c>forward()</c>, so it gets the model row only);
/// then each block, and inside it norm1, attn, norm2, mlp (and mlp's fc1, act, fc2), is timed alone on an input of
/// the shape it sees in the model (for window attention: the windows of that stage). Blocks of the same stage and
/// kind are summed into one row per stage; "rest" rows are the model (or block) minus its timed parts: patch
/// embeddings, downsampling and the head (model), or residual additions, window partition and shifts (block).
/// <c>train</c> times forward + backward of each part (upstream gradient fixed and random), without the optimizer.
/// </summary>
internal static class ProfileModelCommand
{
    public static int Run(Arguments args)
    {
        var (name, batch, size, mode, threads) = ModelArguments.From(args, defaultBatch: 8);
        bool json = args.Flag("json");
        torch.set_num_threads(threads);
        manual_seed(0);
        var timing = TimingOptions.From(args, new TimingOptions(Warmup: 2, MinIterations: 5, MinSeconds: 1, MaxSeconds: 20));

        using var model = ModelZoo.Create(name);
        if (mode == "infer") model.eval(); else model.train();
        var images = randn(batch, 3, size, size);
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module);

        // Block inputs, in the order the blocks run: a forward pre-hook on every block (a module called with
        // (tokens, height, width) that holds attn, norm1, norm2 and mlp).
        var inputs = new Dictionary<string, Tensor>();
        var hooks = new List<Action>();
        foreach (var (path, module) in modules)
        {
            if (module is not nn.Module<Tensor, long, long, Tensor> block || !IsBlock(modules, path)) continue;
            hooks.Add(block.register_forward_pre_hook((_, x, _, _) =>
            {
                inputs[path] = x.detach().clone().DetachFromDisposeScope();
                return null;
            }).remove);
        }
        using (no_grad()) model.forward(images);
        foreach (var remove in hooks) remove();

        var rows = new List<(string Stage, string Component, double Ms)>();
        double Time(Func<Tensor, Tensor> f, Tensor input)
        {
            Tensor? upstream = null;
            var result = Timing.Measure(() =>
            {
                using var scope = NewDisposeScope();
                if (mode == "infer")
                {
                    using var noGrad = no_grad();
                    f(input);
                    return;
                }
                var leaf = input.detach().requires_grad_(true);
                var y = f(leaf);
                upstream ??= randn_like(y).DetachFromDisposeScope();
                (y * upstream).sum().backward();
            }, timing);
            return result.MedianMs;
        }

        double whole = Time(x => model.forward(x), images);
        rows.Add(("model", "model", whole));
        double blocksTotal = 0;
        foreach (var (blockName, x) in inputs)
        {
            var block = (nn.Module<Tensor, long, long, Tensor>)modules[blockName];
            var attn = (TokenAttention)modules[blockName + ".attn"];
            var norm1 = (LayerNorm)modules[blockName + ".norm1"];
            var norm2 = (LayerNorm)modules[blockName + ".norm2"];
            var mlp = (nn.Module<Tensor, Tensor>)modules[blockName + ".mlp"];
            var fc1 = (Linear)modules[blockName + ".mlp.fc1"];
            var act = (nn.Module<Tensor, Tensor>)modules[blockName + ".mlp.act"];
            var fc2 = (Linear)modules[blockName + ".mlp.fc2"];
            long tokens = x.shape[^2], channels = x.shape[^1];
            long prefix = attn is PolaLinearAttention pla ? pla.PrefixTokens : 0;
            long side = (long)Math.Round(Math.Sqrt(tokens - prefix));
            string stage = Stage(blockName) + " " + attn.Letter;

            double blockMs = Time(t => block.forward(t, side, side), x);
            blocksTotal += blockMs;
            rows.Add((stage, "block", blockMs));
            double parts = 0;
            parts += Add(stage, "norm1", Time(t => norm1.forward(t), x));
            var normed = norm1.forward(x).detach();
            var (attnInput, h, w) = AttentionInput(attn, normed, side);
            parts += Add(stage, $"attn ({attn.GetType().Name})", Time(t => attn.forward(t, h, w), attnInput));
            parts += Add(stage, "norm2", Time(t => norm2.forward(t), x));
            var hidden = fc1.forward(normed).detach();
            Add(stage, "mlp", Time(t => mlp.forward(t), normed));
            parts += Add(stage, "mlp.fc1", Time(t => fc1.forward(t), normed));
            parts += Add(stage, "mlp.act", Time(t => act.forward(t), hidden));
            parts += Add(stage, "mlp.fc2", Time(t => fc2.forward(t), hidden));
            rows.Add((stage, "block rest (residuals, windows, dropout)", blockMs - parts));
        }
        rows.Add(("model", "rest (embeddings, downsampling, head)", whole - blocksTotal));

        foreach (var group in rows.GroupBy(r => (r.Stage, r.Component)))
        {
            double ms = group.Sum(r => r.Ms);
            var report = new
            {
                benchmark = "profile-model", name, batch, size, mode, threads,
                stage = group.Key.Stage, component = group.Key.Component, blocks = group.Count(),
                median_ms = ms, share = ms / whole,
                torch_version = torch.__version__, runtime = RunInfo.TorchSharpVersion, cpu_runtime = RunInfo.CpuRuntime, kernel_threads = RunInfo.KernelThreads, language = "csharp",
            };
            if (json) Report.Print(report, true);
            else Console.WriteLine($"{group.Key.Stage,-10} {group.Key.Component,-42} x{group.Count(),-3} {ms,9:F2} ms {100 * ms / whole,6:F1} %");
        }
        return 0;

        double Add(string stage, string component, double ms)
        {
            rows.Add((stage, component, ms));
            return ms;
        }
    }

    private static bool IsBlock(Dictionary<string, nn.Module> modules, string path) =>
        modules.GetValueOrDefault(path + ".attn") is TokenAttention && modules.ContainsKey(path + ".norm1") &&
        modules.ContainsKey(path + ".norm2") && modules.ContainsKey(path + ".mlp");

    private static string Stage(string blockName) => blockName switch
    {
        _ when blockName.StartsWith("layers.", StringComparison.Ordinal) => "stage " + (int.Parse(blockName.Split('.')[1]) + 1),
        _ when blockName.StartsWith("blocks.", StringComparison.Ordinal) => "blocks",
        _ => "stage " + blockName["block".Length..blockName.IndexOf('.')],
    };

    /// <summary>The attention's input as the block hands it over: the whole map, or (Swin) the windows of it.</summary>
    private static (Tensor Input, long Height, long Width) AttentionInput(TokenAttention attn, Tensor normed, long side)
    {
        long? window = attn switch
        {
            PolaWindowAttention p => p.WindowSize,
            WindowAttention s => s.WindowSize,
            _ => null,
        };
        if (window is not { } w) return (normed, side, side);
        w = Math.Min(w, side);   // the official clamp: a window never exceeds the map
        long padded = (side + w - 1) / w * w, batch = normed.shape[0], channels = normed.shape[^1];
        var map = normed.view(batch, side, side, channels);
        if (padded != side) map = nn.functional.pad(map, [0, 0, 0, padded - side, 0, padded - side]);
        var windows = map.view(batch, padded / w, w, padded / w, w, channels).permute(0, 1, 3, 2, 4, 5).contiguous()
            .view(-1, w * w, channels);
        return (windows, w, w);
    }
}
