using System.Reflection;
using System.Reflection.Emit;
using System.Text.RegularExpressions;
using FluentAssertions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.Operations;
using TorchSharp;
using PolaFormer.Tests.Infrastructure;
using Xunit;
using static TorchSharp.torch;

namespace PolaFormer.Tests.Packaging;

/// <summary>
/// No call in the library, the training library or the training program hands LibTorch a TorchSharp
/// <see cref="Scalar"/> that only its finalizer frees: the finalizer can run during the native call and free the Scalar
/// while LibTorch reads it (the cause of random "Unknown scalar type" / "toFloat" failures; src/PolaFormer/ScalarArithmetic.cs
/// explains it). Two readings find such calls: TorchSharp's IL says which of its members make a Scalar they never dispose
/// (<c>a + b</c> passes alpha = 1, <c>torch.arange(n)</c> its start and step, BatchNorm2d's forward counts with
/// <c>add_(1)</c>), directly or through another member; Roslyn binds the sources and reports every call of such a
/// member, every module whose forward is one, and every implicit conversion of a number to a Scalar.
/// </summary>
[Trait("Category", "Packaging")]
public sealed class NoTemporaryScalarTests
{
    public static TheoryData<string> Projects() => new() { "src/PolaFormer", "src/PolaFormer.Training", "samples/PolaFormer.Train" };

    [Theory]
    [MemberData(nameof(Projects))]
    public void Sources_make_no_Scalar_that_only_the_finalizer_frees(string project)
    {
        var findings = TemporaryScalars.Scan(project);
        findings.Should().BeEmpty(
            $"every number handed to LibTorch from {project} must be a Scalar that stays referenced until the call returns " +
            "(ScalarArithmetic's constants and helpers, or `using var s = x.ToScalar()`)");
    }

    [Fact]
    public void TorchSharps_IL_names_the_members_that_make_temporary_Scalars_and_not_the_others()
    {
        var tensor = typeof(Tensor);
        MethodBase Method(Type type, string name, params Type[] parameters) =>
            type.GetMethod(name, parameters) ?? throw new InvalidOperationException($"{type.Name}.{name} not found");

        // Members that make a Scalar and leave it to the finalizer, directly or through the member they call.
        TemporaryScalars.MakesTemporary(Method(tensor, "add", tensor)).Should().BeTrue("add(t) calls add(t, 1)");
        TemporaryScalars.MakesTemporary(Method(tensor, "op_Addition", tensor, tensor)).Should().BeTrue("a + b calls add(b)");
        TemporaryScalars.MakesTemporary(Method(tensor, "op_Multiply", tensor, typeof(double))).Should().BeTrue("a * 0.5 converts 0.5");
        TemporaryScalars.MakesTemporary(Method(typeof(nn.functional), "softplus", tensor, typeof(double), typeof(double))).Should().BeTrue();
        TemporaryScalars.ModuleMakesTemporary(typeof(TorchSharp.Modules.BatchNorm2d)).Should().BeTrue("its forward counts batches with add_(1)");

        // Members that only pass on the Scalars they are given.
        TemporaryScalars.MakesTemporary(Method(tensor, "add", tensor, typeof(Scalar))).Should().BeFalse();
        TemporaryScalars.MakesTemporary(Method(tensor, "mul", typeof(Scalar))).Should().BeFalse();
        TemporaryScalars.MakesTemporary(Method(tensor, "sub", tensor)).Should().BeFalse("a − b has no alpha in TorchSharp");
        TemporaryScalars.MakesTemporary(Method(typeof(nn.functional), "batch_norm", tensor, tensor, tensor, tensor, tensor,
            typeof(bool), typeof(double), typeof(double))).Should().BeFalse();
        TemporaryScalars.ModuleMakesTemporary(typeof(TorchSharp.Modules.LayerNorm)).Should().BeFalse();
    }

