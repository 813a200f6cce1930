using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace PolaFormer.Tests.Pretrained;

/// <summary>
/// A real HTTP/1.1 server on a free localhost port serving one file at <see cref="Url"/>, with byte ranges
/// (<c>Range: bytes=N-</c> → 206), and two faults a download must survive or refuse: altered bytes, and a connection
/// closed after a number of bytes. Every response closes its connection, so each GET is one accepted connection.
/// </summary>
internal sealed class CheckpointServer : IDisposable
{
    private readonly TcpListener _listener;
    private readonly byte[] _content;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int _cutsLeft;

    public CheckpointServer(byte[] content, string fileName = "tiny_pola_pvt.safetensors")
    {
        _content = content;
        _listener = new TcpListener(IPAddress.Loopback, 0);   // port 0: the system picks a free one
        _listener.Start();
        Url = $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/weights/{fileName}";
        _loop = Task.Run(AcceptLoop);
    }

    public string Url { get; }

    /// <summary>The Range header of every GET received, in order (null: none).</summary>
    public ConcurrentQueue<string?> Requests { get; } = new();

    /// <summary>Serve the file with one byte changed (a corrupted transfer or a tampered mirror).</summary>
    public bool Corrupt { get; set; }

    /// <summary>The next <paramref name="responses"/> responses stop after <paramref name="bytes"/> body bytes and
    /// close the connection, although their Content-Length promised the whole rest.</summary>
    public void CutAfter(long bytes, int responses = 1)
    {
        CutBytes = bytes;
        Volatile.Write(ref _cutsLeft, responses);
    }

    private long CutBytes { get; set; }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        try { _loop.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
        _stop.Dispose();
    }

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { return; }
            _ = Task.Run(() => Serve(client));
        }
    }

    private async Task Serve(TcpClient client)
    {
        using var _ = client;
        var stream = client.GetStream();
        var headers = await ReadHeaders(stream);
        if (headers is null) return;
        string? range = headers.GetValueOrDefault("range");
        Requests.Enqueue(range);

        var body = _content;
        if (Corrupt)
        {
            body = (byte[])_content.Clone();
            body[body.Length / 2] ^= 0x5A;
        }
        long from = 0;
        string status = "200 OK";
        string extra = "";
        if (range is not null && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
        {
            from = long.Parse(range["bytes=".Length..^1], System.Globalization.CultureInfo.InvariantCulture);
            if (from >= body.Length)
            {
                await Write(stream, $"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{body.Length}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                return;
            }
            status = "206 Partial Content";
            extra = $"Content-Range: bytes {from}-{body.Length - 1}/{body.Length}\r\n";
        }
        long length = body.Length - from;
        await Write(stream, $"HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n{extra}Accept-Ranges: bytes\r\nConnection: close\r\n\r\n");
        long send = Interlocked.Decrement(ref _cutsLeft) >= 0 ? Math.Min(CutBytes, length) : length;
        await stream.WriteAsync(body.AsMemory((int)from, (int)send));
        await stream.FlushAsync();
    }

    private static async Task Write(NetworkStream stream, string text) => await stream.WriteAsync(Encoding.ASCII.GetBytes(text));

    /// <summary>The request's header fields (lower-case names), or null when the client closed first.</summary>
    private static async Task<Dictionary<string, string>?> ReadHeaders(NetworkStream stream)
    {
        var bytes = new List<byte>();
        var one = new byte[1];
        while (!(bytes.Count >= 4 && bytes[^4] == '\r' && bytes[^3] == '\n' && bytes[^2] == '\r' && bytes[^1] == '\n'))
        {
            if (await stream.ReadAsync(one) == 0) return null;
            bytes.Add(one[0]);
        }
        var lines = Encoding.ASCII.GetString(bytes.ToArray()).Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
        return lines.Skip(1)
            .Select(l => l.Split(':', 2))
            .Where(p => p.Length == 2)
            .ToDictionary(p => p[0].Trim().ToLowerInvariant(), p => p[1].Trim());
    }
}
