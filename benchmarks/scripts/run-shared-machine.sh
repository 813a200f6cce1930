#!/usr/bin/env bash
# The training step beside busy processes: does LibTorch's OpenMP collapse when other processes take the cores?
# Runs the `model` benchmark (Pola-PVT-T training step, batch 64, 32 px: the digits job's shape) with 0, 1 and 2
# busy-looping processes beside it, for thread counts 2 and 1 and two OpenMP wait policies: --cpu-runtime spin
# (left to OpenMP: spin, then sleep) and tuned (TorchRuntime.ConfigureCpu()'s default since 2026-12-04: sleep at once).
# Writes JSON lines (one per measurement, with busy, threads and cpu_runtime) to the file given as $1.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: run-shared-machine.sh OUTPUT.jsonl}
dotnet build benchmarks/PolaFormer.Benchmarks -c Release -v quiet -nologo >/dev/null
bench=(dotnet benchmarks/PolaFormer.Benchmarks/bin/Release/net10.0/PolaFormer.Benchmarks.dll)
: > "$out"
for busy in 0 1 2; do
  pids=()
  for ((i = 0; i < busy; i++)); do (while :; do :; done) & pids+=($!); done
  sleep 1
  for config in "2 spin" "2 tuned" "1 spin" "1 tuned"; do
    set -- $config
    line=$("${bench[@]}" model --name pola_pvt_tiny --batch 64 --size 32 --mode train --threads "$1" --cpu-runtime "$2" --json 2>/dev/null | tail -1)
    echo "{\"busy\": $busy, ${line#\{}" | tee -a "$out"
  done
  for pid in "${pids[@]}"; do kill "$pid"; done
  wait 2>/dev/null || true
done
