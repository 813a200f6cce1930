using FluentAssertions;
using PolaFormer.Training.Data;
using Xunit;

namespace PolaFormer.Tests.Training.Data;

public sealed class TrainTransformTests
{
    [Fact]
    public void The_generator_is_keyed_by_seed_epoch_index_and_stream_and_has_the_right_distributions()
    {
        SampleRng.For(1, 2, 3, RngStream.Sample).NextUInt64().Should().Be(SampleRng.For(1, 2, 3, RngStream.Sample).NextUInt64());
        var keys = new[]
        {
            SampleRng.Key(1, 2, 3, RngStream.Sample), SampleRng.Key(1, 2, 3, RngStream.Shuffle), SampleRng.Key(1, 3, 2, RngStream.Sample),
            SampleRng.Key(2, 2, 3, RngStream.Sample), SampleRng.Key(1, 2, 4, RngStream.Sample),
        };
        keys.Should().OnlyHaveUniqueItems();

        var rng = SampleRng.For(0, 0, 0, RngStream.Sample);
        var ints = Enumerable.Range(0, 60_000).Select(_ => rng.Integer(-1, 4)).ToArray();
        ints.Min().Should().Be(-1);
        ints.Max().Should().Be(4);
        ints.GroupBy(v => v).Should().OnlyContain(g => Math.Abs(g.Count() - 10_000) < 500);
        var normals = Enumerable.Range(0, 40_000).Select(_ => rng.Normal()).ToArray();
        normals.Average().Should().BeApproximately(0, 0.02);
        Math.Sqrt(normals.Average(v => v * v)).Should().BeApproximately(1, 0.02);
        var betas = Enumerable.Range(0, 20_000).Select(_ => rng.Beta(0.8, 0.8)).ToArray();
        betas.Average().Should().BeApproximately(0.5, 0.01);
        // Var of Beta(a, a) = 1 / (4(2a + 1)) = 0.0962 at a = 0.8.
        betas.Average(v => (v - 0.5) * (v - 0.5)).Should().BeApproximately(0.0962, 0.004);
        rng.Permutation(50).Order().Should().Equal(Enumerable.Range(0, 50));
    }

    [Fact]
    public void Flip_mirrors_and_colour_jitter_of_strength_zero_is_the_identity()
    {
        var image = TestImages.Noise(13, 7, 9);
        var mirrored = new HorizontalFlip(1.0).Apply(image, SampleRng.For(0, 0, 0, RngStream.Sample));
        TestImages.Pixel(mirrored, 0, 3).Should().Be(TestImages.Pixel(image, 12, 3));
        HorizontalFlip.Mirror(mirrored).Pixels.Should().Equal(image.Pixels);
        new HorizontalFlip(0.0).Apply(image, SampleRng.For(0, 0, 0, RngStream.Sample)).Pixels.Should().Equal(image.Pixels);

        new ColorJitter(0).Apply(image, SampleRng.For(0, 0, 1, RngStream.Sample)).Pixels.Should().Equal(image.Pixels);
        var jittered = Enumerable.Range(0, 20).Count(i =>
            !new ColorJitter(0.4).Apply(image, SampleRng.For(0, 0, i, RngStream.Sample)).Pixels.SequenceEqual(image.Pixels));
        jittered.Should().Be(20);
    }

    [Fact]
    public void Random_erasing_hits_a_quarter_of_images_with_unit_normal_boxes_of_2_to_33_percent()
    {
        var erasing = new RandomErasing(0.25);
        int erased = 0;
        var noise = new List<float>();
        for (int i = 0; i < 800; i++)
        {
            var chw = Enumerable.Repeat(100f, 3 * 20 * 30).ToArray();
            erasing.Apply(chw, 3, 20, 30, SampleRng.For(0, 0, i, RngStream.Sample));
            int count = chw.Count(v => v != 100f);
            if (count == 0) continue;
            erased++;
            (count / 3).Should().BeInRange((int)(0.02 * 600 * 0.5), (int)(600 / 3.0 * 1.3), "area 0.02–1/3, up to whole-pixel rounding");
            noise.AddRange(chw.Where(v => v != 100f));
        }
        erased.Should().BeInRange(160, 240);
        noise.Average().Should().BeApproximately(0f, 0.05f);
        Math.Sqrt(noise.Average(v => v * v)).Should().BeApproximately(1, 0.05);
    }
}
