using System.Collections;
using System.Globalization;

namespace PolaFormer.Training.Distributed;

/// <summary>
/// Where this process sits in a multi-process job, as the launcher told it through environment variables:
/// torchrun and Kubernetes' PyTorchJob set <c>RANK</c>, <c>WORLD_SIZE</c>, <c>LOCAL_RANK</c>, <c>MASTER_ADDR</c>,
/// <c>MASTER_PORT</c>; Open MPI's <c>mpirun</c> sets <c>OMPI_COMM_WORLD_RANK</c>, <c>OMPI_COMM_WORLD_SIZE</c>,
/// <c>OMPI_COMM_WORLD_LOCAL_RANK</c>. The torchrun variables win when both are present; with neither, the process
/// is a job of one.
/// </summary>
/// <param name="Rank">This process's rank, in [0, <paramref name="WorldSize"/>).</param>
/// <param name="WorldSize">Number of processes in the job.</param>
/// <param name="LocalRank">Rank among the processes on this machine (the GPU index with NCCL).</param>
/// <param name="MasterAddress"><c>MASTER_ADDR</c>: host of rank 0, where the NCCL rendezvous listens; null when unset.</param>
/// <param name="MasterPort"><c>MASTER_PORT</c>; null when unset.</param>
/// <param name="Source">Which launcher's variables were read: "torchrun", "mpirun" or "none".</param>
/// <param name="RendezvousPort">The port rank 0 listens on for the NCCL rendezvous: <c>POLAFORMER_RENDEZVOUS_PORT</c>
/// when set; else <c>MASTER_PORT</c> + 1 when torchrun's agent already serves its own store on <c>MASTER_PORT</c>
/// (<c>TORCHELASTIC_USE_AGENT_STORE=True</c>, torchrun's default); else <c>MASTER_PORT</c> (Kubernetes' PyTorchJob,
/// hand-set variables). Null when no port is known.</param>
public sealed record LaunchEnvironment(int Rank, int WorldSize, int LocalRank, string? MasterAddress, int? MasterPort, string Source,
    int? RendezvousPort)
{
    /// <summary>A job of one process.</summary>
    public static LaunchEnvironment SingleProcess { get; } = new(0, 1, 0, null, null, "none", null);

    /// <summary>Reads this process's environment.</summary>
    /// <exception cref="ArgumentException">A variable is malformed or inconsistent (named in the message).</exception>
    public static LaunchEnvironment FromProcess()
    {
        var variables = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in Environment.GetEnvironmentVariables())
            variables[(string)entry.Key] = (string?)entry.Value ?? "";
        return FromVariables(variables);
    }

    /// <summary>Reads the given variables (for tests and for launchers that pass them explicitly).</summary>
    /// <exception cref="ArgumentException">A variable is malformed or inconsistent (named in the message).</exception>
    public static LaunchEnvironment FromVariables(IReadOnlyDictionary<string, string> variables)
    {
        ArgumentNullException.ThrowIfNull(variables);
        string? Get(string name) => variables.TryGetValue(name, out var v) && !string.IsNullOrWhiteSpace(v) ? v.Trim() : null;

        string? masterAddress = Get("MASTER_ADDR");
        int? masterPort = Get("MASTER_PORT") is { } portText ? Parse("MASTER_PORT", portText, 1, 65535) : null;
        int? rendezvousPort = Get("POLAFORMER_RENDEZVOUS_PORT") is { } own ? Parse("POLAFORMER_RENDEZVOUS_PORT", own, 1, 65535)
            : Get("TORCHELASTIC_USE_AGENT_STORE") == "True" && masterPort is { } taken ? (taken % 65535) + 1
            : masterPort;

        if (Get("WORLD_SIZE") is { } worldText)
        {
            int world = Parse("WORLD_SIZE", worldText, 1, int.MaxValue);
            int rank = Get("RANK") is { } rankText ? Parse("RANK", rankText, 0, world - 1)
                : world == 1 ? 0 : throw new ArgumentException($"WORLD_SIZE is {world} but RANK is not set; the launcher must set both (torchrun does).", "RANK");
            int local = Get("LOCAL_RANK") is { } localText ? Parse("LOCAL_RANK", localText, 0, world - 1) : 0;
            return new LaunchEnvironment(rank, world, local, masterAddress, masterPort, "torchrun", rendezvousPort);
        }
        if (Get("RANK") is not null)
            throw new ArgumentException("RANK is set but WORLD_SIZE is not; the launcher must set both (torchrun does).", "WORLD_SIZE");

        if (Get("OMPI_COMM_WORLD_SIZE") is { } ompiWorldText)
        {
            int world = Parse("OMPI_COMM_WORLD_SIZE", ompiWorldText, 1, int.MaxValue);
            int rank = Parse("OMPI_COMM_WORLD_RANK", Get("OMPI_COMM_WORLD_RANK") ?? "0", 0, world - 1);
            int local = Parse("OMPI_COMM_WORLD_LOCAL_RANK", Get("OMPI_COMM_WORLD_LOCAL_RANK") ?? "0", 0, world - 1);
            return new LaunchEnvironment(rank, world, local, masterAddress, masterPort, "mpirun", rendezvousPort);
        }
        return SingleProcess with { MasterAddress = masterAddress, MasterPort = masterPort, RendezvousPort = rendezvousPort };
    }

    private static int Parse(string name, string text, int min, int max)
    {
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) || value < min || value > max)
            throw new ArgumentException(
                max == int.MaxValue
                    ? $"{name} is '{text}'; expected an integer of at least {min}."
                    : $"{name} is '{text}'; expected an integer in [{min}, {max}].", name);
        return value;
    }
}
