// The CUDA kernel tests route PolarityAttention through a host-compiled grid emulator via process-wide switches;
// with test classes in parallel, training tests on other threads saw those switches (NaN losses). Run serially.
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]
