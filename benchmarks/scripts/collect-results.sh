#!/usr/bin/env bash
# Copies what a device run wrote to $OUT (run.log, summary.md, *.jsonl) into the repository, with the machine's own
# folders replaced by names, so no absolute path of either machine is committed:
#
#   bash benchmarks/scripts/collect-results.sh /path/to/device/files 2026-11-27-h100   # → benchmarks/results/2026-11-27-h100/
#
# NAME is <date>-<card> (the CPU sittings beside them are <date>-<machine>).
#
#   $WORK            the folder run-on-device.sh unpacked the check program into (default ${TMPDIR:-/tmp}/polaformer-gpucheck)
#   $SITE_PACKAGES   the GPU machine's Python site-packages (its torch/lib is the LibTorch the program ran on)
#   $NUGET_PACKAGES  the NuGet cache (CPU dry runs)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 FROM_DIR NAME" >&2; exit 2; }
from=$1
dest="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/results/$2"
mkdir -p "$dest"
for f in "$from"/*; do
    [ -f "$f" ] || continue
    sed -E \
        -e 's#(^|[^A-Za-z0-9._/$-])(/[A-Za-z0-9._]+)*/polaformer-gpucheck#\1$WORK#g' \
        -e 's#(^|[^A-Za-z0-9._/$-])(/[A-Za-z0-9._-]+)+/(site|dist)-packages#\1$SITE_PACKAGES#g' \
        -e 's#(^|[^A-Za-z0-9._/$-])(/[A-Za-z0-9._-]+)*/\.nuget/packages#\1$NUGET_PACKAGES#g' \
        "$f" >"$dest/$(basename "$f").tmp"
    mv "$dest/$(basename "$f").tmp" "$dest/$(basename "$f")"
done
echo "collected $(ls "$dest" | wc -l) files into ${dest#"$PWD"/}"
grep -nE '(^|[ =(\x27"])/(tmp|opt|root|home|work)/' "$dest"/* && { echo "absolute paths left (above)" >&2; exit 1; } || true
