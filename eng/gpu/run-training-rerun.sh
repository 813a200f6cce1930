#!/usr/bin/env bash
# The training measurements alone, each configuration in a fresh process (a long in-process sweep ran out of GPU
# memory on 2026-12-04: memory grows across configurations in one process), plus the one-rank NCCL check:
#   bash .gpu/run-training-rerun.sh        (on the GPU machine, after bash eng/gpu/pack.sh here, with .gpu/ copied there)
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$here/out}; WORK=${TMPDIR:-/tmp}/polaformer-gpucheck
mkdir -p "$OUT"; rm -rf "$WORK" && mkdir -p "$WORK" && tar -xzf "$here/polaformer-gpucheck.tgz" -C "$WORK"
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
nccl_dir=$(python3 -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$torch_lib:$WORK/app:$nccl_dir" NUGET_PACKAGES="$WORK/no-nuget-cache"
app="$WORK/app/polaformer-gpucheck"
timeout 60 "$app" nccl --device cuda 2>&1 | grep -v '^# native' | tee "$OUT/nccl.log"
for m in pola_pvt_tiny pola_swin_tiny; do for p in fp32 tf32 bf16; do for s in per-tensor flat; do
  timeout 60 "$app" bench-steps --device cuda --single --models $m --precisions $p --states $s --iterations 15 2>&1 | grep '^{' | tee -a "$OUT/steps.jsonl"
done; done; done
timeout 200 "$app" bench-models --device cuda --phases training --states per-tensor,flat 2>&1 | grep '^{' | tee -a "$OUT/models.jsonl"
