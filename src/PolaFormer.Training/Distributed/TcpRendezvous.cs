using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace PolaFormer.Training.Distributed;

/// <summary>
/// A star of TCP connections around rank 0 at <c>MASTER_ADDR:MASTER_PORT</c>, like torch.distributed's TCP store:
/// rank 0 listens, every other rank connects (retrying until rank 0 is up) and introduces itself. It carries the
/// NCCL unique id (<see cref="Broadcast"/>) and CPU-side barriers (<see cref="Barrier"/>), and, since every rank
/// keeps its connection, notices a rank that died: its socket closes and rank 0 names it.
/// </summary>
internal sealed class TcpRendezvous : IDisposable
{
    private const uint Magic = 0x50465256; // "PFRV"
    private const byte BarrierToken = 0xB7;

    private readonly Socket[] _peers; // rank 0: index = peer rank (0 unused); others: [0] = rank 0
    private readonly TimeSpan _timeout;

    private TcpRendezvous(int rank, int worldSize, Socket[] peers, TimeSpan timeout, string endpoint)
    {
        Rank = rank;
        WorldSize = worldSize;
        _peers = peers;
        _timeout = timeout;
        Endpoint = endpoint;
    }

    /// <summary>This rank.</summary>
    public int Rank { get; }

    /// <summary>Number of ranks.</summary>
    public int WorldSize { get; }

    /// <summary>"host:port" of rank 0.</summary>
    public string Endpoint { get; }

