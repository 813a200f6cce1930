using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Xml.Linq;
using FluentAssertions;
using PolaFormer.Checkpoints;
using PolaFormer.Models;
using PolaFormer.Pretrained;
using PolaFormer.Tests.Pretrained;
using PolaFormer.Tests.Training;
using PolaFormer.Training.Data;
using TorchSharp;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PolaFormer.Tests.Packaging;

/// <summary>
/// The packages as someone who is not us gets them: <c>dotnet pack</c> of src/PolaFormer and src/PolaFormer.Training
/// into a folder feed, and a fresh console project that references both by <c>PackageReference</c> (plus the CPU
/// backend), restored from that feed and this machine's registry, built, and run. Its <c>Program.cs</c> is the
/// README's end-to-end block, unchanged: pretrained weights from a real HTTP server on localhost, an image file
/// classified, one epoch of fine-tuning on an image folder at 64 px, the multi-scale features.
/// </summary>
/// <remarks>
/// The package gets a unique prerelease version, so the global package cache (which already holds LibTorch: an
/// isolated cache would download 600 MB again) can never hand back a stale copy; that version's folder is removed
/// from the cache afterwards. Builds and packs write only under a temporary folder (<c>--artifacts-path</c>), never
/// into the repository's bin/obj.
/// </remarks>
[Trait("Category", "Packaging")]
public sealed class PackageTests : IDisposable
{
    private const string TorchSharpVersion = "0.107.0";
    private static readonly TimeSpan StepTimeout = TimeSpan.FromMinutes(6);

    private readonly ITestOutputHelper _output;
    private readonly string _root = Directory.CreateTempSubdirectory("polaformer-package-").FullName;
    private readonly string _version = $"0.1.0-test.{DateTime.UtcNow.Ticks}";

