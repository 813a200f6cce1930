namespace PolaFormer.Training.Data;

/// <summary>One 8-bit image transform of a pipeline (the PIL stage of a torchvision <c>Compose</c>). It draws all
/// its randomness from the generator it is given, so its result depends only on the image and the generator's state.</summary>
internal interface IImageTransform
{
    RgbImage Apply(RgbImage image, SampleRng rng);
}
