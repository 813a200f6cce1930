namespace PolaFormer.Training.Data;

/// <summary>
/// One 8-bit image transform of a pipeline (the PIL stage of a torchvision <c>Compose</c>). It draws all its randomness
/// from the generator it is given, so its result depends only on the image and the generator's state; it never
/// modifies the image it is given. Implement it to add a stage of your own
/// (<see cref="ImagePipeline.Append"/>); its <see cref="object.ToString"/> describes it in the pipeline's
/// <see cref="ImagePipeline.Stages"/>.
/// </summary>
public interface IImageTransform
{
    /// <summary>Transforms one image.</summary>
    /// <param name="image">The input, not modified.</param>
    /// <param name="rng">This sample's generator (keyed by seed, epoch and sample index).</param>
    /// <returns>A new image, or <paramref name="image"/> itself when nothing changes.</returns>
    RgbImage Apply(RgbImage image, SampleRng rng);
}
