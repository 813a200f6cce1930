#!/usr/bin/env bash
# The GPU check, as a GPU machine with PyTorch and no .NET runs it (after `bash eng/gpu/pack.sh` here, with the checkout's .gpu/ copied there):
#
#   bash .gpu/run-on-device.sh                  # on the GPU machine: CUDA, full sizes
#   bash .gpu/run-on-device.sh --cpu-dry-run    # here: the same pipeline on the CPU, small sizes (not GPU figures)
#
# 1. unpacks .gpu/polaformer-gpucheck.tgz to $WORK (default: polaformer-gpucheck in $TMPDIR, else the system temp folder);
# 2. finds the LibTorch to use: the Python install's torch/lib on the GPU machine (python3 -c 'import torch ...');
#    for the dry run, NuGet's CPU LibTorch 2.10 (TorchSharp-cpu's libtorch-cpu-linux-x64), or $TORCH_LIB;
# 3. checks that every unversioned symbol libLibTorchSharp.so needs is exported by that LibTorch (nm -D) and that
#    ldd resolves it: stops here, printing what is missing, on an ABI mismatch;
# 4. runs with LD_LIBRARY_PATH=<torch lib>:<program dir> (and no NuGet cache to fall back to):
#    info, conformance, cuda-kernels (fused kernels: checks and on/off timing), nccl (one-rank NCCL group), bench-steps
#    (training-step breakdown, per-tensor vs flat state), gpu_models.py (the authors' models, when packed),
#    bench-models, gpu_attention.py (PyTorch, same sweep), bench-attention (C#), train;
# 5. writes run.log, attention.jsonl, models.jsonl, steps.jsonl, summary.md (and missing-symbols.txt on a mismatch) to $OUT.
# Budget: the script ends itself within $DEADLINE seconds (default 470; a caller's own time limit should be a little
# above it); each phase has its own limit, cut to what is left, so one hang does not eat the rest and the summary is
# always written. Measured on an H100 (2026-11-27): 170 s on the machine (benchmarks/results/2026-11-27-h100/).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=gpu
[ "${1:-}" = "--cpu-dry-run" ] && mode=cpu
OUT=${OUT:-$here/out}
WORK=${WORK:-${TMPDIR:-/tmp}/polaformer-gpucheck}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
tee_pid=$!
# On exit, let tee write the last lines to run.log before the device collects $OUT.
finish() { exec >&- 2>&-; for _ in $(seq 50); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.1; done; }
trap finish EXIT
start=$SECONDS
deadline=${DEADLINE:-$([ "$mode" = gpu ] && echo 470 || echo 1500)}
failures=()
say() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - start))s] $*"; }

say "polaformer GPU check, mode $mode, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
rm -rf "$WORK" && mkdir -p "$WORK"
tar -xzf "$here/polaformer-gpucheck.tgz" -C "$WORK" || { say "STOP: could not unpack $here/polaformer-gpucheck.tgz"; exit 2; }
app=$WORK/app
tools=$WORK/tools
cat "$WORK/BUILD-INFO"

# ---------------------------------------------------------------- environment and the LibTorch to use
if [ "$mode" = gpu ]; then
    py=${PYTHON:-python3}
    dev=cuda
    sizes=()
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || say "nvidia-smi failed"
    torch_lib=${TORCH_LIB:-$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}
else
    py=${PYTHON:-/usr/bin/python3}
    dev=cpu
    sizes=(--quick --threads 2)
    torch_lib=${TORCH_LIB:-${NUGET_PACKAGES:-$HOME/.nuget/packages}/libtorch-cpu-linux-x64/2.10.0/runtimes/linux-x64/native}
fi
"$py" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
"| cudnn", torch.backends.cudnn.version() if torch.cuda.is_available() else None,
"| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")' || say "python3 with torch not usable: $py"
uname -srm; ldd --version | head -1
libstdcxx=$(ldconfig -p | awk '/libstdc\+\+\.so\.6 .*x86-64/ { print $NF; exit }')
echo "libstdc++: $libstdcxx, newest GLIBCXX: $(grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$libstdcxx" 2>/dev/null | sort -uV | tail -1) (libLibTorchSharp.so needs GLIBCXX_3.4.32)"
[ -d "$torch_lib" ] || { say "STOP: no LibTorch folder at $torch_lib"; exit 2; }
torch_lib=$(realpath "$torch_lib")
say "LibTorch for the C# program: $torch_lib"
ls -la "$torch_lib" | grep -E 'libtorch|libc10' || true

# ---------------------------------------------------------------- ABI: symbols and the loader
say "symbol check: libLibTorchSharp.so (TorchSharp 0.107, built for LibTorch 2.10) against $torch_lib"
if ! bash "$tools/check-symbols.sh" "$app/libLibTorchSharp.so" "$torch_lib" "$OUT/missing-symbols.txt"; then
    say "STOP: the LibTorch at $torch_lib lacks symbols libLibTorchSharp.so needs (list above, mangled in missing-symbols.txt)"
    exit 2
