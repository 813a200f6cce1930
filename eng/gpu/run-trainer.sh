#!/usr/bin/env bash
# The library's Trainer (flat training state, EMA, checkpoints, data loader) on the GPU: the bundled digits, float32
# then bfloat16, in one process (2 epochs each, 8,000 images per epoch, batch 64). On the GPU machine, after
# `bash eng/gpu/pack.sh` here:
#   bash .gpu/run-trainer.sh
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$here/out}; WORK=${TMPDIR:-/tmp}/polaformer-gpucheck
mkdir -p "$OUT"; rm -rf "$WORK" && mkdir -p "$WORK" && tar -xzf "$here/polaformer-gpucheck.tgz" -C "$WORK"
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$WORK/app" NUGET_PACKAGES="$WORK/no-nuget-cache"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/trainer.log"
timeout 150 "$WORK/app/polaformer-gpucheck" trainer --device cuda --epochs 2 --dtypes float32,bfloat16 --workers 8 2>&1 \
    | grep -v '^# native' | tee -a "$OUT/trainer.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/trainer.log"
