namespace PolaFormer.Training.Data;

/// <summary>
/// Turns a decoded image into the network's input: the 8-bit stages of a recipe (crop, flip, RandAugment or colour
/// jitter for training; resize and centre crop for evaluation), then <c>ToTensor</c> + <c>Normalize</c> into a
/// (3, size, size) float32 CHW block, then (training) random erasing. Immutable and thread-safe; all randomness comes
/// from a generator keyed by (seed, epoch, sample index), so a sample's result never depends on which thread made it.
/// </summary>
public sealed class ImagePipeline
{
    private readonly IImageTransform[] _stages;
    private readonly RandomErasing? _erasing;
    private readonly float[][] _normalise;
    private readonly List<string> _description;

    private ImagePipeline(DataRecipe recipe, bool training, IImageTransform[] stages, RandomErasing? erasing, List<string> description)
    {
        Recipe = recipe;
        IsTraining = training;
        OutputSize = recipe.ImageSize;
        _stages = stages;
        _erasing = erasing;
        _description = description;
        // ToTensor then Normalize, in float32 like torchvision: (v / 255 − mean) / std, tabulated per channel.
        double[] means = [recipe.Mean.R, recipe.Mean.G, recipe.Mean.B], stds = [recipe.Std.R, recipe.Std.G, recipe.Std.B];
        _normalise = new float[3][];
        for (int c = 0; c < 3; c++)
        {
            _normalise[c] = new float[256];
            float mean = (float)means[c], std = (float)stds[c];
            for (int v = 0; v < 256; v++) _normalise[c][v] = (v / 255f - mean) / std;
        }
    }

