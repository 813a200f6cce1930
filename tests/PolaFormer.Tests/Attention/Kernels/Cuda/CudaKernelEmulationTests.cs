using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Attention.Kernels;
using PolaFormer.Attention.Kernels.Cuda;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention.Kernels.Cuda;

/// <summary>
/// The CUDA kernels' source run on the CPU (<see cref="HostEmulator"/>) through the same C# wrappers, argument lists
/// and autograd functions the GPU uses, against the LibTorch-operator path: index arithmetic, strides, bounds and
/// argument order checked without a GPU. Outputs start as NaN, so an element no thread writes fails.
/// </summary>
public sealed class CudaKernelEmulationTests : TorchTest
{
    private const double Epsilon = 1e-6;

    public static TheoryData<int, int, int, int, string> FeatureMapShapes() => new()
    {
        { 2, 3, 49, 32, "contiguous" },
        { 1, 1, 5, 2, "contiguous" },
        { 2, 2, 17, 12, "token-major" },   // the head-split view of a (B, N, heads, d) projection: read in place
        { 3, 2, 40, 8, "strided" },        // last dimension strided: copied first; B·N = 120 rows, not a multiple of a tile
        { 1, 8, 64, 64, "contiguous" },
    };

    [HostCompilerTheory]
    [MemberData(nameof(FeatureMapShapes))]
    public void The_feature_map_kernels_match_the_operator_version(int b, int h, int n, int d, string layout)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        var x = layout switch
        {
            "token-major" => (randn(b, n, h, d, generator: g) * 2).transpose(1, 2),
            "strided" => (randn(b, h, d, n, generator: g) * 2).transpose(2, 3),
            _ => randn(b, h, n, d, generator: g) * 2,
        };
        using (no_grad()) x[0, 0, 0, 0] = tensor(0f);                 // exact zeros take neither branch
        var power = 1 + 4 * sigmoid(randn(1, h, 1, d, generator: g));
        var r = randn(b, h, n, 2 * d, generator: g);