    [Fact]
    public void The_scan_reports_each_kind_of_temporary_and_nothing_else()
    {
        const string code = """
            using TorchSharp;
            using static TorchSharp.torch;

            static class Sample
            {
                static void Run(Tensor a, Tensor b, Scalar one)
                {
                    var sum = a + b;
                    var half = a.mul(0.5);
                    var norm = nn.BatchNorm2d(3);
                    var heldSum = a.add(b, one);
                    using var held = 0.5.ToScalar();
                    var heldHalf = a.mul(held);
                    var difference = a - b;
                }
            }
            """;
        var findings = TemporaryScalars.ScanSource(code, "Sample.cs");
        findings.Select(f => Regex.Match(f, @"^Sample\.cs:(\d+):").Groups[1].Value).Should().Equal(["8", "9", "10"],
            "a + b (alpha 1), a.mul(0.5) (converted 0.5) and BatchNorm2d (its forward) are temporaries; held Scalars and a − b are not:\n"
            + string.Join("\n", findings));
    }
}

/// <summary>Finds the calls that make a TorchSharp Scalar only its finalizer frees (see
/// <see cref="NoTemporaryScalarTests"/>).</summary>
internal static class TemporaryScalars
{
    private const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static
        | BindingFlags.Instance | BindingFlags.DeclaredOnly;

    private static readonly Assembly TorchSharpAssembly = typeof(torch).Assembly;

    /// <summary>Metadata tokens of the TorchSharp methods that make a Scalar and never dispose one, directly or by
    /// calling such a method.</summary>
    private static readonly Lazy<HashSet<int>> Temporaries = new(FindTemporaries);

    public static bool MakesTemporary(MethodBase method) =>
        method.Module == TorchSharpAssembly.ManifestModule && Temporaries.Value.Contains(method.MetadataToken);

    public static bool ModuleMakesTemporary(Type module) =>
        module.GetMethods(BindingFlags.Public | BindingFlags.Instance).Any(m => m.Name == "forward" && MakesTemporary(m));

