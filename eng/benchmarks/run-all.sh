#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md (about 25 minutes on 2 cores): build once, then the three drivers.
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
dotnet build ../../benchmarks/PolaFormer.Benchmarks -c Release --nologo -v q >/dev/null
"$PY" attention_sweep.py --no-build
"$PY" models.py --no-build
"$PY" memory.py --no-build
"$PY" render.py
