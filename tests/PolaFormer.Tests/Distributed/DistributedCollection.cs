using Xunit;

namespace PolaFormer.Tests.Distributed;

/// <summary>
/// The distributed tests run alone, after the parallel ones: the mpirun jobs load both cores, the ranks-as-threads
/// tests build models (torch's global generator) and start threads (new malloc arenas), and the rendezvous tests
/// time sockets — each of which could disturb a test running beside them (the trainer's bit-exact resume and flat
/// memory checks), or be disturbed by it.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class DistributedCollection
{
    public const string Name = "Distributed (run alone)";
}
