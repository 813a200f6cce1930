using System.Diagnostics;
using System.Globalization;

namespace PolaFormer.Training.Reporting;

/// <summary>
/// Training progress for people: on a terminal a live line per epoch (bar, step, loss, learning rate, images/s,
/// ETA) redrawn in place; when output is redirected (CI, log files) plain lines every <c>logEvery</c> steps.
/// </summary>
public sealed class ProgressReporter
{
    private readonly TextWriter _out;
    private readonly bool _live;
    private readonly int _logEvery;
    private readonly Stopwatch _epochClock = new();
    private int _epoch, _epochs, _steps;
    private long _images;
    private DateTime _lastDraw;

    /// <summary>Reports to <paramref name="output"/> (default: the console).</summary>
    /// <param name="output">Where to write.</param>
    /// <param name="live">Redraw one line in place (default: when the console is not redirected).</param>
    /// <param name="logEvery">With plain lines, log every this many steps.</param>
    public ProgressReporter(TextWriter? output = null, bool? live = null, int logEvery = 50)
    {
        _out = output ?? Console.Out;
        _live = live ?? (output is null && !Console.IsOutputRedirected);
        _logEvery = Math.Max(1, logEvery);
    }

    /// <summary>Writes a line (a message between progress updates).</summary>
    public void Info(string message)
    {
        if (_live) _out.Write("\r\u001b[2K");
        _out.WriteLine(message);
    }

    /// <summary>An epoch starts.</summary>
    public void StartEpoch(int epoch, int epochs, int steps, int firstStep = 0)
    {
        (_epoch, _epochs, _steps, _images) = (epoch, epochs, steps, 0);
        _epochClock.Restart();
        _lastDraw = DateTime.MinValue;
        if (firstStep > 0) Info($"epoch {epoch + 1}/{epochs}: resuming at step {firstStep}/{steps}");
    }

    /// <summary>A training step finished.</summary>
    public void Step(int step, double loss, double lr, int images)
    {
        _images += images;
        double seconds = Math.Max(_epochClock.Elapsed.TotalSeconds, 1e-9);
        double rate = _images / seconds;
        int done = step + 1;
        var stepsLeft = _steps - done;
        var eta = TimeSpan.FromSeconds(rate > 0 ? stepsLeft * (seconds / Math.Max(1, done)) : 0);
        string text = string.Create(CultureInfo.InvariantCulture,
            $"epoch {_epoch + 1}/{_epochs} {Bar(done, _steps)} {done}/{_steps} loss {loss:0.0000} lr {lr:0.00e+0} {rate:0.0} img/s ETA {eta:hh\\:mm\\:ss}");
        if (_live)
        {
            if (done == _steps || DateTime.UtcNow - _lastDraw > TimeSpan.FromMilliseconds(200))
            {
                _out.Write("\r\u001b[2K" + text);
                _out.Flush();
                _lastDraw = DateTime.UtcNow;
            }
        }
        else if (done % _logEvery == 0 || done == _steps)
        {
            _out.WriteLine(text);
        }
    }

    /// <summary>An epoch ended with validation results.</summary>
    public void EndEpoch(EpochMetrics metrics, bool best)
    {
        Info(string.Create(CultureInfo.InvariantCulture,
            $"epoch {metrics.Epoch}/{_epochs}: train loss {metrics.TrainLoss:0.0000}, val loss {metrics.ValLoss:0.0000}, top-1 {metrics.ValTop1:0.00}%, top-5 {metrics.ValTop5:0.00}%, {metrics.Seconds:0.0} s, {metrics.ImagesPerSecond:0.0} img/s{(best ? " (best)" : "")}"));
    }

    private static string Bar(int done, int total)
    {
        const int Width = 24;
        int filled = total == 0 ? Width : (int)((long)done * Width / total);
        return "[" + new string('#', filled) + new string('.', Width - filled) + "]";
    }
}
