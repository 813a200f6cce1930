namespace PolaFormer.Tests.Infrastructure;

/// <summary>The repository the tests run in, and what a Roslyn compilation of C# written for it needs.</summary>
public static class Repository
{
    private static readonly Lazy<string> RootFolder = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "PolaFormer.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("PolaFormer.sln not found above " + AppContext.BaseDirectory);
    });

    /// <summary>The folder holding PolaFormer.sln.</summary>
    public static string Root => RootFolder.Value;

    /// <summary>What <c>&lt;ImplicitUsings&gt;enable&lt;/ImplicitUsings&gt;</c> gives a Microsoft.NET.Sdk project.</summary>
    public const string ImplicitUsings = """
        global using System;
        global using System.Collections.Generic;
        global using System.IO;
        global using System.Linq;
        global using System.Net.Http;
        global using System.Threading;
        global using System.Threading.Tasks;
        """;
}
