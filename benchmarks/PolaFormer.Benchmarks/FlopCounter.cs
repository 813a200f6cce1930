using PolaFormer.Attention;
using PolaFormer.Layers;
using PolaFormer.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>Multiply–accumulates of one forward of one image, by kind of operation.</summary>
internal sealed record FlopCount(long LinearMacs, long ConvMacs, long AttentionMacs)
{
    public long Total => LinearMacs + ConvMacs + AttentionMacs;
}

/// <summary>
/// Counts the multiply–accumulates (MACs; 1 MAC = 1 "FLOP" in the convention of the Swin, PVT and PolaFormer papers
/// and of fvcore) of one forward of one image: every <see cref="Linear"/> and <see cref="Conv2d"/> (depthwise
/// included) from its weight and the number of positions it is applied to, plus the matmuls inside each attention
/// layer, analytically. Element-wise work (powers, softmax, LayerNorm, GELU, additions, the mean of the keys) is not
/// counted.
/// </summary>
/// <remarks>
/// Token counts come from one real batch-1 forward on the CPU (the meta device lacks kernels some layers use):
/// forward hooks (TorchSharp's <c>register_forward_hook</c>, which fire because the models call their blocks with
/// <c>call()</c>) record the token count of every block and patch merging and, through its projection, of every
/// patch embedding; each module is then placed in the innermost recorded scope that contains it (by state-dict path)
/// and counted at that scope's token count. PolaFormer++ runs its stages with <c>forward()</c>, where no hook fires:
/// its scopes come from <see cref="Backbone.ForwardIntermediates"/> (each stage's output map) and the stem's
/// convolutions, chained from the image size. Modules inside an attention layer take that layer's geometry:
/// spatially reduced k/v (<c>kv</c> and the <c>sr</c> convolution at n = (side/sr)² tokens), windows padded to a
/// multiple of the window, the depthwise convolution over heads folded into the batch (its d-channel kernel runs
/// heads times per position; PolaFormer++'s 5×5 <c>lepe</c> runs on all C channels once per position).
/// </remarks>
internal static class FlopCounter
{
    public static FlopCount Count(string name, long size)
    {
        using var model = ModelZoo.Create(name, size);
        return Count(model, size);
    }

