using System.Globalization;

namespace PolaFormer.Benchmarks.Shared;

// Compiled into both benchmarks/PolaFormer.Benchmarks and benchmarks/PolaFormer.GpuCheck (linked source).

/// <summary>This process's resident memory, from /proc/self/status (Linux); -1 where that is unavailable.</summary>
internal static class ProcessMemory
{
    /// <summary>Peak resident set size (VmHWM), in bytes.</summary>
    public static long PeakRss() => ReadStatus("VmHWM:");

    /// <summary>Resident set size now (VmRSS), in bytes.</summary>
    public static long CurrentRss() => ReadStatus("VmRSS:");

    private static long ReadStatus(string key)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(key, StringComparison.Ordinal))
                    // "VmHWM:\t  123456 kB": a tab after the key, and no padding once the number has 8 digits
                    return long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return -1;
    }
}
