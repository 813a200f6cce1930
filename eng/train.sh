#!/usr/bin/env bash
# The README's main command: installs what it needs (idempotent), then trains the default PolaFormer on the bundled
# digits and prints the test top-1. Extra arguments go to `polaformer-train train` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dotnet >/dev/null 2>&1; then
  echo "[train] the .NET 10 SDK is not on PATH; install it (https://dot.net) and run this again." >&2
  exit 1
fi
bash eng/prerequisites.sh
dotnet build samples/PolaFormer.Train -c Release -v quiet -nologo
dotnet samples/PolaFormer.Train/bin/Release/net10.0/polaformer-train.dll train --output runs/digits "$@"
