#!/usr/bin/env bash
# PolaFormer++ b0-b2 on the CPU: this library against the authors' code, in one sitting, sides alternating per
# model. Inference (eval, no gradients) and a training step, batch 1 and 8, 224 px, 2 threads, both native runtimes
# untouched (--cpu-runtime default). The C# training step includes the AdamW step, the official one stops after
# backward (bench_pola_pp.py), so the comparison of training steps is conservative for C#.
#   bash benchmarks/scripts/run-pola-pp-cpu.sh <PolaFormerPP checkout>/polaformer++ OUT.jsonl
# Needs Debian's python3-torch (/usr/bin/python3); the official code at the commit the golden files name.
set -euo pipefail
cd "$(dirname "$0")/../.."
official=${1:?usage: run-pola-pp-cpu.sh OFFICIAL_POLAFORMER++_FOLDER OUTPUT.jsonl}
out=${2:?usage: run-pola-pp-cpu.sh OFFICIAL_POLAFORMER++_FOLDER OUTPUT.jsonl}
threads=2
# The official side on OpenBLAS's OpenMP build where installed (apt-get install libopenblas0-openmp), without
# changing the system's libblas.so.3, as benchlib.py does: Debian's reference BLAS is ~26× slower than LibTorch's.
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp
py_env=(env OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads)
if [[ -d $openblas ]]; then py_env+=(LD_LIBRARY_PATH=$openblas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}); else
  echo "[bench] warning: $openblas not found; the official side runs on the reference BLAS" >&2; fi
dotnet build benchmarks/PolaFormer.Benchmarks -c Release -v quiet -nologo >/dev/null
bench=(dotnet benchmarks/PolaFormer.Benchmarks/bin/Release/net10.0/PolaFormer.Benchmarks.dll)
: > "$out"
for model in b0 b1 b2; do
  "${py_env[@]}" /usr/bin/python3 benchmarks/python/bench_pola_pp.py --official "$official" --threads "$threads" --models "$model" \
    --batches 1,8 --modes fwd,fwdbwd 2>/dev/null | tee -a "$out"
  for batch in 1 8; do
    for mode in infer train; do
      "${bench[@]}" model --name "pola_pp_$model" --batch "$batch" --size 224 --mode "$mode" --threads "$threads" \
        --cpu-runtime default --json 2>/dev/null | tail -1 | tee -a "$out"
    done
  done
done
# The two builds' raw float32 matmul speed, for reading the ratios above.
"${bench[@]}" matmul --size 2048 --threads "$threads" --cpu-runtime default --json 2>/dev/null | tail -1 | tee -a "$out"
"${py_env[@]}" /usr/bin/python3 - <<'PY' | tee -a "$out"
import json, statistics, time, torch
torch.set_num_threads(2)
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
for _ in range(2): a.mm(b)
times = []
for _ in range(7):
    start = time.perf_counter(); a.mm(b); times.append(time.perf_counter() - start)
median = statistics.median(times)
print(json.dumps({"benchmark": "matmul", "size": 2048, "threads": 2, "median_ms": median * 1e3,
                  "gflop_per_s": 2 * 2048 ** 3 / median / 1e9, "torch_version": torch.__version__, "language": "python"}))
PY
