#!/usr/bin/env bash
# Training steps under garbage collections forced without pause (the `scalar-stress` mode): the control (TorchSharp's
# own `a + b`, which leaves its alpha Scalar to the finalizer) shows the harness catches the race on this machine; the
# models show whether the library's forward and backward leave any Scalar to the finalizer (src/PolaFormer/ScalarArithmetic.cs).
# Writes one JSON line per run to the file given as $1; a failed run is recorded, not fatal. SECONDS_PER_MODEL (default
# 300) sets each model's duration, the control gets a third of it.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: run-scalar-stress.sh OUTPUT.jsonl}
seconds=${SECONDS_PER_MODEL:-300}
dotnet build benchmarks/PolaFormer.Benchmarks -c Release -v quiet -nologo >/dev/null || exit 1
bench=(dotnet benchmarks/PolaFormer.Benchmarks/bin/Release/net10.0/PolaFormer.Benchmarks.dll scalar-stress --json)
: > "$out"
"${bench[@]}" --control --seconds $((seconds / 3)) 2>/dev/null | tail -1 | tee -a "$out"
for config in "pola_pvt_tiny 32" "pola_swin_tiny 64" "pola_vit_tiny 32" "pola_pp_b0 64"; do
  set -- $config
  "${bench[@]}" --name "$1" --size "$2" --seconds "$seconds" 2>/dev/null | tail -1 | tee -a "$out"
done
