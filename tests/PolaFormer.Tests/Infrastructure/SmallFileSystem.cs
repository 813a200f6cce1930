using System.Diagnostics;
using Xunit;

namespace PolaFormer.Tests.Infrastructure;

/// <summary>
/// A real file system of a chosen size: a tmpfs mounted on a folder, unmounted on dispose. Mounting needs root (or
/// CAP_SYS_ADMIN) and a kernel that allows it; <see cref="Unavailable"/> says why not where it cannot be done.
/// </summary>
public sealed class SmallFileSystem : IDisposable
{
    private static readonly Lazy<string?> Probe = new(ProbeMount);

    private SmallFileSystem(string folder) => Folder = folder;

    /// <summary>The mounted folder.</summary>
    public string Folder { get; }

    /// <summary>Why a tmpfs cannot be mounted here, or null where it can.</summary>
    public static string? Unavailable => Probe.Value;

    /// <summary>Mounts a tmpfs of <paramref name="bytes"/> bytes on <paramref name="folder"/> (created if missing).</summary>
    public static SmallFileSystem Mount(string folder, long bytes)
    {
        Directory.CreateDirectory(folder);
        var (exit, output) = Run("mount", "-t", "tmpfs", "-o", $"size={bytes}", "tmpfs", folder);
        if (exit != 0) throw new InvalidOperationException($"mount -t tmpfs on '{folder}' failed ({exit}): {output}");
        return new SmallFileSystem(folder);
    }

    /// <summary>Writes a file of zeros until the file system is full.</summary>
    public void Fill()
    {
        var block = new byte[64 * 1024];
        using var filler = new FileStream(Path.Combine(Folder, "filler"), FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1);
        try
        {
            while (true) filler.Write(block);
        }
        catch (IOException e) when ((e.HResult & 0xFFFF) == 28)   // ENOSPC
        {
        }
    }

    /// <summary>Removes what <see cref="Fill"/> wrote.</summary>
    public void Free() => File.Delete(Path.Combine(Folder, "filler"));

    /// <inheritdoc />
    public void Dispose()
    {
        if (Run("umount", Folder).Exit != 0) Run("umount", "-l", Folder);
    }

    private static string? ProbeMount()
    {
        if (!OperatingSystem.IsLinux()) return "tmpfs mounts are a Linux feature";
        var folder = Directory.CreateTempSubdirectory("polaformer-mount-probe-").FullName;
        try
        {
            var (exit, output) = Run("mount", "-t", "tmpfs", "-o", "size=65536", "tmpfs", folder);
            if (exit != 0) return $"this process cannot mount a tmpfs (mount exited with {exit}: {output.Trim()}); run the tests as root in a VM or a privileged container to include it";
            Run("umount", folder);
            return null;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"the mount command cannot be run ({e.Message})";
        }
        finally
        {
            Directory.Delete(folder);
        }
    }

    private static (int Exit, string Output) Run(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        string output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output);
    }
}

/// <summary>A test that mounts a <see cref="SmallFileSystem"/>: reported as skipped, with the reason, where this
/// process cannot mount one.</summary>
public sealed class MountFactAttribute : FactAttribute
{
    public MountFactAttribute()
    {
        if (SmallFileSystem.Unavailable is string why) Skip = why;
    }
}
