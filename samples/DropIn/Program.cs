using System.Diagnostics;
using PolaFormer.Attention;
using PolaFormer.Training.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

// A small plain ViT as a TorchSharp user writes it, trained for one epoch (or as many as the first argument says)
// on the bundled digits (32×32, 8,000 train / 2,000 test). Its attention is built in one place, AttentionLayer at
// the bottom: that line is the whole difference between softmax and polarity attention (the README shows the diff
// and both results).

const int BatchSize = 64;
const long Dim = 64, Depth = 4, Heads = 2, Patch = 4;
int epochs = args.Length > 0 ? int.Parse(args[0]) : 1;   // `dotnet run -- 3` trains longer

manual_seed(0);
var data = Datasets.Open(null);   // the bundled digits, with the recipe that suits them
var train = new BatchLoader(data.Train, ImagePipeline.Train(data.Recipe), new BatchLoaderOptions { BatchSize = BatchSize, Seed = 0 });
var test = new BatchLoader(data.Validation, ImagePipeline.Eval(data.Recipe),
    new BatchLoaderOptions { BatchSize = 500, Shuffle = false, DropLast = false });

var model = new TinyVit(imageSize: data.Recipe.ImageSize, Patch, Dim, Depth, Heads, classes: data.Train.ClassNames.Count);
var optimizer = optim.AdamW(model.parameters(), lr: 1e-3, weight_decay: 0.05);
Console.WriteLine($"{model.Attention} | {model.parameters().Sum(p => p.numel()):N0} parameters | {get_num_threads()} threads");

var clock = Stopwatch.StartNew();
for (int epoch = 0; epoch < epochs; epoch++)
{
    model.train();
    double lossSum = 0;
    int steps = 0;
    foreach (var batch in train.Epoch(epoch))
    {
        using var scope = NewDisposeScope();
        var loss = nn.functional.cross_entropy(model.forward(batch.Images), batch.Labels);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        lossSum += loss.item<float>();
        steps++;
    }
    Console.WriteLine($"epoch {epoch + 1}: train loss {lossSum / steps:F3} ({steps} steps, {clock.Elapsed.TotalSeconds:F0} s)");
}
double trainSeconds = clock.Elapsed.TotalSeconds;

model.eval();
long correct = 0, seen = 0;
using (no_grad())
{
    foreach (var batch in test.Epoch(0))
    {
        using var scope = NewDisposeScope();
        correct += model.forward(batch.Images).argmax(1).eq(batch.Labels).sum().item<long>();
        seen += batch.Count;
    }
}
Console.WriteLine($"test top-1 {100.0 * correct / seen:F2}% ({correct}/{seen}) | train {trainSeconds:F0} s");

/// <summary>Patch embedding, pre-norm transformer blocks, mean-pooled classifier.</summary>
sealed class TinyVit : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d patch_embed;
    private readonly Parameter pos_embed;
    private readonly ModuleList<Block> blocks = new();
    private readonly LayerNorm norm;
    private readonly Linear head;
    private readonly long grid;

    public TinyVit(long imageSize, long patch, long dim, long depth, long heads, long classes) : base(nameof(TinyVit))
    {
        grid = imageSize / patch;
        patch_embed = nn.Conv2d(3, dim, kernel_size: patch, stride: patch);
        pos_embed = new Parameter(randn(1, grid * grid, dim) * 0.02);
        for (int i = 0; i < depth; i++) blocks.Add(new Block(dim, grid, heads));
        norm = nn.LayerNorm(dim);
        head = nn.Linear(dim, classes);
        RegisterComponents();
    }

    public string Attention => blocks[0].Attention;

    public override Tensor forward(Tensor images)
    {
        var x = patch_embed.forward(images).flatten(2).transpose(1, 2) + pos_embed;   // (B, grid², dim)
        foreach (var block in blocks) x = block.forward(x);
        return head.forward(norm.forward(x).mean([1]));
    }
}

/// <summary>x + attn(norm(x)), then x + mlp(norm(x)).</summary>
sealed class Block : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm norm1, norm2;
    private readonly TokenAttention attn;
    private readonly Sequential mlp;
    private readonly long grid;

    public Block(long dim, long grid, long heads) : base(nameof(Block))
    {
        this.grid = grid;
        norm1 = nn.LayerNorm(dim);
        attn = Layers.AttentionLayer(dim, grid, heads);
        norm2 = nn.LayerNorm(dim);
        mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim));
        RegisterComponents();
    }

    public string Attention => attn.GetType().Name;

    public override Tensor forward(Tensor x)
    {
        x = x + attn.forward(norm1.forward(x), grid, grid);
        return x + mlp.forward(norm2.forward(x));
    }
}

static class Layers
{
    /// <summary>Attention over a grid × grid map of dim-channel tokens: (B, grid², dim) in and out.</summary>
    public static TokenAttention AttentionLayer(long dim, long grid, long heads) =>
        new SpatialReductionAttention(dim, numHeads: heads, qkvBias: true);
}
