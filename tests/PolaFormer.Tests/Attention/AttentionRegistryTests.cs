using FluentAssertions;
using PolaFormer.Attention;
using PolaFormer.Models;
using PolaFormer.Tests.Infrastructure;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Attention;

/// <summary>A kind added from outside the library reaches every family through the registry alone, and the one
/// stage-string parser reports bad strings by name.</summary>
public sealed class AttentionRegistryTests : TorchTest
{
    /// <summary>The smallest attention there is: each token mixed with the mean token through one projection. Its
    /// parameter is named so the state dict shows where it went.</summary>
    private sealed class MeanTokenAttention : TokenAttention
    {
        private readonly Linear mix;

        public MeanTokenAttention(AttentionSpec spec) : base(nameof(MeanTokenAttention), spec.Dim, spec.NumHeads)
        {
            mix = nn.Linear(spec.Dim, spec.Dim, device: spec.Device, dtype: spec.Dtype);
            RegisterComponents();
        }

        public override char Letter => 'T';

        public override Tensor forward(Tensor x, long height, long width, Tensor? mask = null, Tensor? paddingMask = null) =>
            mix.forward(x - x.mean([1], keepdim: true));
    }

    static AttentionRegistryTests() => AttentionRegistry.Register('T', "mean-token", spec => new MeanTokenAttention(spec));

    [Fact]
    public void A_kind_registered_here_builds_and_runs_in_every_family()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        AttentionRegistry.Registered.Select(k => k.Letter).Should().Contain(['L', 'S', 'T']);
        var models = new (Backbone Model, int Side)[]
        {
            (ModelRegistry.Create("pola_pvt_tiny", numClasses: 4, attentionTypes: "LTST", imageSize: (64, 64)), 64),
            (ModelRegistry.Create("pola_swin_tiny", numClasses: 4, attentionTypes: "TTLS", imageSize: (64, 64)), 64),
            (ModelRegistry.Create("pola_vit_tiny", numClasses: 4, attentionTypes: "T", imageSize: (32, 32)), 32),
        };
        foreach (var (model, side) in models)
        {
            using (model)
            {
                model.eval();
                var keys = model.state_dict().Keys;
                keys.Should().Contain(k => k.EndsWith(".attn.mix.weight", StringComparison.Ordinal), $"{model.GetName()} has the registered kind's layers");
                var y = model.forward(randn(2, 3, side, side));
                y.shape.Should().Equal(2, 4);
                y.isfinite().all().item<bool>().Should().BeTrue();
            }
        }
    }

    [Fact]
    public void Re_registering_a_taken_letter_for_another_kind_is_refused()
    {
        FluentActions.Invoking(() => AttentionRegistry.Register('L', "other", spec => new MeanTokenAttention(spec)))
            .Should().Throw<ArgumentException>().WithParameterName("letter").WithMessage("*'L'*already registered*polarity*");
        FluentActions.Invoking(() => AttentionRegistry.Register('M', "mixed", spec => new MeanTokenAttention(spec)))
            .Should().Throw<ArgumentException>().WithParameterName("letter").WithMessage("*'M'*mixes kinds*");
    }

    [Fact]
    public void The_one_parser_repeats_stage_letters_over_blocks_and_mixes_an_M_stage()
    {
        AttentionRegistry.ParseBlocks("lLsS", [1, 2, 1, 1]).Select(b => new string(b)).Should().Equal("L", "LL", "S", "S");
        AttentionRegistry.ParseBlocks("LLMS2", [2, 2, 3, 2]).Select(b => new string(b)).Should().Equal("LL", "LL", "LLS", "SS");
        FluentActions.Invoking(() => AttentionRegistry.ParseStages("LLXS", 4, "options.AttentionTypes"))
            .Should().Throw<ArgumentException>().WithParameterName("options.AttentionTypes").WithMessage("*'X' at position 2*'L' (polarity)*'S' (softmax)*");
        FluentActions.Invoking(() => AttentionRegistry.ParseStages("LLS", 4))
            .Should().Throw<ArgumentException>().WithMessage("*3 letters*one letter per stage (4)*");
        FluentActions.Invoking(() => AttentionRegistry.ParseBlocks("LLMSx", [2, 2, 3, 2]))
            .Should().Throw<ArgumentException>().WithMessage("*'x' after the 4 stage letters*block count*");
    }
}
