using System.Diagnostics;
using PolaFormer.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PolaFormer.Benchmarks;

/// <summary>
/// <c>scalar-stress --name pola_pvt_tiny --seconds 300</c>: training steps (forward, a loss, backward) of a registered
/// model on random images while a second thread forces garbage collections without pause, until the time is up or a
/// step fails; exit code 1 on a failure. Collections that often make TorchSharp 0.107's finalizer free any Scalar left
/// to it while LibTorch still reads it (src/PolaFormer/ScalarArithmetic.cs), so a library that leaves one in its
/// forward or backward fails within minutes. <c>--control</c> runs TorchSharp's own <c>a + b</c> (an implicit
/// alpha = 1) the same way instead, to show the harness catches the race on this machine.
/// </summary>
internal static class ScalarStressCommand
{
    public static int Run(Arguments args)
    {
        string name = args.Text("name", "pola_pvt_tiny");
        double seconds = args.Double("seconds", 300);
        long size = args.Int("size", 32), batch = args.Int("batch", 4);
        bool control = args.Flag("control");
        torch.set_num_threads((int)args.Int("threads", 1));
        manual_seed(0);

        using var model = control ? null : ModelRegistry.Create(name, numClasses: 10, imageSize: (size, size));
        model?.train();
        using var a = randn(64);
        using var b = randn(64);

        bool stop = false;
        long collections = 0;
        var collector = new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                Interlocked.Increment(ref collections);
            }
        }) { IsBackground = true, Name = "forced collections" };
        collector.Start();

        var clock = Stopwatch.StartNew();
        long steps = 0;
        string? failure = null;
        try
        {
            while (clock.Elapsed.TotalSeconds < seconds)
            {
                using var scope = NewDisposeScope();
                if (model is null)
                {
                    for (int i = 0; i < 1000; i++) _ = a + b;
                }
                else
                {
                    var logits = model.call(randn(batch, 3, size, size));
                    (logits * logits).mean().backward();   // not square(): TorchSharp makes its 2 a temporary Scalar
                    model.zero_grad();
                }
                steps++;
            }
        }
        catch (Exception e) when (e is System.Runtime.InteropServices.ExternalException or InvalidOperationException)
        {
            failure = $"{e.GetType().Name}: {e.Message.Split('\n')[0]}";
        }
        Volatile.Write(ref stop, true);
        collector.Join();

        Report.Print(new
        {
            benchmark = "scalar-stress", model = control ? "control: 1000 × (a + b) per step" : name,
            image_size = control ? (long?)null : size, batch = control ? (long?)null : batch,
            steps, seconds = Math.Round(clock.Elapsed.TotalSeconds, 1), forced_collections = Interlocked.Read(ref collections),
            failed = failure is not null, failure,
            threads = torch.get_num_threads(), processors = Environment.ProcessorCount, cpu_runtime = RunInfo.CpuRuntime,
            torch_version = torch.__version__, runtime = RunInfo.TorchSharpVersion, language = "csharp",
            date = DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture),
        }, args.Flag("json"));
        return failure is null ? 0 : 1;
    }
}
