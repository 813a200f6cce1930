#!/usr/bin/env bash
# Largest square image Pola-PVT-T and PVT-T (softmax) run inference on within 8 GiB, and their peak memory at
# 224, 512 and 1024, then docs/benchmarks.md. Options are passed to memory.py (--limit-gib, --sizes, --models).
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
"$PY" memory.py "$@"
"$PY" render.py
