using System.Diagnostics;
using FluentAssertions;

namespace PolaFormer.Tests.Infrastructure;

/// <summary>Runs the sample training program (samples/PolaFormer.Train) as a user would: a separate process.</summary>
public static class TrainProgram
{
    private static readonly string[] LaunchVariables = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"];

    /// <summary>The built program next to the tests: tests/PolaFormer.Tests/bin/&lt;Configuration&gt;/&lt;tfm&gt;/ →
    /// samples/PolaFormer.Train/bin/&lt;Configuration&gt;/&lt;tfm&gt;/polaformer-train.dll.</summary>
    public static string Path()
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(System.IO.Path.DirectorySeparatorChar));
        string tfm = here.Name, configuration = here.Parent!.Name;
        var repo = here;
        while (repo is not null && !File.Exists(System.IO.Path.Combine(repo.FullName, "PolaFormer.sln"))) repo = repo.Parent;
        repo.Should().NotBeNull("the tests run inside the repository");
        var path = System.IO.Path.Combine(repo!.FullName, "samples", "PolaFormer.Train", "bin", configuration, tfm, "polaformer-train.dll");
        File.Exists(path).Should().BeTrue($"the sample program must be built ({path}); the test project builds it first");
        return path;
    }

    /// <summary>Runs the program with <paramref name="args"/>; cluster launch variables are cleared, then
    /// <paramref name="environment"/> is applied.</summary>
    public static (int Exit, string Out, string Error) Run(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path());
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var name in LaunchVariables) start.Environment.Remove(name);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        process.WaitForExit(300_000).Should().BeTrue("the program must finish");
        return (process.ExitCode, output.Result, error.Result);
    }

    /// <summary>Starts the program with <paramref name="args"/> without waiting; standard output and error are
    /// collected into the returned builders as they arrive.</summary>
    public static (Process Process, System.Text.StringBuilder Out, System.Text.StringBuilder Error) Start(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path());
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var name in LaunchVariables) start.Environment.Remove(name);
        var process = new Process { StartInfo = start };
        System.Text.StringBuilder output = new(), error = new();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (error) error.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return (process, output, error);
    }

    /// <summary>Sends a POSIX signal (e.g. "TERM", "INT") to <paramref name="process"/> with kill(1).</summary>
    public static void Signal(Process process, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-" + signal, process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) } })!;
        kill.WaitForExit();
        kill.ExitCode.Should().Be(0, $"kill -{signal} {process.Id} must reach the program");
    }

    /// <summary>A failure is one line on standard error that starts with "error: ", and a non-zero exit.</summary>
    public static void ShouldFailWithOneLine((int Exit, string Out, string Error) result, string expected)
    {
        result.Exit.Should().NotBe(0);
        var lines = result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().ContainSingle($"one line, not a stack trace: {result.Error}");
        lines[0].Should().StartWith("error: ").And.Match(expected);
    }
}
