using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Attention.Kernels.Cuda;

/// <summary>
/// The end of a polarity layer on CUDA float32 tensors, forward and backward: the readout of both streams
/// (numerator / (normaliser + eps)), the merge of the heads into channels, the depthwise convolution's term and the
/// output gate, <c>out = (readout + local) · gate</c>. The counterpart of <see cref="GatedReadout"/>, same semantics
/// and layouts.
/// </summary>
internal static class CudaGatedReadout
{
    public static readonly CudaSource Source = new("polaformer_gated_readout.cu", Code,
        ["polaformer_gated_readout_forward", "polaformer_gated_readout_backward"]);

    // Design as in the feature map: no shared memory, no atomics, no communication between threads, every output
    // element written by exactly one thread, 64-bit indices. The forward is one thread per output element; the
    // backward one thread per (b, head, token, stream), because the normaliser's gradient is a sum over the stream's
    // d/2 channels, which that thread adds in channel order.
    private const string Code = """
        // y: (B, H, N, d + 2) contiguous: per head and token, stream 0's d/2 numerators and its normaliser, then
        // stream 1's. local: (B, H, N, d) at strides (lB, lH, lN, 1). gate: (B, N, H*d) at strides (gB, gN, 1).
        // out: (B, N, H*d) contiguous. One work item per output element: item = (b*N + t)*H*d + h*d + c.
        extern "C" __global__ void polaformer_gated_readout_forward(
            const float* __restrict__ y, const float* __restrict__ local, const float* __restrict__ gate,
            float* __restrict__ out,
            long long heads, long long tokens, long long d,
            long long localB, long long localH, long long localN, long long gateB, long long gateN,
            float epsilon, long long items)
        {
            const long long step = (long long)gridDim.x * blockDim.x;
            const long long channels = heads * d;
            const long long half = d / 2;
            for (long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x; item < items; item += step)
            {
                const long long channel = item % channels;
                const long long bt = item / channels;       // b*N + t
                const long long t = bt % tokens;
                const long long b = bt / tokens;
                const long long h = channel / d;
                const long long c = channel % d;
                const long long stream = c / half;          // 0 or 1
                const long long j = c - stream * half;
                const float* streamRow = y + ((b * heads + h) * tokens + t) * (d + 2) + stream * (half + 1);
                const float normaliser = streamRow[half] + epsilon;
                const float l = local[b * localB + h * localH + t * localN + c];
                const float g = gate[b * gateB + t * gateN + channel];
                out[item] = (streamRow[j] / normaliser + l) * g;
            }
        }

        // With a = numerator / normaliser and e = dOut * gate, per channel: dNumerator = e / normaliser, dLocal = e,
        // dGate = dOut * (a + local); per stream: dNormaliser = -sum over its channels of dNumerator * a.
        // gradOut: (B, N, H*d) contiguous; gradY like y, gradLocal (B, H, N, d) and gradGate (B, N, H*d) contiguous.
        // One work item per (b, h, t, stream): item = ((b*H + h)*N + t)*2 + stream.
        extern "C" __global__ void polaformer_gated_readout_backward(
            const float* __restrict__ y, const float* __restrict__ local, const float* __restrict__ gate,
            const float* __restrict__ gradOut, float* __restrict__ gradY, float* __restrict__ gradLocal,
            float* __restrict__ gradGate,
            long long heads, long long tokens, long long d,
            long long localB, long long localH, long long localN, long long gateB, long long gateN,
            float epsilon, long long items)
        {
            const long long step = (long long)gridDim.x * blockDim.x;
            const long long channels = heads * d;
            const long long half = d / 2;
            for (long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x; item < items; item += step)
            {
                const long long stream = item % 2;
                const long long row = item / 2;             // (b*H + h)*N + t
                const long long t = row % tokens;
                const long long bh = row / tokens;
                const long long h = bh % heads;
                const long long b = bh / heads;
                const long long first = stream * half;      // the stream's first channel within the head
                const long long streamAt = row * (d + 2) + stream * (half + 1);
                const float normaliser = y[streamAt + half] + epsilon;
                const float* l = local + b * localB + h * localH + t * localN + first;
                const float* g = gate + b * gateB + t * gateN + h * d + first;
                const long long outAt = (b * tokens + t) * channels + h * d + first;
                float normaliserGrad = 0.0f;
                for (long long j = 0; j < half; ++j)
                {
                    const float readout = y[streamAt + j] / normaliser;
                    const float upstream = gradOut[outAt + j];
                    const float gated = upstream * g[j];
                    const float numeratorGrad = gated / normaliser;
                    gradY[streamAt + j] = numeratorGrad;
                    gradLocal[row * d + first + j] = gated;
                    gradGate[outAt + j] = upstream * (readout + l[j]);
                    normaliserGrad -= numeratorGrad * readout;
                }
                gradY[streamAt + half] = normaliserGrad;
            }
        }
        """;

    /// <summary>Whether the kernels take this layer: CUDA float32 queries, local and gate on one device, and the
    /// kernels available there.</summary>
    internal static bool TryGetLauncher(Tensor queries, Tensor local, Tensor gate, out KernelLauncher launcher)
    {
        launcher = null!;
        if (queries.dtype != ScalarType.Float32 || local.dtype != ScalarType.Float32 || gate.dtype != ScalarType.Float32
            || queries.dim() != 4 || local.numel() == 0
            || local.device_type != queries.device_type || local.device_index != queries.device_index
            || gate.device_type != queries.device_type || gate.device_index != queries.device_index)
            return false;
        var found = CudaKernels.LauncherFor(queries);
        if (found is null) return false;
        launcher = found;
        return true;
    }

