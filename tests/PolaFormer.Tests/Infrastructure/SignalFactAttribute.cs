using Xunit;

namespace PolaFormer.Tests.Infrastructure;

/// <summary>
/// A test that sends a signal to a child process: reported as skipped, with the reason, where this process ignores
/// that signal, because a child inherits the ignored disposition and rightly keeps it (a non-interactive shell starts
/// its background commands with SIGINT and SIGQUIT ignored, so `cmd &amp;` cannot be stopped by Ctrl+C meant for the
/// shell).
/// </summary>
public sealed class SignalFactAttribute : FactAttribute
{
    /// <param name="signal">The signal's name without "SIG": INT, QUIT, TERM, HUP.</param>
    public SignalFactAttribute(string signal)
    {
        int number = signal switch { "HUP" => 1, "INT" => 2, "QUIT" => 3, "TERM" => 15, _ => throw new ArgumentOutOfRangeException(nameof(signal), signal, "expected HUP, INT, QUIT or TERM") };
        if (IgnoredHere(number))
            Skip = $"SIG{signal} is ignored in this process (the tests were started in the background by a non-interactive shell?), so the program started by the test inherits that; run the tests in the foreground to include this one.";
    }

    /// <summary>Whether this process ignores signal <paramref name="number"/> (Linux: the SigIgn mask of /proc/self/status).</summary>
    internal static bool IgnoredHere(int number)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return false;
        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null
               && ulong.TryParse(line["SigIgn:".Length..].Trim(), System.Globalization.NumberStyles.HexNumber, null, out ulong mask)
               && (mask & (1UL << (number - 1))) != 0;
    }
}
