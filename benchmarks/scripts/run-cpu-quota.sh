#!/usr/bin/env bash
# The training step under a container-style CPU quota (a cgroup's cfs quota: what `docker run --cpus` sets): does
# LibTorch's OpenMP collapse when the process may use fewer CPUs than the machine has? Runs the `model` benchmark
# (Pola-PVT-T training step, batch 64, 32 px: the digits job's shape) with no quota, 1 CPU and 0.5 CPU, each with
#   spin/2    LibTorch's own choice on this machine: a thread per core, OpenMP spinning (--cpu-runtime spin --threads 2)
#   tuned/2   passive OpenMP threads, still two (--cpu-runtime tuned --threads 2)
#   tuned/auto the default of TorchRuntime.ConfigureCpu(): passive, threads capped at Environment.ProcessorCount,
#             which .NET derives from the quota (--cpu-runtime tuned --threads auto)
# Needs root and a cgroup CPU controller (v1 at /sys/fs/cgroup/cpu or v2 with cpu.max). Writes JSON lines (one per
# measurement, with quota_cpus and config) to the file given as $1.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: run-cpu-quota.sh OUTPUT.jsonl}
dotnet build benchmarks/PolaFormer.Benchmarks -c Release -v quiet -nologo >/dev/null
bench=(dotnet benchmarks/PolaFormer.Benchmarks/bin/Release/net10.0/PolaFormer.Benchmarks.dll model --name pola_pvt_tiny --batch 64 --size 32 --mode train --json)

if [[ -d /sys/fs/cgroup/cpu && -w /sys/fs/cgroup/cpu ]]; then
  group=/sys/fs/cgroup/cpu/polaformer-quota-$$; mkdir "$group"
  set_quota() { if [[ $1 == none ]]; then echo -1 > "$group/cpu.cfs_quota_us"; else
    echo 100000 > "$group/cpu.cfs_period_us"; awk -v c="$1" 'BEGIN { printf "%d\n", c * 100000 }' > "$group/cpu.cfs_quota_us"; fi; }
elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
  group=/sys/fs/cgroup/polaformer-quota-$$; mkdir "$group"
  set_quota() { if [[ $1 == none ]]; then echo "max 100000" > "$group/cpu.max"; else
    awk -v c="$1" 'BEGIN { printf "%d 100000\n", c * 100000 }' > "$group/cpu.max"; fi; }
else
  echo "no writable cgroup CPU controller here (needs root; v1 /sys/fs/cgroup/cpu or v2 cpu.max)" >&2; exit 1
fi
trap 'rmdir "$group" 2>/dev/null || true' EXIT

for round in 1 2; do
  for quota in none 1 0.5; do
    set_quota "$quota"
    for config in "spin 2" "tuned 2" "tuned auto"; do
      set -- $config
      line=$(bash -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$group" "${bench[@]}" --cpu-runtime "$1" --threads "$2" 2>/dev/null | tail -1)
      echo "{\"round\": $round, \"quota_cpus\": \"$quota\", \"config\": \"$1/$2\", ${line#\{}" | tee -a "$out"
    done
  done
done