    public static FlopCount Count(Backbone model, long size)
    {
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        model.eval();
        var tokens = model is PolaPlusPlus ? PlusPlusScopes(model, modules, size) : ObservedScopes(model, modules, size);
        long linear = 0, conv = 0, attention = 0;
        foreach (var (path, module) in modules)
        {
            switch (module)
            {
                case Linear l:
                    linear += l.weight.numel() * LinearPositions(path);
                    break;
                case Conv2d c:
                    conv += c.weight.numel() * ConvPositions(path, c);
                    break;
                case TokenAttention a:
                    attention += AttentionMatmuls(Geometry(path, a), a);
                    break;
            }
        }
        return new FlopCount(linear, conv, attention);

        long LinearPositions(string path)
        {
            if (InsideAttention(modules, path) is var (attentionPath, a))
            {
                var g = Geometry(attentionPath, a);
                return Leaf(path) == "kv" ? g.Keys : g.Queries;
            }
            return TokensOf(path) ?? 1;   // outside every recorded scope: the classifier, on one pooled vector
        }

        long ConvPositions(string path, Conv2d c)
        {
            if (InsideAttention(modules, path) is var (attentionPath, a))
            {
                var g = Geometry(attentionPath, a);
                return Leaf(path) switch
                {
                    "sr" => g.Keys,
                    "dwc" => g.GridPositions * a.NumHeads,
                    "lepe" => g.GridPositions,
                    var other => throw new InvalidOperationException($"Unknown convolution '{other}' in attention layer {attentionPath}."),
                };
            }
            if (TokensOf(path) is { } t) return t;   // a patch embedding (one position per output token) or a recorded convolution
            if (c.in_channels != model.InChannels)
                throw new InvalidOperationException($"Cannot place convolution {path}: it is in no recorded scope and does not read the image.");
            long side = (size + 2 * (c.padding?[0] ?? 0) - c.kernel_size[0]) / c.stride[0] + 1;
            return side * side;
        }

        long? TokensOf(string path)
        {
            for (string scope = path; ; scope = scope[..scope.LastIndexOf('.')])
            {
                if (tokens.TryGetValue(scope, out var t)) return t;
                if (!scope.Contains('.')) return null;
            }
        }

        AttentionGeometry Geometry(string path, TokenAttention a)
        {
            long blockTokens = TokensOf(path) ?? throw new InvalidOperationException($"No recorded scope contains attention layer {path}.");
            long prefix = a switch
            {
                PolaLinearAttention p => p.PrefixTokens,
                SpatialReductionAttention s => s.PrefixTokens,
                _ => 0,
            };
            long grid = blockTokens - prefix;
            long side = (long)Math.Round(Math.Sqrt(grid));
            if (side * side != grid) throw new InvalidOperationException($"Attention layer {path} sees {grid} grid tokens, not a square grid.");
            switch (a)
            {
                case PolaWindowAttention or WindowAttention:
                {
                    long window = a is PolaWindowAttention pw ? pw.WindowSize : ((WindowAttention)a).WindowSize;
                    long padded = (side + window - 1) / window * window;
                    return new AttentionGeometry(padded * padded, padded * padded, padded * padded, window * window);
                }
                case PaCSAttention or VanillaSelfAttention:
                    return new AttentionGeometry(blockTokens, blockTokens, grid, null);   // the whole map, no reduction
                default:
                {
                    long sr = a is PolaLinearAttention p ? p.SrRatio : ((SpatialReductionAttention)a).SrRatio;
                    long keys = sr > 1 ? (side / sr) * (side / sr) : blockTokens;
                    return new AttentionGeometry(blockTokens, keys, grid, null);
                }
            }
        }
    }

    /// <summary>The matmuls of one attention layer (C channels, d per head; per window for windowed layers).</summary>
    private static long AttentionMatmuls(AttentionGeometry g, TokenAttention a)
    {
        long c = a.Dim, d = a.HeadDim;
        // softmax: q·kᵀ and attn·v, each N·n·C (windowed: n = w², the window's own tokens). PolaFormer++'s 'V'
        // (softmax with RoPE) is the same over the whole map; the rotation is element-wise.
        long Softmax() => 2 * g.Queries * (g.WindowTokens ?? g.Keys) * c;
        // polarity, per head and stream: Kᵀv (2d × n × d/2), Q·(Kᵀv) (N × 2d × d/2), Q·mean(K) (N × 2d);
        // two streams: 2·n·d·C + 2·N·d·C + 4·N·C (windowed: n = N, summed over windows). PolaFormer++'s 'P' (PaCS)
        // has the same products: the rotated keys (2d wide) against each half of v, the rotated queries of both
        // streams against them, and both query streams against the mean key; exp − 1 and the rotation are element-wise.
        long Polarity() => 2 * g.Keys * d * c + 2 * g.Queries * d * c + 4 * g.Queries * c;
        return a switch
        {
            PaCSAttention => Polarity(),
            VanillaSelfAttention => Softmax(),
            _ => a.Kind switch
            {
                AttentionKind.Softmax => Softmax(),
                AttentionKind.Polarity => Polarity(),
                _ => throw new InvalidOperationException($"Unknown attention kind '{a.Letter}' ({a.GetType().Name})."),
            },
        };
    }