        var (y2, gx2, gp2) = PolarityFeatureMapTests.Run(x.contiguous(), power, r, PolarityAttention.SignSplitFeaturesFromOperators);
        foreach (var launcher in Launchers())
        {
            var (y1, gx1, gp1) = PolarityFeatureMapTests.Run(x, power, r, (xx, pp) => CudaFeatureMap.Apply(xx, pp, launcher));
            y1.ShouldBeClose(y2, 1e-6, "features");
            gx1.ShouldBeClose(gx2, 1e-5, "input gradient");
            gp1.ShouldBeClose(gp2, 1e-5, "power gradient");
            gp1.shape.Should().Equal(power.shape);
        }
    }

    [HostCompilerFact]
    public void Every_thread_order_and_grid_size_gives_the_same_bits()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(8);
        var x = randn(2, 3, 100, 16, generator: g);
        var power = 1 + 4 * sigmoid(randn(1, 3, 1, 16, generator: g));
        var r = randn(2, 3, 100, 32, generator: g);
        var results = Launchers().Select(l => PolarityFeatureMapTests.Run(x, power, r, (xx, pp) => CudaFeatureMap.Apply(xx, pp, l))).ToList();
        foreach (var (y, gx, gp) in results.Skip(1))
        {
            y.eq(results[0].Y).all().item<bool>().Should().BeTrue();
            gx.eq(results[0].Gx).all().item<bool>().Should().BeTrue();
            gp.eq(results[0].Gp).all().item<bool>().Should().BeTrue("the power's gradient is summed in a fixed order");
        }
    }

    [HostCompilerFact]
    public void A_power_shared_by_the_heads_gets_its_summed_gradient()
    {
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 7, 4);
        var power = full(1, 1, 1, 4, 2.5f);
        var r = randn(2, 3, 7, 8);
        var launcher = HostEmulator.Instance.Launcher();
        var (_, _, gp1) = PolarityFeatureMapTests.Run(x, power, r, (xx, pp) => CudaFeatureMap.Apply(xx, pp, launcher));
        var (_, _, gp2) = PolarityFeatureMapTests.Run(x, power, r, PolarityAttention.SignSplitFeaturesFromOperators);
        gp1.shape.Should().Equal(1, 1, 1, 4);
        gp1.ShouldBeClose(gp2, 1e-5, "power gradient summed over heads");
    }

    [HostCompilerFact]
    public void A_nan_input_gives_nan_features_as_the_operators_do()
    {
        using var scope = NewDisposeScope();
        var x = randn(1, 1, 3, 4);
        x[0, 0, 1, 2] = tensor(float.NaN);
        var power = full(1, 1, 1, 4, 2f);
        using var noGrad = no_grad();
        var features = CudaFeatureMap.Apply(x, power, HostEmulator.Instance.Launcher());
        var expected = PolarityAttention.SignSplitFeaturesFromOperators(x, power);
        features.isnan().eq(expected.isnan()).all().item<bool>().Should().BeTrue();
        features.isnan().sum().item<long>().Should().Be(2);
    }

    public static TheoryData<int, int, int, int, string> ReadoutShapes() => new()
    {
        { 2, 3, 49, 32, "contiguous" },
        { 1, 2, 300, 64, "strided" },      // local and gate as the layers pass them
        { 2, 1, 5, 6, "strided" },
        { 1, 4, 70, 2, "contiguous" },     // half = 1
        { 2, 2, 30, 16, "transposed" },    // channels not contiguous: copied first
    };

    [HostCompilerTheory]
    [MemberData(nameof(ReadoutShapes))]
    public void The_gated_readout_kernels_match_the_operator_version(int b, int h, int n, int d, string layout)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(11);
        var y = randn(b, h, n, d + 2, generator: g);
        y[.., .., .., d / 2] = rand(b, h, n, generator: g) + 0.5;
        y[.., .., .., d + 1] = rand(b, h, n, generator: g) + 0.5;
        var (local, gate) = layout switch
        {
            "strided" => (randn(b, h, n, d + 3, generator: g)[.., .., .., ..d], randn(b, n, 4, h * d, generator: g)[.., .., 3, ..]),
            "transposed" => (randn(b, h, d, n, generator: g).transpose(2, 3), randn(b, h * d, n, generator: g).transpose(1, 2)),
            _ => (randn(b, h, n, d, generator: g), randn(b, n, h * d, generator: g)),
        };
        var upstream = randn(b, n, h * d, generator: g);

        var reference = ReadoutRun(y, local, gate, upstream, ReadoutOperators);
        foreach (var launcher in Launchers())
        {
            var fused = ReadoutRun(y, local, gate, upstream, (yy, ll, gg) => CudaGatedReadout.Apply(yy, ll, gg, Epsilon, launcher));
            fused.Output.ShouldBeClose(reference.Output, 1e-6, "output");
            fused.GradY.ShouldBeClose(reference.GradY, 1e-5, "numerator and normaliser gradient");
            fused.GradLocal.ShouldBeClose(reference.GradLocal, 1e-6, "local gradient");
            fused.GradGate.ShouldBeClose(reference.GradGate, 1e-6, "gate gradient");
        }
        using (no_grad())
            CudaGatedReadout.Apply(y, local, gate, Epsilon, HostEmulator.Instance.Launcher()).ShouldBeClose(reference.Output, 1e-6, "no-gradient path");
    }

    [HostCompilerFact]
    public void The_layer_tail_from_the_kernels_matches_the_cpu_kernels()
    {
        // The chain ComputeGated runs on a GPU, with the emulated kernels in place of the CUDA ones: feature maps of q
        // and k, LibTorch's matmuls, then the gated readout; against the CPU path of ComputeGated itself.
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var (q, k, v) = (randn(2, 2, 36, 8, generator: g), randn(2, 2, 36, 8, generator: g), randn(2, 2, 36, 8, generator: g));
        var power = 1 + 4 * sigmoid(randn(1, 2, 1, 8, generator: g));
        var local = randn(2, 2, 36, 8, generator: g);
        var gate = randn(2, 36, 16, generator: g);
        var launcher = HostEmulator.Instance.Launcher();

        var expected = PolarityAttention.ComputeGated(q, k, v, power, local, gate, Epsilon, PolarityImplementation.Fast, null, PolarityPrecision.Float32Core);
        var qf = CudaFeatureMap.Apply(q, power, launcher);
        var kf = CudaFeatureMap.Apply(k, power, launcher);
        var kv = kf.transpose(-2, -1).matmul(cat([v[.., .., .., ..4], ones(2, 2, 36, 1), v[.., .., .., 4..], ones(2, 2, 36, 1)], -1)).div(36);
        var rhs = cat([kv[.., .., .., ..5], cat([kv[.., .., 8.., 5..], kv[.., .., ..8, 5..]], -2)], -1);
        var actual = CudaGatedReadout.Apply(qf.matmul(rhs), local, gate, Epsilon, launcher);
        actual.ShouldBeClose(expected, 1e-5, "(attention + local) · gate");
    }

    [HostCompilerFact]
    public void Argument_count_mismatches_are_caught()
    {
        using var scope = NewDisposeScope();
        var args = new KernelArguments();
        args.Add(1L);
        FluentActions.Invoking(() => HostEmulator.Instance.Launcher().Launch("polaformer_feature_map_forward", 1, ref args))
            .Should().Throw<InvalidOperationException>().WithMessage("*1 arguments*");
    }

    /// <summary>Forward order with the usual grid, reverse order, and a 3-block grid (every thread loops).</summary>
    private static IEnumerable<KernelLauncher> Launchers()
    {
        var emulator = HostEmulator.Instance;
        yield return emulator.Launcher();
        yield return emulator.Launcher(reverse: true);
        yield return emulator.Launcher(blocks: 3);
    }

    private static Tensor ReadoutOperators(Tensor y, Tensor local, Tensor gate)
    {
        long b = y.shape[0], h = y.shape[1], n = y.shape[2], half = (y.shape[3] - 2) / 2;
        var streams = y.unflatten(3, 2, half + 1);
        var readout = streams[.., .., .., .., ..(int)half].div(streams[.., .., .., .., (int)half..].add(Epsilon)).flatten(-2);
        return (readout + local).transpose(1, 2).reshape(b, n, h * 2 * half) * gate;
    }

    private static (Tensor Output, Tensor GradY, Tensor GradLocal, Tensor GradGate) ReadoutRun(Tensor y, Tensor local, Tensor gate,
        Tensor upstream, Func<Tensor, Tensor, Tensor, Tensor> tail)
    {
        var (yy, ll, gg) = (y.detach().clone().requires_grad_(true), local.detach().clone().requires_grad_(true), gate.detach().clone().requires_grad_(true));
        var (yIn, lIn, gIn) = (yy * 1, Same(local, ll), Same(gate, gg));
        var output = tail(yIn, lIn, gIn);
        (output * upstream).sum().backward();
        return (output.detach(), yy.grad!, ll.grad!, gg.grad!);
    }

    private static Tensor Same(Tensor layout, Tensor leaf) =>
        layout.is_contiguous() ? leaf * 1 : empty_strided(layout.shape, layout.stride()).copy_(leaf);
}
