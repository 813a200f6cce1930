using PolaFormer.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Layers;

/// <summary>
/// Resizes a learnt positional encoding laid out on a 2-D token grid to another grid with bicubic interpolation,
/// so models run at sizes other than the one they were built (or trained) for.
/// </summary>
/// <remarks>
/// At the built size the parameter itself is returned (bit-identical to the official code). Other sizes are
/// resized on every call while gradients are enabled (the parameter is being trained, so a cached copy would go
/// stale); in inference (no_grad) the resized tensor is cached per size, dtype and device. It is a (parameterless)
/// child module of the layer that owns the encoding, so the cache is dropped whenever that layer changes mode
/// (<c>train</c>/<c>eval</c>), is disposed, or gets new weights through <see cref="StateDictLoader"/>.
/// </remarks>
internal sealed class PositionalEncodingResizer : nn.Module, IDerivedStateCache
{
    private readonly Dictionary<(long Height, long Width, ScalarType Dtype, string Device), Tensor> _cache = new();

    public PositionalEncodingResizer(long height, long width) : base(nameof(PositionalEncodingResizer))
    {
        Height = height;
        Width = width;
    }

    /// <summary>Grid the encoding was built for.</summary>
    public long Height { get; }

    /// <summary>Grid the encoding was built for.</summary>
    public long Width { get; }

    /// <summary>The encoding (1, height·width, C) for a grid of <paramref name="height"/> × <paramref name="width"/>.</summary>
    public Tensor Resize(Tensor encoding, long height, long width)
    {
        if (height == Height && width == Width) return encoding;
        bool cacheable = !is_grad_enabled() || !encoding.requires_grad;
        var key = (height, width, encoding.dtype, encoding.device.ToString());
        if (cacheable && _cache.TryGetValue(key, out var cached)) return cached;

        Tensor resized;
        using (var scope = NewDisposeScope())
        {
            long channels = encoding.shape[^1];
            var grid = encoding.reshape(1, Height, Width, channels).permute(0, 3, 1, 2);
            resized = nn.functional.interpolate(grid, size: [height, width], mode: InterpolationMode.Bicubic, align_corners: false)
                .permute(0, 2, 3, 1).reshape(1, height * width, channels)
                .MoveToOuterDisposeScope();
        }
        if (!cacheable) return resized;
        resized = resized.detach().DetachFromDisposeScope();
        _cache[key] = resized;
        return resized;
    }

    /// <summary>Drops the cached sizes.</summary>
    public void Invalidate()
    {
        foreach (var t in _cache.Values) t.Dispose();
        _cache.Clear();
    }

    void IDerivedStateCache.InvalidateDerivedState() => Invalidate();

    public override void train(bool train = true)
    {
        Invalidate();
        base.train(train);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Invalidate();
        base.Dispose(disposing);
    }
}
