using System.Text.Json;

namespace PolaFormer.Benchmarks;

/// <summary>Prints one measurement: a JSON object on one line with <c>--json</c> (what the scripts read), otherwise
/// the same fields as <c>name: value</c> lines.</summary>
internal static class Report
{
    public static void Print(object report, bool json)
    {
        var text = JsonSerializer.Serialize(report, RunInfo.Json);
        if (json)
        {
            Console.WriteLine(text);
            return;
        }
        using var document = JsonDocument.Parse(text);
        foreach (var property in document.RootElement.EnumerateObject())
            Console.WriteLine($"{property.Name,-20} {property.Value}");
    }
}
