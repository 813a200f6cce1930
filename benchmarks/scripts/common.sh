# Sourced by the run-*.sh scripts: picks a Python that has torch (Debian's python3-torch lives in /usr/bin/python3,
# which a pyenv or venv python3 on PATH may hide).
PY="${POLA_BENCH_PYTHON:-}"
if [[ -z "$PY" ]]; then
  for candidate in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]] && "$candidate" -c 'import torch' 2>/dev/null; then PY="$candidate"; break; fi
  done
fi
if [[ -z "$PY" ]]; then
  echo "[bench] no Python with torch: install python3-torch (Debian/Ubuntu) or set POLA_BENCH_PYTHON" >&2
  exit 1
fi
if ! command -v dotnet >/dev/null 2>&1; then
  echo "[bench] the .NET 10 SDK is not on PATH" >&2
  exit 1
fi
if "$PY" -c 'import torch, re, sys; sys.exit(0 if "BLAS_INFO=generic" in torch.__config__.show() else 1)' 2>/dev/null \
   && readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null | grep -q '/blas/libblas'; then
  echo "[bench] warning: this PyTorch calls the reference BLAS (libblas3); install libopenblas0-openmp for a fair comparison" >&2
fi
export PY
# One results folder for the whole sitting, benchmarks/results/<date>-<machine>/ (benchlib.py names it; set
# POLA_BENCH_RESULTS to a folder name to add to or redo an earlier one, e.g. POLA_BENCH_RESULTS=2026-11-27-epyc-2core).
POLA_BENCH_RESULTS=$(basename "$("$PY" "$(dirname "${BASH_SOURCE[0]}")/benchlib.py")")
export POLA_BENCH_RESULTS
echo "[bench] results: benchmarks/results/$POLA_BENCH_RESULTS/" >&2