fi
rm -f "$OUT/missing-symbols.txt"
if [ "$mode" = cpu ]; then
    debian_lib=$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)
    if [ -n "$debian_lib" ] && [ "$debian_lib" != "$torch_lib" ]; then
        say "dry run only: the same check against $py's LibTorch (expected to fail: it shows what a mismatch looks like)"
        bash "$tools/check-symbols.sh" "$app/libLibTorchSharp.so" "$debian_lib" | head -4
        echo "  ... (dry run continues with $torch_lib)"
    fi
fi
unresolved=$(LD_LIBRARY_PATH="$torch_lib:$app" ldd "$app/libLibTorchSharp.so" 2>&1 | grep -E 'not found|version .* not found' || true)
LD_LIBRARY_PATH="$torch_lib:$app" ldd "$app/libLibTorchSharp.so" | grep -E 'torch|c10|stdc\+\+'
if [ -n "$unresolved" ]; then
    say "STOP: the loader cannot resolve libLibTorchSharp.so: $unresolved"
    exit 2
fi

# ---------------------------------------------------------------- the runs
export LD_LIBRARY_PATH="$torch_lib:$app${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NUGET_PACKAGES="$WORK/no-nuget-cache"   # TorchSharp must not fall back to a NuGet cache's LibTorch
export DOTNET_CLI_TELEMETRY_OPTOUT=1 PYTHONUNBUFFERED=1
check=("$app/polaformer-gpucheck")
common=(--device "$dev" --expect-torch-dir "$torch_lib" "${sizes[@]}")
isolate=()
[ "$mode" = cpu ] && isolate=(--isolate)   # the GPU default; exercised on the CPU too
if [ "$mode" = gpu ]; then tokens=1024,4096,16384,65536; else tokens=256,1024; fi

phase() {   # phase NAME SECONDS JSONL|- COMMAND...
    local name=$1 limit=$2 jsonl=$3 t=$SECONDS rc left
    shift 3
    left=$((deadline - (SECONDS - start) - 15))
    if [ "$left" -lt 20 ]; then
        say "=== $name: SKIPPED, only $((deadline - (SECONDS - start))) s left of the ${deadline} s budget"
        failures+=("$name (skipped: out of time)")
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    say "=== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" | tee "$WORK/$name.txt"
    rc=${PIPESTATUS[0]}
    [ "$jsonl" != - ] && grep '^{' "$WORK/$name.txt" >>"$OUT/$jsonl"
    say "=== $name: exit $rc after $((SECONDS - t)) s"
    [ "$rc" -eq 0 ] || failures+=("$name (exit $rc)")
    return "$rc"
}

if ! phase info 90 - "${check[@]}" info "${common[@]}"; then
    say "STOP: the C# program did not start on $dev with $torch_lib (see above)"
    exit 3
fi
phase conformance 90 - "${check[@]}" conformance "${common[@]}"
phase cuda-kernels 120 attention.jsonl "${check[@]}" cuda-kernels "${common[@]}" --tokens "$tokens"
# NCCL ships with PyTorch's pip packages (nvidia/nccl/lib); a one-rank NCCL group runs the real collectives.
if [ "$mode" = gpu ]; then
    nccl_dir=$("$py" -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "lib"))' 2>/dev/null || true)
    [ -n "$nccl_dir" ] && say "NCCL from $nccl_dir" && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$nccl_dir"
fi
phase nccl 60 - "${check[@]}" nccl "${common[@]}"
phase steps 130 steps.jsonl "${check[@]}" bench-steps "${common[@]}"
if [ -d "$tools/official" ]; then
    phase models-python 170 models.jsonl "$py" "$tools/gpu_models.py" --device "$dev" --official "$tools/official" --deadline 140 \
        $([ "$mode" = cpu ] && echo --quick --threads 2)
else
    say "=== models-python: SKIPPED, the authors' model files were not packed (benchmarks/python/official_models.md)"
fi
phase models 150 models.jsonl "${check[@]}" bench-models "${common[@]}" --no-isolate --states per-tensor,flat
phase attention-python 90 attention.jsonl "$py" "$tools/gpu_attention.py" --device "$dev" --tokens "$tokens" \
    $([ "$mode" = cpu ] && echo --quick --threads 2)
phase attention-csharp 90 attention.jsonl "${check[@]}" bench-attention "${common[@]}" --no-isolate --impls pola,softmax --tokens "$tokens"
phase train 60 - "${check[@]}" train "${common[@]}"
phase trainer 120 - "${check[@]}" trainer "${common[@]}"

"$py" "$tools/summarize.py" "$OUT/attention.jsonl" "$OUT/models.jsonl" "$OUT/steps.jsonl" >"$OUT/summary.md" || say "summary failed"
cat "$OUT/summary.md"
if [ ${#failures[@]} -eq 0 ]; then
    say "DONE: every phase passed on $dev (mode $mode)"
else
    say "DONE with failures: ${failures[*]}"
    exit 1
fi
