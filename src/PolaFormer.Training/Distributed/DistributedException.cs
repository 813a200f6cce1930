namespace PolaFormer.Training.Distributed;

/// <summary>
/// A distributed backend could not be set up, or a collective failed. The message names this process's rank and
/// the operation, so the first line of a failed job's log says which rank saw what.
/// </summary>
public sealed class DistributedException : InvalidOperationException
{
    /// <summary>An error of <paramref name="operation"/> on <paramref name="rank"/>.</summary>
    /// <param name="rank">The rank that saw the error (−1 before the rank is known).</param>
    /// <param name="operation">What was being done, e.g. "all-reduce (sum) of gradient bucket 2/3".</param>
    /// <param name="message">The whole message, which should mention the rank and the operation.</param>
    /// <param name="inner">The underlying error, if any.</param>
    public DistributedException(int rank, string operation, string message, Exception? inner = null)
        : base(message, inner)
    {
        Rank = rank;
        Operation = operation;
    }

    /// <summary>The rank that saw the error (−1 before the rank is known).</summary>
    public int Rank { get; }

    /// <summary>The operation that failed.</summary>
    public string Operation { get; }
}
