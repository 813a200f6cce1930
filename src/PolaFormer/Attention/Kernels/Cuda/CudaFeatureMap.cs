using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels.Cuda;

/// <summary>
/// The polarity feature map <c>[relu(x)^p, relu(−x)^p]</c> on CUDA float32 tensors, forward and backward, as the
/// kernels below: the counterpart of <see cref="PolarityFeatureMap"/> (same semantics, same custom-autograd shape).
/// From LibTorch operators the map is about ten elementwise passes forward and more backward (the power's gradient
/// alone needs a logarithm pass); here each pass reads every element once.
/// </summary>
internal static class CudaFeatureMap
{
    /// <summary>Rows of one head that one backward thread walks for its channel; fixed (not derived from the device)
    /// so the power's gradient is summed in the same order, and so to the same bits, on every GPU.</summary>
    internal const long RowsPerTile = 32;

    public static readonly CudaSource Source = new("polaformer_feature_map.cu", Code,
        ["polaformer_feature_map_forward", "polaformer_feature_map_backward"]);

    // Design: no shared memory, no atomics, no communication between threads. Every output element is written by
    // exactly one thread, so there is nothing to race on and the result does not depend on the schedule. Indices are
    // 64-bit throughout. The backward writes the power's gradient as one partial sum (double) per (head, tile of
    // RowsPerTile rows, channel); the caller sums the tiles with LibTorch (a deterministic reduction).
    private const string Code = """
        // x: (B, H, N, d) at strides (sB, sH, sN, 1); exponents: (H, d) dense; features: (B, H, N, 2d) contiguous.
        // One work item per element of x: item = ((b*H + h)*N + t)*d + c, so consecutive threads read consecutive
        // channels of a row.
        extern "C" __global__ void polaformer_feature_map_forward(
            const float* __restrict__ x, const float* __restrict__ exponents, float* __restrict__ features,
            long long heads, long long tokens, long long d,
            long long strideB, long long strideH, long long strideN, long long items)
        {
            const long long step = (long long)gridDim.x * blockDim.x;
            for (long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x; item < items; item += step)
            {
                const long long c = item % d;
                const long long row = item / d;            // (b*H + h)*N + t
                const long long t = row % tokens;
                const long long bh = row / tokens;
                const long long h = bh % heads;
                const long long b = bh / heads;
                const float v = x[b * strideB + h * strideH + t * strideN + c];
                const float p = exponents[h * d + c];
                // |x|^p, 0 at x = 0 (exact zeros take neither branch). A NaN input gives NaN in both halves, as the
                // operator version (NaN * mask) does, rather than vanishing.
                const float magnitude = v == 0.0f ? 0.0f : powf(fabsf(v), p);
                const bool isNan = v != v;
                float* out = features + row * 2 * d;
                out[c] = (v > 0.0f || isNan) ? magnitude : 0.0f;
                out[d + c] = (v < 0.0f || isNan) ? magnitude : 0.0f;
            }
        }

        // With a = |x|^p (read back from the saved features) and g the incoming gradient of the half that x's sign
        // selected: dx = sign(x) * g * p * a / |x|, and dp gets g * a * ln|x|; x = 0 gets dx = 0 and adds nothing.
        // One work item per (head, tile, channel): item = (h*tilesPerHead + tile)*d + c. It walks the tile's rows
        // r = tile*rowsPerTile ... (rows of head h across the batch, r = b*N + t) for channel c, writes dx for each,
        // and writes the tile's sum of the dp terms (double) to partial[item], laid out (H, tilesPerHead, d).
        extern "C" __global__ void polaformer_feature_map_backward(
            const float* __restrict__ x, const float* __restrict__ exponents, const float* __restrict__ features,
            const float* __restrict__ gradFeatures, float* __restrict__ gradX, double* __restrict__ partial,
            long long batch, long long heads, long long tokens, long long d,
            long long strideB, long long strideH, long long strideN,
            long long tilesPerHead, long long rowsPerTile, long long items)
        {
            const long long step = (long long)gridDim.x * blockDim.x;
            const long long rowsPerHead = batch * tokens;
            for (long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x; item < items; item += step)
            {
                const long long c = item % d;
                const long long ht = item / d;             // h*tilesPerHead + tile
                const long long tile = ht % tilesPerHead;
                const long long h = ht / tilesPerHead;
                const float p = exponents[h * d + c];
                const long long first = tile * rowsPerTile;
                const long long end = first + rowsPerTile < rowsPerHead ? first + rowsPerTile : rowsPerHead;
                double sum = 0.0;
                for (long long r = first; r < end; ++r)
                {
                    const long long b = r / tokens;
                    const long long t = r % tokens;
                    const long long row = (b * heads + h) * tokens + t;
                    const float v = x[b * strideB + h * strideH + t * strideN + c];
                    float dx = 0.0f;
                    if (v != 0.0f)
                    {
                        const bool positive = v > 0.0f;
                        const float a = positive ? features[row * 2 * d + c] : features[row * 2 * d + d + c];
                        const float g = positive ? gradFeatures[row * 2 * d + c] : gradFeatures[row * 2 * d + d + c];
                        const float magnitude = fabsf(v);
                        dx = (positive ? 1.0f : -1.0f) * g * p * (a / magnitude);
                        sum += (double)(g * a * logf(magnitude));
                    }
                    gradX[row * d + c] = dx;
                }
                partial[item] = sum;
            }
        }
        """;

