using System.Text.RegularExpressions;
using FluentAssertions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using Xunit;

namespace PolaFormer.Tests.Packaging;

/// <summary>
/// Every <c>```csharp</c> block of README.md compiles against the library as it is now: each block is one console
/// program (top-level statements, the SDK's implicit usings) compiled with Roslyn against the built PolaFormer and
/// TorchSharp assemblies and the framework. A renamed member or a changed signature fails here, not in a reader's
/// first minutes. Nothing is run: the snippets load files that are not in the repository.
/// </summary>
[Trait("Category", "Packaging")]
public sealed class ReadmeSnippetTests
{
    public static TheoryData<int> SnippetIndices()
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < Snippets().Count; i++) data.Add(i);
        return data;
    }

    [Fact]
    public void Readme_has_csharp_snippets()
    {
        Snippets().Should().NotBeEmpty("README.md shows the library in ```csharp blocks");
    }

    [Theory]
    [MemberData(nameof(SnippetIndices))]
    public void Readme_snippet_compiles(int index)
    {
        var (line, code) = Snippets()[index];
        var parse = new CSharpParseOptions(LanguageVersion.Latest);
        var compilation = CSharpCompilation.Create(
            $"ReadmeSnippet{index}",
            [CSharpSyntaxTree.ParseText(Repository.ImplicitUsings, parse), CSharpSyntaxTree.ParseText(code, parse, path: $"README.md:{line}")],
            References(),
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));

        var errors = compilation.GetDiagnostics()
            .Where(d => d.Severity == DiagnosticSeverity.Error)
            .Select(d => d.ToString())
            .ToArray();
        errors.Should().BeEmpty($"the README's C# block at line {line} must compile against the current API:\n{code}");
    }

    /// <summary>The ```csharp blocks of README.md with the line each starts on.</summary>
    private static IReadOnlyList<(int Line, string Code)> Snippets()
    {
        string text = File.ReadAllText(Path.Combine(Repository.Root, "README.md")).ReplaceLineEndings("\n");
        return Regex.Matches(text, @"^```csharp\n(.*?)^```", RegexOptions.Singleline | RegexOptions.Multiline)
            .Select(m => (text[..m.Index].Count(c => c == '\n') + 2, m.Groups[1].Value))
            .ToArray();
    }

    /// <summary>The framework (this process's trusted platform assemblies, which include the test's dependencies)
    /// plus PolaFormer, PolaFormer.Training and TorchSharp by location.</summary>
    private static IReadOnlyList<MetadataReference> References()
    {
        var paths = ((AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES") as string) ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Where(p => p.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            .Append(typeof(Backbone).Assembly.Location)
            .Append(typeof(PolaFormer.Training.Trainer).Assembly.Location)
            .Append(typeof(TorchSharp.torch).Assembly.Location)
            .Where(File.Exists)
            .Distinct(StringComparer.Ordinal);
        return paths.Select(p => (MetadataReference)MetadataReference.CreateFromFile(p)).ToArray();
    }
}
