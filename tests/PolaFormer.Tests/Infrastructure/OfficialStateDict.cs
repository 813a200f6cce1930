using System.Text.Json;
using FluentAssertions;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Infrastructure;

/// <summary>
/// A model against an official state-dict listing (the <c>statedict_*.json</c> golden files the generators write
/// from the authors' code): the same names (order aside: TorchSharp lists a module's parameters before its buffers,
/// and checkpoints load by key), shapes, dtypes, parameter-or-buffer kinds and counts.
/// </summary>
public static class OfficialStateDict
{
    /// <summary>Asserts <paramref name="model"/> matches the listing <paramref name="root"/>; returns its parameter count.</summary>
    public static long ShouldMatch(nn.Module model, JsonElement root)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var buffers = model.named_buffers().ToDictionary(b => b.name, b => b.buffer);
        var stateDict = model.state_dict();
        var listed = root.GetProperty("state_dict").EnumerateArray().Select(e => (
            Name: e.GetProperty("name").GetString()!,
            Shape: e.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray(),
            Dtype: e.GetProperty("dtype").GetString()!,
            Kind: e.TryGetProperty("kind", out var kind) ? kind.GetString() : null)).ToList();

        listed.Should().HaveCount(root.GetProperty("num_state_dict_entries").GetInt32());
        stateDict.Keys.Should().BeEquivalentTo(listed.Select(e => e.Name), "the state dict has the official names");
        foreach (var e in listed)
        {
            stateDict[e.Name].shape.Should().Equal(e.Shape, $"{e.Name} has the official shape");
            e.Dtype.Should().BeOneOf(["F32", "I64"], $"the official {e.Name} is float32 or int64");
            stateDict[e.Name].dtype.Should().Be(e.Dtype == "I64" ? ScalarType.Int64 : ScalarType.Float32, $"{e.Name} is {e.Dtype}");
            if (e.Kind is null) continue;
            parameters.ContainsKey(e.Name).Should().Be(e.Kind == "parameter", $"{e.Name} is a {e.Kind}");
            if (e.Kind == "buffer") buffers.Should().ContainKey(e.Name, $"{e.Name} is a persistent buffer");
        }
        buffers.Should().HaveCount(root.GetProperty("num_buffer_entries").GetInt32());
        parameters.Should().HaveCount(root.GetProperty("num_parameter_tensors").GetInt32());
        long count = parameters.Values.Sum(p => p.numel());
        count.Should().Be(root.GetProperty("num_parameters").GetInt64());
        return count;
    }
}
