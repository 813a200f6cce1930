using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Training.Optimization;

/// <summary>
/// AdamW over a <see cref="FlatParameters"/> state: TorchSharp's update rule (decoupled weight decay, bias
/// correction, ε added after the square root), evaluated once per parameter group on the group's contiguous run of
/// the flat buffers — about eight kernel launches per group instead of eight per parameter tensor. On a GPU the
/// per-tensor loop is host-bound (hundreds of launches a step); PyTorch avoids it with its multi-tensor
/// (<c>foreach</c>) AdamW, which TorchSharp does not expose.
/// <para>The moments live in two flat buffers laid out like the parameters. The per-parameter state of TorchSharp's
/// <see cref="TorchSharp.Modules.AdamW"/> (<see cref="Optimizer"/>) is kept, its moment tensors being views of those
/// buffers, so checkpoints are written and read in exactly the format TorchSharp's AdamW uses
/// (<c>save_state_dict</c> / <c>load_state_dict</c> on <see cref="Optimizer"/>), and learning rates are set through
/// its <c>ParamGroups</c> as before.</para>
/// <para>Every parameter of a group takes a step together: a parameter that received no gradient in a step is
/// updated with a zero gradient (its moments decay and weight decay applies), where TorchSharp's loop would skip it.
/// For models whose parameters all take part in every forward pass the two are the same.</para>
/// </summary>
public sealed class FlatAdamW : IDisposable
{
    private readonly FlatParameters _parameters;
    private readonly AdamW.State[][] _states;

    /// <summary>Creates the optimiser with zero moments.</summary>
    /// <param name="parameters">The flat training state (its groups become the optimiser's parameter groups).</param>
    /// <param name="weightDecays">Weight decay of each group, in the order of <see cref="FlatParameters.Groups"/>.</param>
    /// <param name="lr">Learning rate of every group.</param>
    /// <param name="beta1">First-moment decay.</param>
    /// <param name="beta2">Second-moment decay.</param>
    /// <param name="eps">Added to the denominator after the square root.</param>
    public FlatAdamW(FlatParameters parameters, IReadOnlyList<double> weightDecays, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(weightDecays);
        if (!parameters.HasGradients)
            throw new ArgumentException("The flat parameters have no gradient buffer (an EMA mirror); the optimiser needs the trained model's.", nameof(parameters));
        if (weightDecays.Count != parameters.Groups.Count)
            throw new ArgumentException($"weightDecays has {weightDecays.Count} values; expected one per parameter group ({parameters.Groups.Count}).", nameof(weightDecays));
        _parameters = parameters;
        var groups = parameters.Groups.Select((g, i) => new AdamW.ParamGroup(g.Entries.Select(e => e.Parameter),
            new AdamW.Options { weight_decay = weightDecays[i] }));
        // TorchSharp validates lr, betas, eps and the decays here, with its own messages.
        Optimizer = new AdamW(groups, lr: lr, beta1: beta1, beta2: beta2, eps: eps);

        ExpAvg = zeros_like(parameters.Values).DetachFromDisposeScope();
        ExpAvgSq = zeros_like(parameters.Values).DetachFromDisposeScope();
        // Point each parameter's state at its views of the flat moments (replacing the zeros TorchSharp allocated).
        var states = Optimizer.state_dict().State.Cast<AdamW.State>().ToArray();
        int next = 0;
        _states = new AdamW.State[parameters.Groups.Count][];
        for (int g = 0; g < parameters.Groups.Count; g++)
        {
            var entries = parameters.Groups[g].Entries;
            _states[g] = new AdamW.State[entries.Count];
            for (int i = 0; i < entries.Count; i++, next++)
            {
                var state = states[next];
                var e = entries[i];
                state.exp_avg.Dispose();
                state.exp_avg_sq.Dispose();
                state.exp_avg = ExpAvg.narrow(0, e.Offset, e.Count).view(e.Parameter.shape).DetachFromDisposeScope();
                state.exp_avg_sq = ExpAvgSq.narrow(0, e.Offset, e.Count).view(e.Parameter.shape).DetachFromDisposeScope();
                _states[g][i] = state;
            }
        }
    }

    /// <summary>
    /// TorchSharp's AdamW holding the parameter groups (set learning rates through its <c>ParamGroups</c>) and the
    /// per-parameter state in its checkpoint format. Do not call its <c>step</c> or <c>zero_grad</c>: use
    /// <see cref="Step"/> and <see cref="ZeroGradients"/>.
    /// </summary>
    public AdamW Optimizer { get; }

