#!/usr/bin/env bash
# Matmul ceiling, FLOPs of every model, images/s of Pola-PVT-T, Pola-Swin-T and their softmax counterparts, then
# docs/benchmarks.md. Options are passed to models.py (--models, --rounds, --threads, --size).
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
"$PY" models.py "$@"
"$PY" render.py