    /// <summary>The training pipeline of <paramref name="recipe"/> (timm's <c>transforms_imagenet_train</c>).</summary>
    public static ImagePipeline Train(DataRecipe recipe)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        recipe.Validate();
        var stages = new List<IImageTransform> { new RandomResizedCrop(recipe.ImageSize, recipe.Scale, recipe.Ratio, recipe.Interpolation) };
        if (recipe.HorizontalFlip > 0) stages.Add(new HorizontalFlip(recipe.HorizontalFlip));
        var notes = new List<string>();
        if (!string.IsNullOrWhiteSpace(recipe.AutoAugment))
        {
            stages.Add(RandAugment.Parse(recipe.AutoAugment, recipe.FillColour, recipe.Interpolation));
            if (recipe.ColorJitter > 0)
                notes.Add(FormattableString.Invariant($"ColorJitter skipped (strength {recipe.ColorJitter:0.###} in the recipe): timm applies colour jitter only without auto-augment"));
        }
        else if (recipe.ColorJitter > 0)
        {
            stages.Add(new ColorJitter(recipe.ColorJitter));
        }
        var erasing = recipe.RandomErasing > 0 ? new RandomErasing(recipe.RandomErasing) : null;
        var description = stages.Select(s => s.ToString()!).ToList();
        description.Add(NormaliseDescription(recipe));
        if (erasing is not null) description.Add(erasing.ToString());
        description.AddRange(notes);
        return new ImagePipeline(recipe, true, [.. stages], erasing, description);
    }

    /// <summary>The evaluation pipeline of <paramref name="recipe"/>: resize to ⌊size / cropPct⌋ (see
    /// <see cref="DataRecipe.EvalResize"/>), centre crop, normalise. Deterministic.</summary>
    public static ImagePipeline Eval(DataRecipe recipe)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        recipe.Validate();
        var crop = new ResizeCenterCrop(recipe.ImageSize, recipe.EvalResizeSize, recipe.EvalResize, recipe.Interpolation);
        return new ImagePipeline(recipe, false, [crop], null, [crop.ToString(), NormaliseDescription(recipe)]);
    }

    /// <summary>
    /// This pipeline with <paramref name="transforms"/> added after its 8-bit stages (before <c>ToTensor</c> +
    /// <c>Normalize</c>, and before random erasing): a stage of your own, e.g. a grayscale or a blur. Each must give
    /// an image of <see cref="OutputSize"/>; the result is checked for every sample.
    /// </summary>
    /// <example><code>
    /// var train = ImagePipeline.Train(recipe).Append(new MyBlur(radius: 1.5));
    /// var trainer = new Trainer(options, data, "runs/blur", components: new TrainerComponents { TrainPipeline = _ => train });
    /// </code></example>
    public ImagePipeline Append(params IImageTransform[] transforms)
    {
        ArgumentNullException.ThrowIfNull(transforms);
        if (transforms.Any(t => t is null)) throw new ArgumentException("transforms holds a null transform.", nameof(transforms));
        var description = new List<string>(_description);
        int normalise = description.FindIndex(d => d.StartsWith("ToTensor", StringComparison.Ordinal));
        description.InsertRange(normalise < 0 ? description.Count : normalise, transforms.Select(t => t.ToString() ?? t.GetType().Name));
        return new ImagePipeline(Recipe, IsTraining, [.. _stages, .. transforms], _erasing, description);
    }

    /// <summary>
    /// A pipeline of your own 8-bit stages followed by the recipe's <c>ToTensor</c> + <c>Normalize</c> (and, for
    /// training, its random erasing): the built-in transforms (<see cref="RandomResizedCrop"/>,
    /// <see cref="HorizontalFlip"/>, <see cref="RandAugment"/>, <see cref="ColorJitter"/>,
    /// <see cref="ResizeCenterCrop"/>) and your <see cref="IImageTransform"/>s in any order. The last stage must give
    /// <see cref="DataRecipe.ImageSize"/> × <see cref="DataRecipe.ImageSize"/> images (checked for every sample).
    /// </summary>
    /// <example><code>
    /// // The recipe's training stages without its colour augmentation, then a stage of your own.
    /// var stages = ImagePipeline.Train(recipe).Transforms.Where(t => t is not RandAugment and not ColorJitter);
    /// var train = ImagePipeline.FromTransforms(recipe, [.. stages, new MyBlur(1.5)], training: true);
    /// </code></example>
    /// <param name="recipe">Normalisation, output size and (training) random erasing.</param>
    /// <param name="transforms">The 8-bit stages, applied in order.</param>
    /// <param name="training">Whether this is a training pipeline (adds the recipe's random erasing).</param>
    /// <exception cref="ArgumentException">transforms holds a null.</exception>
    public static ImagePipeline FromTransforms(DataRecipe recipe, IEnumerable<IImageTransform> transforms, bool training)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        ArgumentNullException.ThrowIfNull(transforms);
        recipe.Validate();
        var stages = transforms.ToArray();
        if (stages.Any(t => t is null)) throw new ArgumentException("transforms holds a null transform.", nameof(transforms));
        var erasing = training && recipe.RandomErasing > 0 ? new RandomErasing(recipe.RandomErasing) : null;
        var description = stages.Select(s => s.ToString() ?? s.GetType().Name).ToList();
        description.Add(NormaliseDescription(recipe));
        if (erasing is not null) description.Add(erasing.ToString());
        return new ImagePipeline(recipe, training, stages, erasing, description);
    }

    /// <summary>The 8-bit stages, in order (the built-in ones are public types: filter, reorder or reuse them with
    /// <see cref="FromTransforms"/>).</summary>
    public IReadOnlyList<IImageTransform> Transforms => _stages;

    /// <summary>The recipe this pipeline was built from.</summary>
    public DataRecipe Recipe { get; }

    /// <summary>True for the augmenting training pipeline, false for evaluation.</summary>
    public bool IsTraining { get; }

    /// <summary>Side of the square output in pixels.</summary>
    public int OutputSize { get; }

    /// <summary>Number of floats one processed image occupies: 3 × size × size.</summary>
    public int SampleLength => 3 * OutputSize * OutputSize;

    /// <summary>What the pipeline does, stage by stage, in torchvision/timm terms (for logs).</summary>
    public IReadOnlyList<string> Stages => _description;

    /// <summary>Processes one image into a new (3, size, size) float32 CHW array, with the randomness of sample
    /// <paramref name="index"/> in <paramref name="epoch"/> under <paramref name="seed"/>.</summary>
    public float[] Process(RgbImage image, long seed = 0, int epoch = 0, int index = 0)
    {
        ArgumentNullException.ThrowIfNull(image);
        var output = new float[SampleLength];
        Process(image, SampleRng.For(seed, epoch, index, RngStream.Sample), output);
        return output;
    }

    /// <summary>The 8-bit stages only (what a model would see before normalisation).</summary>
    internal RgbImage Augment(RgbImage image, SampleRng rng)
    {
        foreach (var stage in _stages) image = stage.Apply(image, rng);
        return image;
    }

    internal void Process(RgbImage image, SampleRng rng, Span<float> destination)
    {
        if (destination.Length != SampleLength)
            throw new ArgumentException($"destination has {destination.Length} floats; one sample needs {SampleLength}.", nameof(destination));
        var result = Augment(image, rng);
        if (result.Width != OutputSize || result.Height != OutputSize)
            throw new InvalidOperationException($"The pipeline produced {result.Width}×{result.Height}; expected {OutputSize}×{OutputSize}.");
        Normalise(result, destination);
        _erasing?.Apply(destination, 3, OutputSize, OutputSize, rng);
    }

    private void Normalise(RgbImage image, Span<float> chw)
    {
        int plane = image.Width * image.Height;
        var p = image.Pixels;
        Span<float> r = chw[..plane], g = chw.Slice(plane, plane), b = chw.Slice(2 * plane, plane);
        float[] lr = _normalise[0], lg = _normalise[1], lb = _normalise[2];
        for (int i = 0, o = 0; i < plane; i++, o += 3)
        {
            r[i] = lr[p[o]];
            g[i] = lg[p[o + 1]];
            b[i] = lb[p[o + 2]];
        }
    }

    private static string NormaliseDescription(DataRecipe recipe) => FormattableString.Invariant(
        $"ToTensor + Normalize(mean=({recipe.Mean.R:0.####}, {recipe.Mean.G:0.####}, {recipe.Mean.B:0.####}), std=({recipe.Std.R:0.####}, {recipe.Std.G:0.####}, {recipe.Std.B:0.####}))");

    /// <summary>The stages, one per line.</summary>
    public override string ToString() => (IsTraining ? "train: " : "eval: ") + string.Join(" → ", _description);
}