    /// <summary>First moments, laid out as <see cref="FlatParameters.Values"/>.</summary>
    public Tensor ExpAvg { get; }

    /// <summary>Second moments, laid out as <see cref="FlatParameters.Values"/>.</summary>
    public Tensor ExpAvgSq { get; }

    /// <summary>Steps taken (restored with the state when a checkpoint is loaded).</summary>
    public long Steps => _states.Length > 0 && _states[0].Length > 0 ? _states[0][0].step : 0;

    /// <summary>Sets every gradient to zero (one kernel).</summary>
    public void ZeroGradients() => _parameters.ZeroGradients();

    /// <summary>One AdamW update of every group from the current gradients.</summary>
    /// <exception cref="InvalidOperationException">The parameters of a group have different step counts (a
    /// checkpoint written by an optimiser that skipped some of them).</exception>
    public void Step()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var groups = Optimizer.ParamGroups.Cast<AdamW.ParamGroup>().ToArray();
        for (int g = 0; g < groups.Length; g++)
        {
            var options = (AdamW.Options)groups[g].Options;
            if (options.amsgrad == true || options.maximize == true)
                throw new NotSupportedException("FlatAdamW implements AdamW without amsgrad and maximize.");
            double lr = options.LearningRate!.Value, beta1 = options.beta1!.Value, beta2 = options.beta2!.Value;
            double weightDecay = options.weight_decay!.Value, eps = options.eps!.Value;
            long step = AdvanceStep(g);

            double biasCorrection1 = 1 - Math.Pow(beta1, step);
            double biasCorrection2 = 1 - Math.Pow(beta2, step);
            var group = _parameters.Groups[g];
            // On a GPU the whole group is one run (fewest launches); on the CPU it goes in cache-sized chunks, each
            // taken through all eight operations before the next, instead of eight passes over buffers far larger
            // than the caches. Elementwise operations: the chunking changes no result.
            // Scalars made and disposed here rather than by implicit conversion: TorchSharp 0.107 frees implicit ones
            // from the finalizer, which can race the native call still reading them.
            using var decay = (1 - lr * weightDecay).ToScalar();
            using var b1 = beta1.ToScalar();
            using var oneMinusB1 = (1 - beta1).ToScalar();
            using var b2 = beta2.ToScalar();
            using var oneMinusB2 = (1 - beta2).ToScalar();
            using var correction2 = Math.Sqrt(biasCorrection2).ToScalar();
            using var epsilon = eps.ToScalar();
            using var stepSize = (-(lr / biasCorrection1)).ToScalar();
            long chunk = _parameters.Values.device_type == DeviceType.CPU ? CpuChunkElements : Math.Max(group.Length, 1);
            for (long start = 0; start < group.Length; start += chunk)
            {
                using var chunkScope = NewDisposeScope();
                long length = Math.Min(chunk, group.Length - start);
                var param = _parameters.Values.narrow(0, group.Offset + start, length);
                var grad = _parameters.Gradients.narrow(0, group.Offset + start, length);
                var expAvg = ExpAvg.narrow(0, group.Offset + start, length);
                var expAvgSq = ExpAvgSq.narrow(0, group.Offset + start, length);

                // The same operations, in the same order, as TorchSharp's AdamW.step for one tensor.
                if (weightDecay != 0) param.mul_(decay);   // × 1 changes nothing: skip the launch
                expAvg.mul_(b1).add_(grad, alpha: oneMinusB1);
                expAvgSq.mul_(b2).addcmul_(grad, grad, value: oneMinusB2);
                var denom = expAvgSq.sqrt().div_(correction2).add_(epsilon, ScalarArithmetic.One);
                param.addcdiv_(expAvg, denom, value: stepSize);
            }
        }
    }

    /// <summary>Elements per chunk of the CPU update: 32 Ki floats, 128 KiB per buffer, five buffers within L2.</summary>
    private const long CpuChunkElements = 32 * 1024;

    /// <summary>Frees the moment buffers and TorchSharp's state objects.</summary>
    public void Dispose()
    {
        Optimizer.Dispose();
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
    }

    private long AdvanceStep(int group)
    {
        var states = _states[group];
        if (states.Length == 0) return 0;
        long step = states[0].step;
        foreach (var state in states)
        {
            if (state.step != step)
                throw new InvalidOperationException(
                    $"The parameters of group {group} have different step counts ({step} and {state.step}): the optimiser state was written by an optimiser that skipped some parameters; FlatAdamW steps every parameter of a group together.");
            state.step = step + 1;
        }
        return step + 1;
    }
}
