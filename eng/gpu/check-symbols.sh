#!/usr/bin/env bash
# Does a LibTorch build export everything libLibTorchSharp.so needs from it?
#
#   bash eng/gpu/check-symbols.sh path/to/libLibTorchSharp.so TORCH_LIB_DIR [MISSING_LIST_FILE]
#
# Compares the unversioned undefined symbols of libLibTorchSharp.so (`nm -D --undefined-only`, type U: the C++ API of
# libtorch/libc10; libc/libstdc++/libgcc symbols carry a version such as @GLIBC_2.14 and are left to the loader) with
# the defined dynamic symbols of every libtorch*.so* and libc10*.so* in TORCH_LIB_DIR (except libtorch_python and test
# libraries). Prints the counts and every missing symbol (demangled), writes the mangled list to MISSING_LIST_FILE when
# given, and exits 1 when any is missing.
# A missing symbol means TorchSharp fails at load time ("undefined symbol") or when that function is first called:
# this finds an ABI mismatch in seconds instead of after a failed run.
# Without nm (binutils), elf_symbols.py beside this script reads the same tables (python3, standard library).
set -euo pipefail
lts=${1:?usage: check-symbols.sh libLibTorchSharp.so TORCH_LIB_DIR [MISSING_LIST_FILE]}
dir=${2:?usage: check-symbols.sh libLibTorchSharp.so TORCH_LIB_DIR [MISSING_LIST_FILE]}
list=${3:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if command -v nm >/dev/null && [ -z "${CHECK_SYMBOLS_PYTHON:-}" ]; then
    tool=nm
elif command -v python3 >/dev/null && [ -f "$here/elf_symbols.py" ]; then
    tool=python
else
    echo "check-symbols: neither nm (binutils) nor python3 with $here/elf_symbols.py" >&2
    exit 2
fi
[ -f "$lts" ] || { echo "check-symbols: no such file: $lts" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Undefined, unversioned, strong (U) symbols. nm prints "                 U name" for undefined ones.
if [ $tool = nm ]; then
    nm -D --undefined-only "$lts" | awk '$1 == "U" && $2 !~ /@/ { print $2 }' | sort -u >"$tmp/needed"
else
    python3 "$here/elf_symbols.py" undefined "$lts" | sort -u >"$tmp/needed"
fi

shopt -s nullglob
libs=()
for f in "$dir"/libtorch*.so* "$dir"/libc10*.so*; do
    # libtorch_python (the Python bindings) and test libraries are never loaded by TorchSharp: their exports must not
    # hide a symbol that is missing from the libraries that are.
    case $(basename "$f") in libtorch_python*|*test*) continue ;; esac
    libs+=("$f")
done
[ ${#libs[@]} -gt 0 ] || { echo "check-symbols: no libtorch*/libc10* in $dir" >&2; exit 2; }
if [ $tool = nm ]; then
    for f in "${libs[@]}"; do
        # Defined dynamic symbols, version suffix stripped.
        nm -D --defined-only "$f" 2>/dev/null | awk 'NF >= 3 { sub(/@.*/, "", $3); print $3 }'
    done | sort -u >"$tmp/exported"
else
    python3 "$here/elf_symbols.py" defined "${libs[@]}" | sort -u >"$tmp/exported"
fi

comm -23 "$tmp/needed" "$tmp/exported" >"$tmp/missing"
needed=$(wc -l <"$tmp/needed")
missing=$(wc -l <"$tmp/missing")
echo "check-symbols ($tool): $(basename "$lts") needs $needed unversioned symbols; $(wc -l <"$tmp/exported") exported by ${#libs[@]} libraries in $dir; missing: $missing"
[ -n "$list" ] && cp "$tmp/missing" "$list"
if [ "$missing" -gt 0 ]; then
    if command -v c++filt >/dev/null; then c++filt <"$tmp/missing"; else cat "$tmp/missing"; fi | sed 's/^/  missing: /'
    exit 1
fi
