using System.Text.Json;
using PolaFormer.Models;

namespace PolaFormer.Benchmarks;

/// <summary><c>models</c>: one JSON line per registered model (name, family, parameters, input size, reported
/// top-1). The README's model-zoo table comes from this command.</summary>
internal static class ListModelsCommand
{
    public static int Run()
    {
        foreach (var info in ModelRegistry.Models)
        {
            var line = new
            {
                name = info.Name, family = info.Family, parameters = info.Parameters,
                input = $"{info.InputSize.Height}x{info.InputSize.Width}", attention = info.Attention, reported_top1 = info.ReportedTop1,
            };
            Console.WriteLine(JsonSerializer.Serialize(line, RunInfo.Json));
        }
        return 0;
    }
}