    /// <summary>Joins the rendezvous; returns when all <paramref name="worldSize"/> ranks are connected.</summary>
    /// <exception cref="DistributedException">Rank 0 cannot listen, a rank cannot reach rank 0, or not every rank
    /// arrived within <paramref name="timeout"/> (the message lists the missing ranks).</exception>
    public static TcpRendezvous Join(string host, int port, int rank, int worldSize, TimeSpan timeout)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(host);
        string endpoint = $"{host}:{port}";
        var deadline = Stopwatch.StartNew();
        return rank == 0 ? Listen(host, port, worldSize, timeout, deadline, endpoint) : Connect(host, port, rank, worldSize, timeout, deadline, endpoint);
    }

    private static TcpRendezvous Listen(string host, int port, int worldSize, TimeSpan timeout, Stopwatch clock, string endpoint)
    {
        var peers = new Socket[worldSize];
        if (worldSize == 1) return new TcpRendezvous(0, 1, peers, timeout, endpoint);
        using var listener = Bind(port, endpoint);
        try
        {
            for (int joined = 1; joined < worldSize; joined++)
            {
                var left = timeout - clock.Elapsed;
                Socket socket;
                try
                {
                    using var cancel = new CancellationTokenSource(left > TimeSpan.Zero ? left : TimeSpan.Zero);
                    socket = listener.AcceptSocketAsync(cancel.Token).AsTask().GetAwaiter().GetResult();
                }
                catch (OperationCanceledException)
                {
                    var missing = Enumerable.Range(1, worldSize - 1).Where(r => peers[r] is null);
                    throw new DistributedException(0, "rendezvous",
                        $"rank 0 of {worldSize}: rank(s) {string.Join(", ", missing)} did not join the rendezvous at {endpoint} within {timeout.TotalSeconds:0.#} s; "
                        + "check that every rank was started with the same MASTER_ADDR/MASTER_PORT/WORLD_SIZE and can reach this host.");
                }
                Configure(socket, timeout);
                var hello = new byte[12];
                int peer;
                try
                {
                    ReadExactly(socket, hello);
                    peer = BinaryPrimitives.ReadInt32LittleEndian(hello.AsSpan(4));
                    int theirWorld = BinaryPrimitives.ReadInt32LittleEndian(hello.AsSpan(8));
                    if (BinaryPrimitives.ReadUInt32LittleEndian(hello) != Magic)
                        throw new DistributedException(0, "rendezvous", $"rank 0: something that is not a rank of this job connected to {endpoint} ({socket.RemoteEndPoint}); use a free MASTER_PORT.");
                    if (theirWorld != worldSize)
                        throw new DistributedException(0, "rendezvous", $"rank 0: rank {peer} was started with WORLD_SIZE {theirWorld}, this rank with {worldSize}; start every rank with the same WORLD_SIZE.");
                    if (peer < 1 || peer >= worldSize || peers[peer] is not null)
                        throw new DistributedException(0, "rendezvous", $"rank 0: a second process claims rank {peer}, or it is out of range [1, {worldSize}); every rank needs a distinct RANK.");
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
                peers[peer] = socket;
            }
            return new TcpRendezvous(0, worldSize, peers, timeout, endpoint);
        }
        catch
        {
            foreach (var p in peers) p?.Dispose();
            throw;
        }
    }

    private static TcpListener Bind(int port, string endpoint)
    {
        try
        {
            var listener = new TcpListener(IPAddress.IPv6Any, port);
            listener.Server.DualMode = true; // MASTER_ADDR may be an IPv4 or IPv6 address or a name of either
            listener.Start();
            return listener;
        }
        catch (SocketException)
        {
            try
            {
                var listener = new TcpListener(IPAddress.Any, port);
                listener.Start();
                return listener;
            }
            catch (SocketException e)
            {
                throw new DistributedException(0, "rendezvous",
                    $"rank 0: cannot listen on port {port} for the rendezvous at {endpoint} ({e.SocketErrorCode}: {e.Message}); choose a free MASTER_PORT.", e);
            }
        }
    }

    private static TcpRendezvous Connect(string host, int port, int rank, int worldSize, TimeSpan timeout, Stopwatch clock, string endpoint)
    {
        if (rank < 1 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {worldSize}).");
        string lastError = "no attempt";
        var delay = TimeSpan.FromMilliseconds(20);
        while (clock.Elapsed < timeout)
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            try
            {
                var left = timeout - clock.Elapsed;
                using var cancel = new CancellationTokenSource(left > TimeSpan.Zero ? left : TimeSpan.Zero);
                socket.ConnectAsync(host, port, cancel.Token).AsTask().GetAwaiter().GetResult();
                Configure(socket, timeout);
                var hello = new byte[12];
                BinaryPrimitives.WriteUInt32LittleEndian(hello, Magic);
                BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(4), rank);
                BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(8), worldSize);
                socket.Send(hello);
                return new TcpRendezvous(rank, worldSize, [socket], timeout, endpoint);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                socket.Dispose();
                lastError = e is SocketException s ? $"{s.SocketErrorCode}: {s.Message}" : "timed out";
                Thread.Sleep(delay);
                delay = TimeSpan.FromMilliseconds(Math.Min(1000, delay.TotalMilliseconds * 2)); // rank 0 may still be starting
            }
        }
        throw new DistributedException(rank, "rendezvous",
            $"rank {rank} of {worldSize}: could not reach rank 0 at {endpoint} within {timeout.TotalSeconds:0.#} s (last error: {lastError}); "
            + "check MASTER_ADDR/MASTER_PORT and that rank 0 is running.");
    }

    /// <summary>Rank 0's <paramref name="payload"/> on every rank (others pass null).</summary>
    public byte[] Broadcast(byte[]? payload, string what = "broadcast")
    {
        if (Rank == 0)
        {
            ArgumentNullException.ThrowIfNull(payload);
            var header = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(header, payload.Length);
            for (int r = 1; r < WorldSize; r++)
            {
                Send(r, header, what);
                Send(r, payload, what);
            }
            return payload;
        }
        var length = new byte[4];
        Receive(0, length, what);
        var data = new byte[BinaryPrimitives.ReadInt32LittleEndian(length)];
        Receive(0, data, what);
        return data;
    }

    /// <summary>Returns when every rank has called it.</summary>
    public void Barrier(string what = "barrier")
    {
        var token = new[] { BarrierToken };
        if (Rank == 0)
        {
            for (int r = 1; r < WorldSize; r++) Receive(r, token, what);
            for (int r = 1; r < WorldSize; r++) Send(r, token, what);
        }
        else
        {
            Send(0, token, what);
            Receive(0, token, what);
        }
        if (token[0] != BarrierToken)
            throw new DistributedException(Rank, what, $"rank {Rank}: the rendezvous stream is out of step in {what}; every rank must run the same collectives.");
    }

    private Socket Peer(int rank) => Rank == 0 ? _peers[rank] : _peers[0];

    private void Send(int peer, byte[] data, string what)
    {
        try
        {
            Peer(peer).Send(data);
        }
        catch (SocketException e)
        {
            throw Lost(peer, what, e);
        }
    }

    private void Receive(int peer, byte[] data, string what)
    {
        try
        {
            ReadExactly(Peer(peer), data);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
        {
            throw new DistributedException(Rank, what,
                $"rank {Rank} of {WorldSize}: {what} timed out after {_timeout.TotalSeconds:0.#} s waiting for rank {peer}; it has probably hung or is running different code.", e);
        }
        catch (Exception e) when (e is SocketException or EndOfStreamException)
        {
            throw Lost(peer, what, e);
        }
    }

    private DistributedException Lost(int peer, string what, Exception e) => new(Rank, what,
        $"rank {Rank} of {WorldSize}: the connection to rank {peer} broke during {what} ({e.Message}); rank {peer} has probably died.", e);

    private static void Configure(Socket socket, TimeSpan timeout)
    {
        socket.NoDelay = true;
        int ms = (int)Math.Clamp(timeout.TotalMilliseconds, 1, int.MaxValue);
        socket.ReceiveTimeout = ms;
        socket.SendTimeout = ms;
    }

    private static void ReadExactly(Socket socket, byte[] buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = socket.Receive(buffer, done, buffer.Length - done, SocketFlags.None);
            if (n == 0) throw new EndOfStreamException("the peer closed the connection");
            done += n;
        }
    }

    /// <summary>Closes every connection (peers waiting on this rank then see it leave).</summary>
    public void Dispose()
    {
        foreach (var socket in _peers) socket?.Dispose();
    }
}
