#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md (about 30 minutes on an idle 2-core machine): build once, then the three
# drivers. On a shared machine, `attention_sweep.py --fill 1` and `models.py --fill 1` afterwards re-measure the
# configurations that a neighbour's job disturbed.
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
dotnet build ../../benchmarks/PolaFormer.Benchmarks -c Release --nologo -v q >/dev/null
"$PY" attention_sweep.py --no-build
"$PY" models.py --no-build
"$PY" memory.py --no-build
"$PY" render.py
