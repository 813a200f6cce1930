#!/usr/bin/env bash
# A short GPU regression run (about a minute on an H200): golden conformance on CUDA, the fused-kernel checks, and the
# library's Trainer on the digits for one epoch in float32 and bfloat16. On the GPU machine, after
# `bash eng/gpu/pack.sh` here and with .gpu/ copied there:
#   OUT=out bash .gpu/run-quick.sh
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$here/out}; WORK=${TMPDIR:-/tmp}/polaformer-gpucheck
mkdir -p "$OUT"; rm -rf "$WORK" && mkdir -p "$WORK" && tar -xzf "$here/polaformer-gpucheck.tgz" -C "$WORK"
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$WORK/app" NUGET_PACKAGES="$WORK/no-nuget-cache"
app="$WORK/app/polaformer-gpucheck"
log="$OUT/quick.log"
{ cat "$WORK/BUILD-INFO"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; } 2>&1 | tee "$log"
failures=0
for step in "conformance --device cuda --expect-torch-dir $torch_lib" \
            "cuda-kernels --device cuda --single --tokens 1024,16384" \
            "trainer --device cuda --epochs 1 --min-top1 80 --dtypes float32,bfloat16 --workers 8"; do
    echo "=== $step" | tee -a "$log"
    # shellcheck disable=SC2086
    timeout 100 "$app" $step 2>&1 | grep -v '^# native' | tee -a "$log"
    rc=${PIPESTATUS[0]}
    echo "=== exit $rc" | tee -a "$log"
    [ "$rc" -eq 0 ] || failures=$((failures + 1))
done
echo "failures: $failures" | tee -a "$log"
exit "$failures"
