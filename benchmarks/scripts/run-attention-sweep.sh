#!/usr/bin/env bash
# Attention scaling sweep, ours (C#) vs the official op sequence in PyTorch, N = 196 … 25,600, then docs/benchmarks.md.
# Needs the .NET 10 SDK and a Python with torch (Debian: apt-get install python3-torch libopenblas0-pthread
# python3-matplotlib). Options are passed to attention_sweep.py (--tokens, --modes, --rounds, --threads, ...).
set -euo pipefail
cd "$(dirname "$0")"
source ./common.sh
"$PY" attention_sweep.py "$@"
"$PY" render.py
