using PolaFormer.Attention;
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
/// TorchSharp runs forward hooks only through <c>call()</c>, and the models call <c>forward()</c>, so hooks never
/// fire. Instead one real batch-1 forward on the CPU (the meta device lacks kernels some layers use) reports
/// the token count of every block through <see cref="Backbone.IntermediateObserver"/>; each module is then placed in
/// the innermost observed block that contains it (by state-dict path) and counted at that block's token count.
/// Modules inside an attention layer take that layer's geometry: spatially reduced k/v (<c>kv</c> and the
/// <c>sr</c> convolution at n = (side/sr)² tokens), windows padded to a multiple of the window, the depthwise
/// convolution over heads folded into the batch (its d-channel kernel runs heads times per position).
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
        var tokens = new Dictionary<string, long>(StringComparer.Ordinal);
        var device = model.parameters().First().device;
        model.eval();
        model.IntermediateObserver = (scope, value) => tokens[scope] = value.shape[1];
        try
        {
            using var disposeScope = NewDisposeScope();
            using var noGrad = no_grad();
            model.forward(zeros(1, model.InChannels, size, size, device: device));
        }
        finally
        {
            model.IntermediateObserver = null;
        }

        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
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
            if (InsideAttention(path) is var (attentionPath, a))
            {
                var g = Geometry(attentionPath, a);
                return Leaf(path) == "kv" ? g.Keys : g.Queries;
            }
            return TokensOf(path) ?? 1;   // outside every observed block: the classifier, on one pooled vector
        }

        long ConvPositions(string path, Conv2d c)
        {
            if (InsideAttention(path) is var (attentionPath, a))
            {
                var g = Geometry(attentionPath, a);
                return Leaf(path) switch
                {
                    "sr" => g.Keys,
                    "dwc" => g.GridPositions * a.NumHeads,
                    var other => throw new InvalidOperationException($"Unknown convolution '{other}' in attention layer {attentionPath}."),
                };
            }
            if (TokensOf(path) is { } t) return t;   // a patch embedding: one position per output token
            if (c.in_channels != model.InChannels)
                throw new InvalidOperationException($"Cannot place convolution {path}: it is in no observed block and does not read the image.");
            long side = (size + 2 * (c.padding?[0] ?? 0) - c.kernel_size[0]) / c.stride[0] + 1;
            return side * side;
        }

        (string, TokenAttention)? InsideAttention(string path)
        {
            for (int dot = path.LastIndexOf('.'); dot > 0; dot = path.LastIndexOf('.', dot - 1))
                if (modules[path[..dot]] is TokenAttention a) return (path[..dot], a);
            return null;
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
            long blockTokens = TokensOf(path) ?? throw new InvalidOperationException($"No observed block contains attention layer {path}.");
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
        return a.Kind switch
        {
            // softmax: q·kᵀ and attn·v, each N·n·C (windowed: n = w², the window's own tokens)
            AttentionKind.Softmax => 2 * g.Queries * (g.WindowTokens ?? g.Keys) * c,
            // polarity, per head and stream: Kᵀv (2d × n × d/2), Q·(Kᵀv) (N × 2d × d/2), Q·mean(K) (N × 2d);
            // two streams: 2·n·d·C + 2·N·d·C + 4·N·C (windowed: n = N, summed over windows)
            AttentionKind.Polarity => 2 * g.Keys * d * c + 2 * g.Queries * d * c + 4 * g.Queries * c,
            _ => throw new InvalidOperationException($"Unknown attention kind {a.Kind}."),
        };
    }

    private static string Leaf(string path) => path[(path.LastIndexOf('.') + 1)..];

    /// <param name="Queries">Tokens that query (windowed: all windows, padded).</param>
    /// <param name="Keys">Tokens that k and v are computed for (after spatial reduction).</param>
    /// <param name="GridPositions">Positions the depthwise convolution runs over.</param>
    /// <param name="WindowTokens">Tokens per window (windowed layers only).</param>
    private sealed record AttentionGeometry(long Queries, long Keys, long GridPositions, long? WindowTokens);
}
