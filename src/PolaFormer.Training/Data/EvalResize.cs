namespace PolaFormer.Training.Data;

/// <summary>How evaluation resizes an image before the centre crop.</summary>
public enum EvalResize
{
    /// <summary>The authors' code (<c>data/build.py</c>: <c>Resize((s, s))</c> with s = ⌊size / cropPct⌋): both sides
    /// to s, not keeping the aspect ratio. The official PolaFormer numbers were measured this way.</summary>
    Square,

    /// <summary>timm's/torchvision's usual eval (<c>Resize(s)</c>): the shorter side to s, the longer side to
    /// ⌊s · long / short⌋, keeping the aspect ratio.</summary>
    ShorterSide,
}
