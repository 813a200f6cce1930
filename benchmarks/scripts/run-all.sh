#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md (about 35 minutes on an idle 2-core machine): build once, then the three
# drivers, then one more round of every configuration that a neighbour's job disturbed (--fill 1).
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
dotnet build ../PolaFormer.Benchmarks -c Release --nologo -v q >/dev/null
"$PY" attention_sweep.py --no-build
"$PY" models.py --no-build --rounds 3
"$PY" attention_sweep.py --no-build --fill 1 --no-profile
"$PY" models.py --no-build --fill 1
"$PY" memory.py --no-build
"$PY" render.py
