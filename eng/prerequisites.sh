#!/usr/bin/env bash
# Makes this machine able to build and run PolaFormer for .NET. Idempotent: run it as often as you like.
#
# Why: TorchSharp 0.107's native glue (libLibTorchSharp.so) was built with GCC 13 and needs the
# GLIBCXX_3.4.32 symbol version from the system libstdc++. Debian 12 ships GCC 12's libstdc++
# (up to GLIBCXX_3.4.30), so `using TorchSharp` fails with a TypeInitializationException there.
# The fix is Debian 13's libstdc++6 with the trixie source pinned at priority 100: only libstdc++6 and the packages
# it requires (libc6, base-files and about 25 small ones; /etc/os-release then says 13) come from trixie.
# Systems that already have GLIBCXX_3.4.32 (Debian 13+, Ubuntu 24.04+, Fedora 39+) are left alone.
#
# Open MPI: the distributed tests run three ranks under mpirun (the mpi backend calls libmpi.so.40 directly).
# Installed from the distribution (Debian/Ubuntu: openmpi-bin); left alone when mpirun and libmpi.so.40 exist.
#
# NVRTC (optional): the tests compile the fused CUDA kernels' sources with NVIDIA's run-time compiler (libnvrtc), no GPU
# needed. Debian 12 serves it in the non-free component as libnvrtc11.2 (CUDA 11.8); this enables non-free for that
# package alone: a deb822 source for bookworm non-free whose packages are pinned at -1 (never installed) except
# libnvrtc11.2 and its libnvrtc-builtins11.8 (500). Left alone when a libnvrtc is already installed; elsewhere the
# compile tests skip with a reason.
#
# It does not install .NET (see README).
set -euo pipefail

log() { printf '[prerequisites] %s\n' "$*"; }

find_libstdcxx() {
  local candidates=(/usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib/aarch64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6 /usr/lib/libstdc++.so.6)
  for f in "${candidates[@]}"; do [ -e "$f" ] && { echo "$f"; return 0; }; done
  ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 /{print $NF; exit}'
}

has_glibcxx_3432() {
  local lib; lib=$(find_libstdcxx)
  [ -n "$lib" ] && grep -qa 'GLIBCXX_3\.4\.32' "$lib"
}

has_openmpi() {
  command -v mpirun >/dev/null 2>&1 || return 1
  local libs; libs=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)   # no grep -q in a pipe: pipefail
  [[ "$libs" == *"libmpi.so.40 "* ]]
}

if [ "$(uname -s)" != "Linux" ]; then
  log "not Linux: nothing to do."
  exit 0
fi

SUDO=""
need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { log "needs root (or sudo) to install $1."; exit 1; }
    SUDO="sudo"
  fi
}

ensure_openmpi() {
  if has_openmpi; then
    log "Open MPI already installed ($(mpirun --version 2>/dev/null | head -n 1)): nothing to do."
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    log "Open MPI (mpirun, libmpi.so.40) is missing: install it with your package manager (e.g. dnf install openmpi), then run this again."
    exit 1
  fi
  need_root "Open MPI"
  log "installing Open MPI (openmpi-bin) for the distributed tests..."
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openmpi-bin >/dev/null
  has_openmpi || { log "installed openmpi-bin but mpirun or libmpi.so.40 is still missing."; exit 1; }
  log "done: $(mpirun --version 2>/dev/null | head -n 1)."
}

has_nvrtc() {
  local libs; libs=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)   # no grep -q in a pipe: pipefail
  [[ "$libs" == *"libnvrtc.so"* ]]
}

ensure_nvrtc() {
  if has_nvrtc; then
    log "NVRTC already installed: nothing to do."
    return 0
  fi
  # Debian 12's sources, not /etc/os-release: after the libstdc++ step above that file says 13 (base-files moved).
  if ! command -v apt-get >/dev/null 2>&1 || ! grep -rqsw 'bookworm' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "NVRTC (libnvrtc) is not installed; optional: the CUDA kernel compile tests skip without it (install your distribution's or CUDA's libnvrtc)."
    return 0
  fi
  need_root "NVRTC (libnvrtc11.2 from Debian non-free)"
  log "installing NVRTC (libnvrtc11.2, CUDA 11.8) from Debian 12 non-free, pinned so nothing else comes from non-free..."
  $SUDO tee /etc/apt/sources.list.d/polaformer-nonfree.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO tee /etc/apt/preferences.d/polaformer-nonfree >/dev/null <<'PIN'
Package: libnvrtc11.2 libnvrtc-builtins11.8
Pin: release n=bookworm, c=non-free
Pin-Priority: 500

Package: *
Pin: release n=bookworm, c=non-free
Pin-Priority: -1
PIN
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnvrtc11.2 >/dev/null
  has_nvrtc || { log "installed libnvrtc11.2 but no libnvrtc.so is registered with the loader."; exit 1; }
  log "done: $(ldconfig -p | awk '/libnvrtc\.so/{print $NF; exit}')."
}

if has_glibcxx_3432; then
  log "libstdc++ already provides GLIBCXX_3.4.32: nothing to do."
  ensure_openmpi
  ensure_nvrtc
  exit 0
fi

. /etc/os-release 2>/dev/null || true
if [ "${ID:-}" != "debian" ] || [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
  log "libstdc++ lacks GLIBCXX_3.4.32 and this is not Debian 12 (found ${PRETTY_NAME:-unknown})."
  log "Install a libstdc++ from GCC 13 or newer (package libstdc++6 >= 13), then run this again."
  exit 1
fi

need_root "Debian 13's libstdc++6"

log "installing Debian 13 (trixie) libstdc++6, pinned at priority 100 (only it and what it requires move)..."
$SUDO tee /etc/apt/sources.list.d/polaformer-trixie.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
$SUDO tee /etc/apt/preferences.d/polaformer-trixie >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends -t trixie libstdc++6 >/dev/null

if has_glibcxx_3432; then
  log "done: libstdc++ now provides GLIBCXX_3.4.32."
else
  log "installed libstdc++6 from trixie but GLIBCXX_3.4.32 is still missing; TorchSharp will not load."
  exit 1
fi
ensure_openmpi
ensure_nvrtc