    /// <summary>Findings ("path:line: what `code`") in the sources of a project of this repository.</summary>
    public static IReadOnlyList<string> Scan(string project)
    {
        string root = Repository.Root;
        string directory = Path.Combine(root, project);
        string projectFile = Directory.GetFiles(directory, "*.csproj").Single();
        var files = Directory.EnumerateFiles(directory, "*.cs", SearchOption.AllDirectories)
            .Where(p => !p.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")
                        && !p.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
            // Files compiled in from elsewhere (<Compile Include="../X.cs" Link=… />).
            .Concat(Regex.Matches(File.ReadAllText(projectFile), "<Compile Include=\"([^\"]+)\"")
                .Select(m => Path.GetFullPath(Path.Combine(directory, m.Groups[1].Value))))
            .ToArray();
        bool program = File.ReadAllText(projectFile).Contains("<OutputType>Exe</OutputType>");
        var trees = files.Select(p => Parse(File.ReadAllText(p), Path.GetRelativePath(root, p))).ToList();
        // The project's own assembly is compiled here, not referenced; nor is anything built on it.
        string own = Path.GetFileName(project);
        string[] left = own == "PolaFormer"
            ? ["PolaFormer", "PolaFormer.Training", "PolaFormer.Golden", "PolaFormer.Tests"]
            : [own, "PolaFormer.Golden", "PolaFormer.Tests"];
        var references = References(program ? SampleDependencies() : [])
            .Where(r => !left.Contains(Path.GetFileNameWithoutExtension(r.Display), StringComparer.Ordinal))
            .ToList();
        return Findings(Compile(Path.GetFileName(project), trees, references, program));
    }

    /// <summary>Findings in one source text compiled as a library against TorchSharp.</summary>
    public static IReadOnlyList<string> ScanSource(string code, string path) =>
        Findings(Compile("Sample", [Parse(code, path)], References([]), program: false));

    private static SyntaxTree Parse(string code, string path) =>
        CSharpSyntaxTree.ParseText(code, new CSharpParseOptions(LanguageVersion.Latest), path);

    private static CSharpCompilation Compile(string name, List<SyntaxTree> trees, IEnumerable<MetadataReference> references, bool program)
    {
        trees.Add(Parse(Repository.ImplicitUsings, "ImplicitUsings.cs"));
        var compilation = CSharpCompilation.Create(name, trees, references,
            new CSharpCompilationOptions(program ? OutputKind.ConsoleApplication : OutputKind.DynamicallyLinkedLibrary,
                allowUnsafe: true, nullableContextOptions: NullableContextOptions.Enable));
        // A call the compiler cannot bind cannot be checked, so every error fails the scan except the partial
        // methods that source generators ([LibraryImport], [GeneratedRegex]) implement in the real build.
        var errors = compilation.GetDiagnostics()
            .Where(d => d.Severity == DiagnosticSeverity.Error && d.Id != "CS8795")
            .Select(d => d.ToString())
            .ToArray();
        errors.Should().BeEmpty($"the scan of {name} needs every call bound");
        return compilation;
    }

    private static IReadOnlyList<string> Findings(CSharpCompilation compilation)
    {
        var temporaries = Temporaries.Value;
        bool InTorchSharp(IMethodSymbol? method)
        {
            if (method is null) return false;
            var definition = (method.ReducedFrom ?? method).OriginalDefinition;
            return definition.ContainingAssembly?.Name == TorchSharpAssembly.GetName().Name && temporaries.Contains(definition.MetadataToken);
        }
        var modules = new Dictionary<ITypeSymbol, bool>(SymbolEqualityComparer.Default);
        bool ModuleWithTemporaries(ITypeSymbol? type)
        {
            if (type is null || type.ContainingAssembly?.Name != TorchSharpAssembly.GetName().Name) return false;
            if (!modules.TryGetValue(type, out bool result))
            {
                var members = type.GetMembers("forward").OfType<IMethodSymbol>();
                for (var b = type.BaseType; b is not null; b = b.BaseType) members = members.Concat(b.GetMembers("forward").OfType<IMethodSymbol>());
                modules[type] = result = members.Any(InTorchSharp);
            }
            return result;
        }

        var findings = new List<string>();
        foreach (var tree in compilation.SyntaxTrees)
        {
            var model = compilation.GetSemanticModel(tree);
            foreach (var node in tree.GetRoot().DescendantNodes())
            {
                // Each body, initializer and expression-bodied member once, from its root operation down.
                var root = model.GetOperation(node);
                if (root is null || root.Parent is not null) continue;
                foreach (var operation in root.DescendantsAndSelf())
                {
                    string? what = operation switch
                    {
                        IConversionOperation { IsImplicit: true, OperatorMethod.ContainingType.Name: nameof(Scalar) } c =>
                            $"a {c.Operand.Type} converted to a Scalar",
                        IInvocationOperation i when InTorchSharp(i.TargetMethod) => $"{i.TargetMethod.ToDisplayString()} makes a Scalar",
                        IInvocationOperation i when ModuleWithTemporaries(i.Type) => $"{i.Type}'s forward makes a Scalar",
                        IObjectCreationOperation o when InTorchSharp(o.Constructor) || ModuleWithTemporaries(o.Type) =>
                            $"{o.Type} makes a Scalar",
                        IBinaryOperation b when InTorchSharp(b.OperatorMethod) => $"{b.OperatorMethod!.ToDisplayString()} makes a Scalar",
                        ICompoundAssignmentOperation c when InTorchSharp(c.OperatorMethod) => $"{c.OperatorMethod!.ToDisplayString()} makes a Scalar",
                        IUnaryOperation u when InTorchSharp(u.OperatorMethod) => $"{u.OperatorMethod!.ToDisplayString()} makes a Scalar",
                        _ => null,
                    };
                    if (what is null) continue;
                    var span = operation.Syntax.GetLocation().GetLineSpan();
                    findings.Add($"{span.Path}:{span.StartLinePosition.Line + 1}: {what}: `{operation.Syntax.ToString().Split('\n')[0].Trim()}`");
                }
            }
        }
        return findings.Distinct().ToArray();
    }

    /// <summary>Walks the IL of every TorchSharp method: which make a Scalar (an implicit conversion or
    /// <c>ToScalar</c>) without disposing any, and which TorchSharp methods each calls; then closes over the calls.</summary>
    private static HashSet<int> FindTemporaries()
    {
        var opcodes = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Select(f => (OpCode)f.GetValue(null)!)
            .ToDictionary(op => op.Value);
        var module = TorchSharpAssembly.ManifestModule;
        var calls = new Dictionary<int, List<int>>();
        var disposing = new HashSet<int>();
        var temporaries = new HashSet<int>();
        foreach (var type in TorchSharpAssembly.GetTypes())
        {
            foreach (var method in type.GetMethods(Declared).Cast<MethodBase>().Concat(type.GetConstructors(Declared)))
            {
                byte[]? il = method.GetMethodBody()?.GetILAsByteArray();
                if (il is null) continue;
                var callees = calls[method.MetadataToken] = [];
                bool makes = false;
                for (int i = 0; i < il.Length;)
                {
                    var op = opcodes[il[i] == 0xFE ? unchecked((short)(0xFE00 | il[i + 1])) : il[i]];
                    i += op.Size;
                    if (op.OperandType == OperandType.InlineMethod)
                    {
                        var target = Resolve(module, BitConverter.ToInt32(il, i), method);
                        if (target?.DeclaringType == typeof(Scalar) && target.Name == "op_Implicit") makes = true;
                        else if (target?.DeclaringType == typeof(ScalarExtensionMethods)) makes = true;
                        else if (target?.DeclaringType == typeof(Scalar) && target.Name == nameof(Scalar.Dispose)) disposing.Add(method.MetadataToken);
                        else if (target is not null && target.Module == module) callees.Add(target.MetadataToken);
                    }
                    i += op.OperandType switch
                    {
                        OperandType.InlineNone => 0,
                        OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                        OperandType.InlineVar => 2,
                        OperandType.InlineI8 or OperandType.InlineR => 8,
                        OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                        _ => 4,
                    };
                }
                if (makes && !disposing.Contains(method.MetadataToken)) temporaries.Add(method.MetadataToken);
            }
        }
        for (bool grew = true; grew;)
        {
            grew = false;
            foreach (var (method, callees) in calls)
                if (!disposing.Contains(method) && !temporaries.Contains(method) && callees.Any(temporaries.Contains))
                    grew = temporaries.Add(method) || grew;
        }
        return temporaries;
    }

    private static MethodBase? Resolve(Module module, int token, MethodBase context)
    {
        try
        {
            return module.ResolveMethod(token,
                context.DeclaringType is { IsGenericType: true } t ? t.GetGenericArguments() : null,
                context.IsGenericMethod ? context.GetGenericArguments() : null);
        }
        catch (ArgumentException)
        {
            return null;   // a token of another module's generic instantiation: not a TorchSharp method
        }
    }

    /// <summary>The framework and the test's dependencies (PolaFormer, PolaFormer.Training, TorchSharp, SkiaSharp…)
    /// plus <paramref name="extra"/>.</summary>
    private static IEnumerable<MetadataReference> References(IEnumerable<string> extra) =>
        ((AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES") as string) ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Where(p => p.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            .Concat(extra)
            .DistinctBy(Path.GetFileName)
            .Select(p => (MetadataReference)MetadataReference.CreateFromFile(p));

    /// <summary>The training program's own dependencies, from its build next to the tests.</summary>
    private static IEnumerable<string> SampleDependencies() =>
        Directory.EnumerateFiles(Path.GetDirectoryName(Infrastructure.TrainProgram.Path())!, "*.dll")
            .Where(p => Path.GetFileName(p) != "polaformer-train.dll");
}
