#!/usr/bin/env bash
# Runs every golden conformance test and prints the worst scaled error of each case (the table in docs/evidence.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash eng/prerequisites.sh >/dev/null
dotnet test tests/PolaFormer.Tests -c Release --filter "FullyQualifiedName~Golden|FullyQualifiedName~Matches_the_official" \
  --logger "console;verbosity=detailed" 2>&1 | grep -E "GOLDEN|Passed!|Failed!|Failed " | sed 's/^ *//' | sort -u
