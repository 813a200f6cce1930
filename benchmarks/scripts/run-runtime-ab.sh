#!/usr/bin/env bash
# The focused re-measurement behind docs/benchmarks.md's CPU-runtime A/B tables (about 15 minutes on an idle 2-core machine):
# polarity attention forward + backward, ours against the official op sequence in PyTorch, both under the same
# native CPU runtime settings (tuned = glibc malloc keeps freed memory; default = untouched), and the four models at
# batch 8. Fresh process per measurement, the sides alternating, two rounds. Results: runtime-ab/*.jsonl in this
# sitting's benchmarks/results/<date>-<machine>/ (POLA_BENCH_RESULTS names another; 2026-11-27-epyc-2core holds the
# run docs/benchmarks.md quotes).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash eng/prerequisites.sh >/dev/null
dotnet build benchmarks/PolaFormer.Benchmarks -c Release --nologo -v q >/dev/null
out=benchmarks/results/${POLA_BENCH_RESULTS:-$(basename "$(python3 benchmarks/scripts/benchlib.py)")}/runtime-ab
mkdir -p "$out"
: >"$out/attention.jsonl"
: >"$out/models.jsonl"
blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
cs() { dotnet benchmarks/PolaFormer.Benchmarks/bin/Release/net10.0/PolaFormer.Benchmarks.dll "$@"; }
py() { LD_LIBRARY_PATH=$blas /usr/bin/python3 benchmarks/python/bench_attention.py "$@"; }
timing() {   # fewer iterations for the big sizes, as attention_sweep.py does
    if [ "$1" -ge 12544 ]; then echo --warmup 2 --iterations 5 --min-seconds 1 --max-seconds 12
    elif [ "$1" -ge 6400 ]; then echo --warmup 3 --iterations 9 --min-seconds 1.5 --max-seconds 10
    else echo --warmup 5 --iterations 15 --min-seconds 1.5 --max-seconds 10; fi
}
for round in 1 2; do
    for n in 196 784 3136 6400 12544 25600; do
        for runtime in tuned default; do
            [ "$runtime" = default ] && [ "$n" -ne 3136 ] && continue
            args=(--impl pola --tokens "$n" --dim 64 --heads 2 --batch 1 --mode fwdbwd --threads 2 --cpu-runtime "$runtime" $(timing "$n") --json)
            cs attention "${args[@]}" | sed "s/^{/{\"round\":$round,\"side\":\"ours\",/" >>"$out/attention.jsonl"
            py "${args[@]}" | sed "s/^{/{\"round\":$round,\"side\":\"pytorch\",/" >>"$out/attention.jsonl"
            tail -2 "$out/attention.jsonl" | cut -c1-160
        done
    done
    for name in pola_pvt_tiny pvt_tiny_softmax pola_swin_tiny swin_tiny_softmax; do
        cs model --name "$name" --batch 8 --size 224 --mode infer --threads 2 --json |
            sed "s/^{/{\"round\":$round,/" >>"$out/models.jsonl"
        tail -1 "$out/models.jsonl" | cut -c1-160
    done
done
