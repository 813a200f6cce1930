using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using System.Xml.Linq;
using FluentAssertions;
using Xunit;
using Xunit.Abstractions;

namespace PolaFormer.Tests.Packaging;

/// <summary>
/// The package as someone who is not us gets it: <c>dotnet pack</c> of src/PolaFormer into a folder feed, a fresh
/// console project that references it by <c>PackageReference</c> (plus the CPU backend), restored from that feed and
/// this machine's registry, built, and run: a polarity attention layer and a preset model do a forward pass.
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
                var id = Path.Combine(cache, "polaformer");
                var extracted = Path.Combine(id, _version.ToLowerInvariant());
                if (Directory.Exists(extracted)) Directory.Delete(extracted, recursive: true);
                if (Directory.Exists(id) && !Directory.EnumerateFileSystemEntries(id).Any()) Directory.Delete(id);
            }
        }
        catch (IOException e)
        {
            _output.WriteLine($"cleanup: {e.Message}");
        }
    }

    [Fact]
    public void Packed_library_restores_builds_and_runs_in_a_fresh_console_project()
    {
        var clock = Stopwatch.StartNew();
        string feed = Path.Combine(_root, "feed"), app = Path.Combine(_root, "app");
        Directory.CreateDirectory(app);

        // Pack exactly as a release would, with the test version and outputs kept out of the repository.
        var project = Path.Combine(RepositoryRoot(), "src", "PolaFormer", "PolaFormer.csproj");
        Dotnet(_root, "pack", project, "-c", "Release", "-o", feed, "--artifacts-path", Path.Combine(_root, "artifacts"),
            $"-p:Version={_version}");
        CheckPackageContents(Path.Combine(feed, $"PolaFormer.{_version}.nupkg"));
        File.Exists(Path.Combine(feed, $"PolaFormer.{_version}.snupkg")).Should().BeTrue("the symbols package sits next to the package");
        _output.WriteLine($"pack: {clock.Elapsed.TotalSeconds:F0} s");

        WriteConsoleProject(app, feed, Upstream());
        Dotnet(app, "restore");
        Dotnet(app, "build", "-c", "Release", "--no-restore");
        _output.WriteLine($"restore + build: {clock.Elapsed.TotalSeconds:F0} s");
        var output = Dotnet(app, "run", "-c", "Release", "--no-build");
        _output.WriteLine(output);
        _output.WriteLine($"total: {clock.Elapsed.TotalSeconds:F0} s");

        output.Should().Contain($"PolaFormer {_version}", "the program must run against the package just packed");
        output.Should().Contain("PolaLinearAttention (2, 64, 64) finite", "a polarity attention layer maps (B, N, C) to (B, N, C)");
        output.Should().Contain("pola_pvt_tiny (1, 1000) finite", "the preset classifies a 224² image into 1000 classes");
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

    private void WriteConsoleProject(string app, string feed, IReadOnlyList<string> upstream)
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
                <PackageReference Include="TorchSharp-cpu" Version="{TorchSharpVersion}" />
              </ItemGroup>
            </Project>
            """);

        // The folder feed serves PolaFormer and nothing else; every other package comes from the registries this
        // machine is configured with (the global cache already holds them, so nothing is downloaded).
        var sources = new StringBuilder();
        var mapping = new StringBuilder();
        sources.AppendLine($"""    <add key="polaformer-test-feed" value="{feed}" />""");
        mapping.AppendLine("""    <packageSource key="polaformer-test-feed"><package pattern="PolaFormer" /></packageSource>""");
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

        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using System.Reflection;
            using PolaFormer;
            using PolaFormer.Attention;
            using PolaFormer.Models;
            using static TorchSharp.torch;

            TorchRuntime.EnsureLoaded();
            set_num_threads(2);
            manual_seed(0);
            var version = typeof(ModelRegistry).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;
            Console.WriteLine($"PolaFormer {version}");

            static string Describe(Tensor t) =>
                $"({string.Join(", ", t.shape)}) {(t.isfinite().all().item<bool>() ? "finite" : "NOT FINITE")}";

            using (no_grad())
            {
                using var attention = new PolaLinearAttention(64, inputResolution: (8, 8), numHeads: 2, qkvBias: true);
                using var tokens = randn(2, 64, 64);
                using var y = attention.forward(tokens, height: 8, width: 8);
                Console.WriteLine($"PolaLinearAttention {Describe(y)}");

                using var model = ModelRegistry.Create("pola_pvt_tiny");
                model.eval();
                using var images = randn(1, 3, 224, 224);
                using var logits = model.forward(images);
                Console.WriteLine($"pola_pvt_tiny {Describe(logits)}");
            }
            """);
    }

    // The enabled package sources of this machine's NuGet configuration (user and machine level), as URLs.
    private IReadOnlyList<string> Upstream()
    {
        var listing = Dotnet(_root, "nuget", "list", "source", "--format", "short");
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
        var line = Dotnet(Path.GetTempPath(), "nuget", "locals", "global-packages", "--list")
            .Split('\n').FirstOrDefault(l => l.StartsWith("global-packages:", StringComparison.Ordinal));
        return line?["global-packages:".Length..].Trim();
    }

    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "PolaFormer.sln"))) dir = dir.Parent;
        dir.Should().NotBeNull("the tests run inside the repository");
        return dir!.FullName;
    }

    // Runs dotnet and returns its standard output; any failure throws with the command and everything it printed.
    private static string Dotnet(string workingDirectory, params string[] args)
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
