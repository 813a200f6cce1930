namespace PolaFormer.Checkpoints;

/// <summary>A reference to a Python class or function by name (pickle's <c>GLOBAL</c>), e.g.
/// <c>torch.float32</c> or <c>collections.OrderedDict</c>; appears as a value when a checkpoint stores the class
/// itself rather than an instance.</summary>
/// <param name="Module">The module, e.g. <c>torch._utils</c>.</param>
/// <param name="Name">The qualified name inside the module, e.g. <c>_rebuild_tensor_v2</c>.</param>
public sealed record PickledGlobal(string Module, string Name)
{
    /// <summary><see cref="Module"/> and <see cref="Name"/> joined by a dot.</summary>
    public string FullName => $"{Module}.{Name}";

    /// <summary>The full name.</summary>
    public override string ToString() => FullName;
}