    /// <summary>Token counts by scope from forward hooks during one batch-1 forward: every block and patch merging
    /// (a module called with (tokens, height, width)) at its output's token count, every <see cref="PatchEmbed"/> at
    /// the positions of its projection's output.</summary>
    private static Dictionary<string, long> ObservedScopes(Backbone model, Dictionary<string, nn.Module> modules, long size)
    {
        var tokens = new Dictionary<string, long>(StringComparer.Ordinal);
        var removers = new List<Action>();
        try
        {
            foreach (var (path, module) in modules)
            {
                if (module is TokenAttention || InsideAttention(modules, path) is not null) continue;
                switch (module)
                {
                    case nn.Module<Tensor, long, long, Tensor> grid:
                        removers.Add(grid.register_forward_hook((_, _, _, _, output) =>
                        {
                            tokens[path] = output.shape[1];
                            return output;
                        }).remove);
                        break;
                    case PatchEmbed when modules[path + ".proj"] is Conv2d projection:
                        removers.Add(projection.register_forward_hook((_, _, output) =>
                        {
                            tokens[path] = output.shape[2] * output.shape[3];
                            return output;
                        }).remove);
                        break;
                }
            }
            var device = model.parameters().First().device;
            using var disposeScope = NewDisposeScope();
            using var noGrad = no_grad();
            model.forward(zeros(1, model.InChannels, size, size, device: device));
        }
        finally
        {
            foreach (var remove in removers) remove();
        }
        return tokens;
    }

    /// <summary>Token counts by scope for PolaFormer++, whose stages run through <c>forward()</c> (no hook fires):
    /// each stem convolution at its own output positions (chained from the image size), each stage
    /// (<c>layers.i</c>) at the positions of its input map — the stem's output, then stage i − 1's output from
    /// <see cref="Backbone.ForwardIntermediates"/> — and its downsampling at those of its output; the 1×1 projection at
    /// the last map, the classifier at the pooled vector.</summary>
    private static Dictionary<string, long> PlusPlusScopes(Backbone model, Dictionary<string, nn.Module> modules, long size)
    {
        var tokens = new Dictionary<string, long>(StringComparer.Ordinal);
        long height = size, width = size;
        foreach (var (path, module) in modules)
        {
            if (!path.StartsWith("patch_embed.", StringComparison.Ordinal) || module is not Conv2d c) continue;
            height = (height + 2 * (c.padding?[0] ?? 0) - c.kernel_size[0]) / c.stride[0] + 1;
            width = (width + 2 * (c.padding?[1] ?? 0) - c.kernel_size[1]) / c.stride[1] + 1;
            tokens[path] = height * width;
        }
        var device = model.parameters().First().device;
        using var disposeScope = NewDisposeScope();
        using var noGrad = no_grad();
        var maps = model.ForwardIntermediates(zeros(1, model.InChannels, size, size, device: device));
        for (int i = 0; i < maps.Count; i++)
        {
            string stage = model.FeatureInfo[i].Name;
            tokens[stage] = height * width;   // the stage's blocks run on its input map
            (height, width) = (maps[i].shape[2], maps[i].shape[3]);
            if (modules.ContainsKey(stage + ".downsample")) tokens[stage + ".downsample"] = height * width;
        }
        tokens["proj"] = height * width;
        tokens["head"] = 1;
        return tokens;
    }

    /// <summary>The attention layer that contains the module at <paramref name="path"/>, if any.</summary>
    private static (string Path, TokenAttention Layer)? InsideAttention(Dictionary<string, nn.Module> modules, string path)
    {
        for (int dot = path.LastIndexOf('.'); dot > 0; dot = path.LastIndexOf('.', dot - 1))
            if (modules[path[..dot]] is TokenAttention a) return (path[..dot], a);
        return null;
    }

    private static string Leaf(string path) => path[(path.LastIndexOf('.') + 1)..];

    /// <param name="Queries">Tokens that query (windowed: all windows, padded).</param>
    /// <param name="Keys">Tokens that k and v are computed for (after spatial reduction).</param>
    /// <param name="GridPositions">Positions the depthwise convolution runs over.</param>
    /// <param name="WindowTokens">Tokens per window (windowed layers only).</param>
    private sealed record AttentionGeometry(long Queries, long Keys, long GridPositions, long? WindowTokens);
}
