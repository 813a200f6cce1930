#!/usr/bin/env bash
# The README's test command: installs what the tests need (idempotent), then restores, builds and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dotnet >/dev/null 2>&1; then
  echo "[test] the .NET 10 SDK is not on PATH; install it (https://dot.net) and run this again." >&2
  exit 1
fi
bash eng/prerequisites.sh
dotnet test PolaFormer.sln -c Release --logger "console;verbosity=normal" "$@"