    public PackageTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
            if (GlobalPackagesFolder() is { } cache)
            {
                foreach (var packageId in new[] { "polaformer", "polaformer.training" })
                {
                    var id = Path.Combine(cache, packageId);
                    var extracted = Path.Combine(id, _version.ToLowerInvariant());
                    if (Directory.Exists(extracted)) Directory.Delete(extracted, recursive: true);
                    if (Directory.Exists(id) && !Directory.EnumerateFileSystemEntries(id).Any()) Directory.Delete(id);
                }
            }
        }
        catch (IOException e)
        {
            _output.WriteLine($"cleanup: {e.Message}");
        }
    }

    [Fact]
    public void The_readme_walk_runs_in_a_fresh_console_project_against_both_packed_packages()
    {
        var clock = Stopwatch.StartNew();
        string feed = Path.Combine(_root, "feed"), app = Path.Combine(_root, "app");
        Directory.CreateDirectory(app);

        // Pack exactly as a release would, with the test version and outputs kept out of the repository.
        foreach (var name in new[] { "PolaFormer", "PolaFormer.Training" })
        {
            var project = Path.Combine(Repository.Root, "src", name, $"{name}.csproj");
            Dotnet(_root, null, "pack", project, "-c", "Release", "-o", feed, "--artifacts-path", Path.Combine(_root, "artifacts", name),
                $"-p:Version={_version}");
            File.Exists(Path.Combine(feed, $"{name}.{_version}.snupkg")).Should().BeTrue("the symbols package sits next to the package");
        }
        CheckPackageContents(Path.Combine(feed, $"PolaFormer.{_version}.nupkg"));
        CheckTrainingPackageContents(Path.Combine(feed, $"PolaFormer.Training.{_version}.nupkg"));
        _output.WriteLine($"pack: {clock.Elapsed.TotalSeconds:F0} s");

        WriteConsoleProject(app, feed, Upstream(), ReadmeWalk());
        Dotnet(app, null, "restore");
        Dotnet(app, null, "build", "-c", "Release", "--no-restore");
        _output.WriteLine($"restore + build: {clock.Elapsed.TotalSeconds:F0} s");
        var built = FileVersionInfo.GetVersionInfo(Path.Combine(app, "bin", "Release", "net10.0", "PolaFormer.Training.dll"));
        built.ProductVersion.Should().StartWith(_version, "the program must run against the packages just packed");

        // What the walk is given: weights of pola_pvt_tiny served over HTTP, an image, an image folder.
        string imageFolder = TrainingFixtures.WriteImageFolder(Path.Combine(_root, "images"), classes: 2, trainPerClass: 8, valPerClass: 4);
        string imageFile = Path.Combine(imageFolder, "val", "class1", "0.JPEG");
        string weights = Path.Combine(_root, "pola_pvt_tiny.safetensors");
        string cache = Path.Combine(_root, "cache");
        (long Class, float Probability) expected;
        string[] expectedFeatures;
        TorchRuntime.VerifyCpuConvolution();
        using (var _ = torch.no_grad())
        {
            torch.manual_seed(5);
            using var source = ModelRegistry.Create("pola_pvt_tiny");
            source.eval();
            Checkpoint.Save(source, weights);
            using var batch = ImagePreprocessor.ForModel("pola_pvt_tiny").Apply(RgbImage.Load(imageFile).ToTensor());
            using var probabilities = source.forward(batch).softmax(1);
            var (best, index) = probabilities.max(1);
            expected = (index.item<long>(), best.item<float>());
            using var images = torch.zeros(1, 3, 224, 224);
            expectedFeatures = source.FeatureInfo.Zip(source.ForwardIntermediates(images))
                .Select(p => $"{p.First.Name}: {string.Join('x', p.Second.shape)}, stride {p.First.Reduction}").ToArray();
        }
        using var server = new CheckpointServer(File.ReadAllBytes(weights), "pola_pvt_tiny.safetensors");

        var output = Dotnet(app, new Dictionary<string, string> { [PretrainedWeights.CacheFolderVariable] = cache },
            "run", "-c", "Release", "--no-build", "--", server.Url, imageFile, imageFolder);
        _output.WriteLine(output);
        _output.WriteLine($"total: {clock.Elapsed.TotalSeconds:F0} s");

        var lines = output.Split('\n', StringSplitOptions.TrimEntries);
        lines.Should().Contain(l => l.StartsWith("loaded every tensor from ", StringComparison.Ordinal),
            "the served weights fit the 1000-class model entirely");
        server.Requests.Should().HaveCount(1, "the second load (for fine-tuning) reads the cache, not the server");
        var classified = lines.Single(l => l.StartsWith(imageFile + ": class ", StringComparison.Ordinal));
        var match = System.Text.RegularExpressions.Regex.Match(classified, @"class (\d+), p = ([0-9.]+)$");
        match.Success.Should().BeTrue(classified);
        long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture).Should().Be(expected.Class,
            "the program classifies the image as the same weights and preprocessing do in this process");
        double.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture).Should().BeApproximately(expected.Probability, 6e-4);
        lines.Should().Contain(l => l.StartsWith("fine-tuned: validation top-1 ", StringComparison.Ordinal));
        Directory.EnumerateFiles(Path.Combine(app, "fine-tune"), "*.safetensors", SearchOption.AllDirectories).Should()
            .NotBeEmpty("the fine-tuned weights are exported");
        lines.Should().Contain(l => l.Contains("loaded '", StringComparison.Ordinal) && l.Contains("(cached) except the classifier", StringComparison.Ordinal),
            "fine-tuning on 2 classes loads everything but the 1000-class head, from the cache");
        lines.Should().ContainInOrder(expectedFeatures);
    }

    // The README's end-to-end block: the ```csharp block that follows the "A first project, end to end" heading.
    private static string ReadmeWalk()
    {
        var text = File.ReadAllText(Path.Combine(Repository.Root, "README.md")).ReplaceLineEndings("\n");
        int heading = text.IndexOf("### A first project, end to end", StringComparison.Ordinal);
        heading.Should().BeGreaterThan(0, "README.md has the end-to-end walk");
        int start = text.IndexOf("```csharp\n", heading, StringComparison.Ordinal) + "```csharp\n".Length;
        int end = text.IndexOf("\n```", start, StringComparison.Ordinal);
        return text[start..end] + "\n";
    }

    private void CheckTrainingPackageContents(string package)
    {
        File.Exists(package).Should().BeTrue($"dotnet pack must create {package}");
        using var zip = ZipFile.OpenRead(package);
        zip.Entries.Select(e => e.FullName).Should().Contain(["PACKAGE.md", "LICENSE", "CHANGELOG.md",
            "lib/net10.0/PolaFormer.Training.dll", "lib/net10.0/PolaFormer.Training.xml"]);
        using var nuspecStream = zip.GetEntry("PolaFormer.Training.nuspec")!.Open();
        var dependencies = XDocument.Load(nuspecStream).Descendants().Where(e => e.Name.LocalName == "dependency")
            .Select(e => ((string)e.Attribute("id")!, (string)e.Attribute("version")!)).ToArray();
        dependencies.Should().BeEquivalentTo([("PolaFormer", _version), ("TorchSharp", TorchSharpVersion),
            ("SkiaSharp", "3.119.0"), ("SkiaSharp.NativeAssets.Linux.NoDependencies", "3.119.0")],
            "the training package depends on PolaFormer of the same version, TorchSharp, and SkiaSharp with its Linux natives");
    }

    // The nuspec and the files a user sees: readme, licence, XML docs next to the assembly, TorchSharp as the only
    // dependency (the LibTorch backend stays the user's choice).
    private static void CheckPackageContents(string package)
    {
        File.Exists(package).Should().BeTrue($"dotnet pack must create {package}");
        using var zip = ZipFile.OpenRead(package);
        var names = zip.Entries.Select(e => e.FullName).ToArray();
        names.Should().Contain(["PACKAGE.md", "LICENSE", "CHANGELOG.md", "lib/net10.0/PolaFormer.dll", "lib/net10.0/PolaFormer.xml"]);

        using var nuspecStream = zip.GetEntry("PolaFormer.nuspec")!.Open();
        var metadata = XDocument.Load(nuspecStream).Root!.Elements().Single(e => e.Name.LocalName == "metadata");
        string? Field(string name) => metadata.Elements().SingleOrDefault(e => e.Name.LocalName == name)?.Value;
        Field("id").Should().Be("PolaFormer");
        Field("readme").Should().Be("PACKAGE.md");
        Field("license").Should().Be("MIT");
        var dependencies = metadata.Descendants().Where(e => e.Name.LocalName == "dependency")
            .Select(e => (Id: (string)e.Attribute("id")!, Version: (string)e.Attribute("version")!)).ToArray();
        dependencies.Should().Equal([("TorchSharp", TorchSharpVersion)], "the package depends on TorchSharp only");

        using var reader = new StreamReader(zip.GetEntry("PACKAGE.md")!.Open());
        reader.ReadToEnd().Should().Contain("TorchSharp-cpu").And.Contain("TorchSharp-cuda-linux")
            .And.Contain("TorchSharp-cuda-windows").And.Contain("GLIBCXX_3.4.32");
    }

    private void WriteConsoleProject(string app, string feed, IReadOnlyList<string> upstream, string program)
    {
        // Empty Directory.* files stop MSBuild from picking up any found above the temporary folder.
        foreach (var name in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props" })
            File.WriteAllText(Path.Combine(app, name), "<Project />\n");

        // NuGetAudit off: the audit needs the registry's vulnerability feed, and its warning would fail the
        // warnings-as-errors build of a machine that cannot reach it.
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                <NuGetAudit>false</NuGetAudit>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="PolaFormer" Version="{_version}" />
                <PackageReference Include="PolaFormer.Training" Version="{_version}" />
                <PackageReference Include="TorchSharp-cpu" Version="{TorchSharpVersion}" />
              </ItemGroup>
            </Project>
            """);

        // The folder feed serves the two PolaFormer packages and nothing else; every other package comes from the registries this
        // machine is configured with (the global cache already holds them, so nothing is downloaded).
        var sources = new StringBuilder();
        var mapping = new StringBuilder();
        sources.AppendLine($"""    <add key="polaformer-test-feed" value="{feed}" />""");
        mapping.AppendLine("""    <packageSource key="polaformer-test-feed"><package pattern="PolaFormer" /><package pattern="PolaFormer.Training" /></packageSource>""");
        for (int i = 0; i < upstream.Count; i++)
        {
            sources.AppendLine($"""    <add key="upstream-{i}" value="{upstream[i]}" />""");
            mapping.AppendLine($"""    <packageSource key="upstream-{i}"><package pattern="*" /></packageSource>""");
        }
        File.WriteAllText(Path.Combine(app, "NuGet.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
            {sources}  </packageSources>
              <packageSourceMapping>
                <clear />
            {mapping}  </packageSourceMapping>
            </configuration>
            """);

        File.WriteAllText(Path.Combine(app, "Program.cs"), program);
    }

    // The enabled package sources of this machine's NuGet configuration (user and machine level), as URLs.
    private IReadOnlyList<string> Upstream()
    {
        var listing = Dotnet(_root, null, "nuget", "list", "source", "--format", "short");
        var sources = listing.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(line => line.StartsWith("E ", StringComparison.Ordinal))
            .Select(line => line[2..].Trim())
            .Where(url => !url.Contains("polaformer-package-", StringComparison.Ordinal))
            .ToArray();
        _output.WriteLine($"upstream sources: {string.Join(", ", sources)}");
        return sources;
    }

    private static string? GlobalPackagesFolder()
    {
        if (Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } fromEnvironment) return fromEnvironment;
        var line = Dotnet(Path.GetTempPath(), null, "nuget", "locals", "global-packages", "--list")
            .Split('\n').FirstOrDefault(l => l.StartsWith("global-packages:", StringComparison.Ordinal));
        return line?["global-packages:".Length..].Trim();
    }

    // Runs dotnet and returns its standard output; any failure throws with the command and everything it printed.
    private static string Dotnet(string workingDirectory, IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in args) start.ArgumentList.Add(a);
        // The test host's MSBuild settings must not leak into a separate build, and no build server may outlive it
        // (it would hold this process's output pipes open).
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToArray())
            start.Environment.Remove(key);
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        start.Environment["UseSharedCompilation"] = "false";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) start.Environment[key] = value;

        string command = $"dotnet {string.Join(' ', args)} (in {workingDirectory})";
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {command}");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(StepTimeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{command} did not finish in {StepTimeout.TotalMinutes} minutes.\n{output.Result}\n{error.Result}");
        }
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{command} exited with {process.ExitCode}.\n--- stdout ---\n{output.Result}\n--- stderr ---\n{error.Result}");
        return output.Result;
    }
}
