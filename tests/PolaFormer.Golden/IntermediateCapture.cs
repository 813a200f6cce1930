using PolaFormer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PolaFormer.Golden;

/// <summary>
/// Reports the outputs of named submodules during a forward pass — the <c>inter.&lt;module name&gt;</c> tensors of
/// the golden files — through TorchSharp forward hooks, which run because the models invoke their blocks, patch
/// mergings and norms with <c>call()</c>. Dispose to remove the hooks.
/// </summary>
/// <remarks>A <see cref="PatchEmbed"/> is reported by its last step (its LayerNorm, or the projection's map
/// flattened to tokens when it has none): the model calls <see cref="PatchEmbed.Embed"/>, which hooks on the
/// PatchEmbed itself would not see. PolaFormer++ runs its stages with <c>forward()</c>, so no hook fires there; its
/// stage outputs come from <see cref="Models.Backbone.ForwardIntermediates"/>.</remarks>
public sealed class IntermediateCapture : IDisposable
{
    private readonly List<Action> _removers = [];

    private IntermediateCapture() { }

    /// <summary>Hooks every module in <paramref name="names"/> (state-dict paths, e.g. <c>layers.0.blocks.1</c>);
    /// <paramref name="report"/> gets (name, output) each time one runs.</summary>
    /// <exception cref="ArgumentException">A name is not a submodule of <paramref name="model"/>.</exception>
    /// <exception cref="NotSupportedException">A module's forward signature has no hook this class knows.</exception>
    public static IntermediateCapture Attach(nn.Module model, IEnumerable<string> names, Action<string, Tensor> report)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(report);
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        var capture = new IntermediateCapture();
        try
        {
            foreach (var name in names)
            {
                if (!modules.TryGetValue(name, out var module))
                    throw new ArgumentException($"'{name}' is not a submodule of the model.", nameof(names));
                capture.Hook(name, module, modules, report);
            }
        }
        catch
        {
            capture.Dispose();
            throw;
        }
        return capture;
    }

    private void Hook(string name, nn.Module module, Dictionary<string, nn.Module> modules, Action<string, Tensor> report)
    {
        switch (module)
        {
            case PatchEmbed when modules.TryGetValue(name + ".norm", out var norm) && norm is LayerNorm layerNorm:
                Hook(layerNorm, output => report(name, output));
                break;
            case PatchEmbed when modules[name + ".proj"] is Conv2d projection:
                Hook(projection, map => report(name, map.flatten(2).transpose(1, 2)));
                break;
            case nn.Module<Tensor, long, long, Tensor> grid:   // blocks and patch mergings: (tokens, height, width)
                var gridHook = grid.register_forward_hook((_, _, _, _, output) =>
                {
                    report(name, output);
                    return output;
                });
                _removers.Add(gridHook.remove);
                break;
            case nn.Module<Tensor, Tensor> plain:
                Hook(plain, output => report(name, output));
                break;
            default:
                throw new NotSupportedException($"'{name}' is a {module.GetType().Name}: no forward hook for its signature.");
        }
    }

    private void Hook(nn.Module<Tensor, Tensor> module, Action<Tensor> onOutput)
    {
        var hook = module.register_forward_hook((_, _, output) =>
        {
            onOutput(output);
            return output;
        });
        _removers.Add(hook.remove);
    }

    /// <summary>Removes the hooks.</summary>
    public void Dispose()
    {
        foreach (var remove in _removers) remove();
        _removers.Clear();
    }
}