    /// <summary>Whether the kernels take this call: a CUDA float32 x (B, heads, N, d), power on the same device,
    /// and the kernels available there.</summary>
    internal static bool TryGetLauncher(Tensor x, Tensor power, out KernelLauncher launcher)
    {
        launcher = null!;
        if (x.dtype != ScalarType.Float32 || power.dtype != ScalarType.Float32 || x.dim() != 4 || x.numel() == 0
            || power.device_type != x.device_type || power.device_index != x.device_index)
            return false;
        var found = CudaKernels.LauncherFor(x);
        if (found is null) return false;
        launcher = found;
        return true;
    }

    /// <summary>x (B, heads, N, d), power broadcastable to (1, heads, 1, d) → (B, heads, N, 2d), on x's device.</summary>
    /// <remarks>x may be any view whose last dimension is contiguous (it is read in place); anything else is copied.</remarks>
    public static Tensor Apply(Tensor x, Tensor power, KernelLauncher launcher)
    {
        if (x.stride(3) != 1) x = x.contiguous();
        if (is_grad_enabled() && (x.requires_grad || power.requires_grad)) return Function.apply(x, power, launcher);
        using var exponents = Exponents(power, x.shape[1], x.shape[3]);
        return Forward(launcher, x, exponents);
    }

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "PolaFormerCudaPolarityFeatureMap";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (x, power, launcher) = ((Tensor)vars[0], (Tensor)vars[1], (KernelLauncher)vars[2]);
            using var exponents = Exponents(power, x.shape[1], x.shape[3]);
            var output = Forward(launcher, x, exponents);
            ctx.save_for_backward([x, power, output]);
            ctx.save_data("launcher", launcher);
            return output;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (x, power, output) = (saved[0], saved[1], saved[2]);
            var launcher = (KernelLauncher)ctx.get_data("launcher");
            long heads = x.shape[1], d = x.shape[3];
            using var scope = NewDisposeScope();
            var exponents = Exponents(power, heads, d);
            var (gradX, gradExponent) = Backward(launcher, x, exponents, output, gradOutput.contiguous());
            var gradPower = SumToShape(gradExponent.reshape(1, heads, 1, d), power.shape);
            return [gradX.MoveToOuterDisposeScope(), gradPower.MoveToOuterDisposeScope(), null!];   // none for the launcher
        }
    }

    /// <summary>The exponent per (head, channel), dense float32 on the power's device.</summary>
    private static Tensor Exponents(Tensor power, long heads, long d) =>
        power.detach().expand(1, heads, 1, d).contiguous();

    private static Tensor SumToShape(Tensor t, long[] shape)
    {
        int lead = (int)t.dim() - shape.Length;
        var dims = new List<long>();
        for (int i = 0; i < t.dim(); i++)
            if (i < lead || shape[i - lead] == 1 && t.shape[i] != 1) dims.Add(i);
        var summed = dims.Count == 0 ? t : t.sum(dims.ToArray(), keepdim: true);
        return summed.reshape(shape);
    }

    internal static Tensor Forward(KernelLauncher launcher, Tensor x, Tensor exponents)
    {
        long batch = x.shape[0], heads = x.shape[1], tokens = x.shape[2], d = x.shape[3];
        Require(x, exponents, heads, d);
        var features = empty([batch, heads, tokens, 2 * d], dtype: ScalarType.Float32, device: x.device);
        launcher.PrepareOutput(features);
        var args = new KernelArguments();
        args.Add(x);
        args.Add(exponents);
        args.Add(features);
        args.Add(heads);
        args.Add(tokens);
        args.Add(d);
        args.Add(x.stride(0));
        args.Add(x.stride(1));
        args.Add(x.stride(2));
        args.Add(x.numel());
        launcher.Launch("polaformer_feature_map_forward", x.numel(), ref args);
        return features;
    }

    /// <summary>The input gradient (B, heads, N, d), contiguous, and the exponent gradient (heads, d) in float32.</summary>
    internal static (Tensor GradX, Tensor GradExponent) Backward(KernelLauncher launcher, Tensor x, Tensor exponents, Tensor features, Tensor gradFeatures)
    {
        long batch = x.shape[0], heads = x.shape[1], tokens = x.shape[2], d = x.shape[3];
        Require(x, exponents, heads, d);
        long[] featureShape = [batch, heads, tokens, 2 * d];
        if (!features.shape.SequenceEqual(featureShape) || !features.is_contiguous() || !gradFeatures.shape.SequenceEqual(featureShape) || !gradFeatures.is_contiguous())
            throw new ArgumentException($"features and their gradient must be contiguous {Check.Format(featureShape)}; got {Check.Format(features.shape)} and {Check.Format(gradFeatures.shape)}.");
        long tilesPerHead = (batch * tokens + RowsPerTile - 1) / RowsPerTile;
        long items = heads * tilesPerHead * d;
        var gradX = empty([batch, heads, tokens, d], dtype: ScalarType.Float32, device: x.device);
        using var partial = empty([heads, tilesPerHead, d], dtype: ScalarType.Float64, device: x.device);
        launcher.PrepareOutput(gradX);
        launcher.PrepareOutput(partial);
        var args = new KernelArguments();
        args.Add(x);
        args.Add(exponents);
        args.Add(features);
        args.Add(gradFeatures);
        args.Add(gradX);
        args.Add(partial);
        args.Add(batch);
        args.Add(heads);
        args.Add(tokens);
        args.Add(d);
        args.Add(x.stride(0));
        args.Add(x.stride(1));
        args.Add(x.stride(2));
        args.Add(tilesPerHead);
        args.Add(RowsPerTile);
        args.Add(items);
        launcher.Launch("polaformer_feature_map_backward", items, ref args);
        // The tiles of each (head, channel) summed in double by LibTorch, then rounded once to float.
        using var total = partial.sum(1);
        return (gradX, total.to_type(ScalarType.Float32));
    }

    /// <summary>The kernels read raw memory: shapes, dtypes, devices and layouts are checked here, not trusted.</summary>
    private static void Require(Tensor x, Tensor exponents, long heads, long d)
    {
        if (x.dim() != 4 || x.dtype != ScalarType.Float32 || x.stride(3) != 1)
            throw new ArgumentException($"x must be a float32 (B, heads, N, d) tensor with a contiguous last dimension; got {x.dtype} {Check.Format(x.shape)}.");
        if (!exponents.shape.SequenceEqual([1, heads, 1, d]) || !exponents.is_contiguous() || exponents.dtype != ScalarType.Float32)
            throw new ArgumentException($"exponents must be contiguous float32 (1, {heads}, 1, {d}); got {exponents.dtype} {Check.Format(exponents.shape)}.");
        if (exponents.device_type != x.device_type || exponents.device_index != x.device_index)
            throw new ArgumentException($"exponents are on {exponents.device}, x on {x.device}.");
    }
}
