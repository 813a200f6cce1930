#!/usr/bin/env bash
# Packs the GPU check for the GPU machine (which has PyTorch for Python but no .NET and no package registry):
#
#   bash eng/gpu/pack.sh [--trim]
#
# → .gpu/polaformer-gpucheck.tgz  a self-contained linux-x64 publish of benchmarks/PolaFormer.GpuCheck (the .NET runtime,
#                                  TorchSharp's managed code and libLibTorchSharp.so, NO LibTorch: the Python install's
#                                  libraries are used there), the golden files, benchmarks/python/gpu_attention.py (+ official_layers.py),
#                                  benchmarks/scripts/summarize.py and eng/gpu/check-symbols.sh (+ elf_symbols.py)
#   .gpu/run-*.sh                  what the GPU machine runs: `bash .gpu/run-on-device.sh` (see docs/benchmarks-gpu.md)
#
# .gpu/ is ignored (.git/info/exclude); copy it to the GPU machine with the checkout. The script fails when the
# archive reaches 60 MiB, to keep checkout plus archive under 64 MiB for transfer.
# --trim: PublishTrimmed with TrimMode=partial (only the framework's own trimmable assemblies are trimmed; TorchSharp and
# PolaFormer, which rely on reflection over module fields, are kept whole). Off by default: the untrimmed archive fits.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
trim=()
if [ "${1:-}" = "--trim" ]; then trim=(-p:PublishTrimmed=true -p:TrimMode=partial -p:SuppressTrimAnalysisWarnings=true -p:EnableTrimAnalyzer=false -p:TreatWarningsAsErrors=false -p:JsonSerializerIsReflectionEnabledByDefault=true); fi

stage=${TMPDIR:-/tmp}/polaformer-gpucheck-pack
rm -rf "$stage"
mkdir -p "$stage/app/golden/f64" "$stage/tools" .gpu

echo "pack: dotnet publish (self-contained linux-x64${trim:+, trimmed partially})"
dotnet publish benchmarks/PolaFormer.GpuCheck/PolaFormer.GpuCheck.csproj -c Release -r linux-x64 --self-contained \
    -o "$stage/app" -p:GenerateDocumentationFile=false -nologo -v:quiet "${trim[@]}"

# TorchSharp's native bridge; the publish normally copies it from the TorchSharp package already.
if [ ! -f "$stage/app/libLibTorchSharp.so" ]; then
    src="${NUGET_PACKAGES:-$HOME/.nuget/packages}/torchsharp/0.107.0/runtimes/linux-x64/native/libLibTorchSharp.so"
    [ -f "$src" ] || { echo "pack: libLibTorchSharp.so is neither in the publish nor at $src" >&2; exit 1; }
    cp "$src" "$stage/app/"
fi

# No LibTorch from NuGet may travel: TorchSharp would load a libtorch_cpu.so next to it before the CUDA build.
bad=$(find "$stage" \( -name 'libtorch*' -o -name 'libc10*' -o -name 'libgomp*' -o -name 'libcudnn*' -o -name 'libcublas*' \) -print)
if [ -n "$bad" ]; then
    echo "pack: refusing: LibTorch binaries in the publish:" >&2
    echo "$bad" >&2
    exit 1
fi

cp tests/PolaFormer.Tests/Golden/*.safetensors "$stage/app/golden/"
# The bundled digits, where DigitsDataset.FindBundled looks next to the program (the trainer mode trains on them).
mkdir -p "$stage/app/data" && cp samples/data/mnist-digits-10k.bin.gz "$stage/app/data/"
cp tests/PolaFormer.Tests/Golden/f64/*.safetensors "$stage/app/golden/f64/"
cp benchmarks/python/gpu_attention.py benchmarks/python/official_layers.py benchmarks/python/gpu_models.py benchmarks/scripts/summarize.py eng/gpu/check-symbols.sh eng/gpu/elf_symbols.py "$stage/tools/"
# The authors' model files for gpu_models.py travel only when a local copy exists (.official/, not in the repository:
# see benchmarks/python/official_models.md for how to export them from the authors' repository).
official=${OFFICIAL_DIR:-.official}
if [ -f "$official/pola_pvt.py" ] && [ -f "$official/pola_swin.py" ]; then
    mkdir -p "$stage/tools/official"
    cp "$official"/pola_pvt.py "$official"/pola_swin.py "$stage/tools/official/"
    [ -f "$official/LICENSE" ] && cp "$official/LICENSE" "$stage/tools/official/"
    echo "pack: the authors' model files from $official travel for the side-by-side run"
else
    echo "pack: no $official/pola_pvt.py + pola_swin.py: the official-model phase will be skipped (benchmarks/python/official_models.md)"
fi
{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "packed: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "dotnet sdk: $(dotnet --version)"
    echo "trimmed: ${trim:+partial}${trim:-no}"
} >"$stage/BUILD-INFO"

archive=.gpu/polaformer-gpucheck.tgz
tar -czf "$archive" -C "$stage" BUILD-INFO app tools
cp eng/gpu/run-*.sh .gpu/

unpacked=$(du -sb "$stage" | cut -f1)
size=$(stat -c %s "$archive")
carried=$(du -sb .gpu | cut -f1)
limit=$((60 * 1024 * 1024))
awk -v a="$archive" -v s="$size" -v u="$unpacked" -v n="$(find "$stage" -type f | wc -l)" -v c="$carried" \
    'BEGIN { printf "pack: %s = %.1f MiB (unpacked %.1f MiB, %d files); .gpu/ carries %.1f MiB\n", a, s / 1048576, u / 1048576, n, c / 1048576 }'
if [ "$size" -ge "$limit" ] || [ "$carried" -ge "$limit" ]; then
    echo "pack: too large: keep .gpu/ under 60 MiB (checkout plus archive under 64 MiB)" >&2
    exit 1
fi
rm -rf "$stage"
echo "pack: ready; on the GPU machine: bash .gpu/run-on-device.sh"