    /// <summary>
    /// y (B, heads, N, d + 2) as <see cref="GatedReadout.Apply"/> takes it; local (B, heads, N, d); gate
    /// (B, N, heads·d) → (B, N, heads·d), on y's device.
    /// </summary>
    public static Tensor Apply(Tensor y, Tensor local, Tensor gate, double epsilon, KernelLauncher launcher)
    {
        long batch = y.shape[0], heads = y.shape[1], tokens = y.shape[2], d = y.shape[3] - 2;
        if (d < 2 || d % 2 != 0)
            throw new ArgumentException($"y has shape {Check.Format(y.shape)}; its last dimension must be d + 2 with d even and at least 2.", nameof(y));
        if (!local.shape.SequenceEqual([batch, heads, tokens, d]))
            throw new ArgumentException($"local has shape {Check.Format(local.shape)}; expected (B={batch}, heads={heads}, N={tokens}, d={d}).", nameof(local));
        if (!gate.shape.SequenceEqual([batch, tokens, heads * d]))
            throw new ArgumentException($"gate has shape {Check.Format(gate.shape)}; expected (B={batch}, N={tokens}, C={heads * d}).", nameof(gate));
        foreach (var (t, name) in new[] { (y, nameof(y)), (local, nameof(local)), (gate, nameof(gate)) })
            if (t.dtype != ScalarType.Float32 || t.device_type != y.device_type || t.device_index != y.device_index)
                throw new ArgumentException($"{name} is {t.dtype} on {t.device}; expected float32 on {y.device}.", name);
        y = y.is_contiguous() ? y : y.contiguous();
        if (local.stride(3) != 1) local = local.contiguous();
        if (gate.stride(2) != 1) gate = gate.contiguous();
        if (is_grad_enabled() && (y.requires_grad || local.requires_grad || gate.requires_grad))
            return Function.apply(y, local, gate, epsilon, launcher);
        return Forward(launcher, y, local, gate, (float)epsilon);
    }

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "PolaFormerCudaGatedReadout";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (y, local, gate, epsilon, launcher) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (double)vars[3], (KernelLauncher)vars[4]);
            var output = Forward(launcher, y, local, gate, (float)epsilon);
            ctx.save_for_backward([y, local, gate]);
            ctx.save_data("epsilon", epsilon);
            ctx.save_data("launcher", launcher);
            return output;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (y, local, gate) = (saved[0], saved[1], saved[2]);
            var epsilon = (float)(double)ctx.get_data("epsilon");
            var launcher = (KernelLauncher)ctx.get_data("launcher");
            var (gradY, gradLocal, gradGate) = Backward(launcher, y, local, gate, epsilon, gradOutput.contiguous());
            return [gradY, gradLocal, gradGate, null!, null!];   // one entry per argument of apply: none for epsilon, launcher
        }
    }

    private static void AddLayout(ref KernelArguments args, Tensor y, Tensor local, Tensor gate, float epsilon)
    {
        args.Add(y.shape[1]);          // heads
        args.Add(y.shape[2]);          // tokens
        args.Add(y.shape[3] - 2);      // d
        args.Add(local.stride(0));
        args.Add(local.stride(1));
        args.Add(local.stride(2));
        args.Add(gate.stride(0));
        args.Add(gate.stride(1));
        args.Add(epsilon);
    }

    internal static Tensor Forward(KernelLauncher launcher, Tensor y, Tensor local, Tensor gate, float epsilon)
    {
        RequireLayouts(y, local, gate);
        var output = empty(gate.shape, dtype: ScalarType.Float32, device: y.device);
        launcher.PrepareOutput(output);
        long items = output.numel();
        var args = new KernelArguments();
        args.Add(y);
        args.Add(local);
        args.Add(gate);
        args.Add(output);
        AddLayout(ref args, y, local, gate, epsilon);
        args.Add(items);
        launcher.Launch("polaformer_gated_readout_forward", items, ref args);
        return output;
    }

    internal static (Tensor GradY, Tensor GradLocal, Tensor GradGate) Backward(KernelLauncher launcher, Tensor y, Tensor local, Tensor gate,
        float epsilon, Tensor gradOutput)
    {
        RequireLayouts(y, local, gate);
        if (!gradOutput.shape.SequenceEqual(gate.shape) || !gradOutput.is_contiguous() || gradOutput.dtype != ScalarType.Float32)
            throw new ArgumentException($"the output gradient must be contiguous float32 {Check.Format(gate.shape)}; got {gradOutput.dtype} {Check.Format(gradOutput.shape)}.");
        var gradY = empty(y.shape, dtype: ScalarType.Float32, device: y.device);
        var gradLocal = empty(local.shape, dtype: ScalarType.Float32, device: y.device);
        var gradGate = empty(gate.shape, dtype: ScalarType.Float32, device: y.device);
        launcher.PrepareOutput(gradY);
        launcher.PrepareOutput(gradLocal);
        launcher.PrepareOutput(gradGate);
        long items = y.shape[0] * y.shape[1] * y.shape[2] * 2;
        var args = new KernelArguments();
        args.Add(y);
        args.Add(local);
        args.Add(gate);
        args.Add(gradOutput);
        args.Add(gradY);
        args.Add(gradLocal);
        args.Add(gradGate);
        AddLayout(ref args, y, local, gate, epsilon);
        args.Add(items);
        launcher.Launch("polaformer_gated_readout_backward", items, ref args);
        return (gradY, gradLocal, gradGate);
    }

    /// <summary>The layouts the kernels index: y contiguous, local's and gate's channels contiguous.</summary>
    private static void RequireLayouts(Tensor y, Tensor local, Tensor gate)
    {
        if (!y.is_contiguous() || local.stride(3) != 1 || gate.stride(2) != 1)
            throw new ArgumentException("y must be contiguous and local's and gate's last dimensions contiguous.");
    }
}
