using FluentAssertions;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Models;

/// <summary>Inputs LibTorch would reject with native stack frames get an ArgumentException naming the input, the
/// value and what was expected, in every family, before any operator runs.</summary>
public sealed class ModelInputTests : TorchTest
{
    public static TheoryData<string, int> Families() => new()
    {
        { "pola_pvt_tiny", 32 },
        { "pola_swin_tiny", 224 },
        { "pola_vit_tiny", 32 },
    };

    [Theory]
    [MemberData(nameof(Families))]
    public void Empty_batches_integer_images_and_a_foreign_dtype_are_refused_by_name(string name, int size)
    {
        using var model = ModelRegistry.Create(name, numClasses: 3, imageSize: (size, size));
        model.eval();
        using var noGrad = no_grad();
        FluentActions.Invoking(() => model.forward(zeros(0, 3, size, size)))
            .Should().Throw<ArgumentException>().WithParameterName("images").WithMessage("*batch size 0*at least one*");
        FluentActions.Invoking(() => model.forward(zeros([1, 3, size, size], dtype: ScalarType.Int64)))
            .Should().Throw<ArgumentException>().WithParameterName("images").WithMessage("*Int64*floating-point*");
        FluentActions.Invoking(() => model.forward(zeros([1, 3, size, size], dtype: ScalarType.Float64)))
            .Should().Throw<ArgumentException>().WithParameterName("images").WithMessage("*Float64*parameters are Float32*");
        model.forward(zeros(1, 3, size, size)).shape.Should().Equal(1, 3);
    }
}
