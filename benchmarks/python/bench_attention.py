#!/usr/bin/env python3
"""PyTorch side of the attention benchmark: the same arguments and JSON fields as

    dotnet run -c Release --project benchmarks/PolaFormer.Benchmarks -- attention ...

--impl pola     the official op sequence of the PVT-style polarity attention (models.pola_pvt.PolaLinearAttention,
                ZacharyMeng/PolaFormer @ 44cdd39), written out here from tests/PolaFormer.Tests/Golden/README.md
                ("Behaviours of the official code"); the official repository is not imported.
--impl softmax  softmax attention (models.pola_pvt.Attention): q and kv Linear, softmax(q k^T * scale) v, proj.

Run each configuration in its own process: peak_rss_bytes is the process's ru_maxrss, so it is per-configuration
only in a fresh process (as on the C# side).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--impl', default='pola', choices=['pola', 'softmax'])
    p.add_argument('--tokens', type=int, default=3136)
    p.add_argument('--dim', type=int, default=64)
    p.add_argument('--heads', type=int, default=2)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--mode', default='fwdbwd', choices=['fwd', 'fwdbwd'])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--iterations', type=int, default=15, help='timed iterations at least')
    p.add_argument('--min-seconds', type=float, default=3.0)
    p.add_argument('--max-seconds', type=float, default=60.0)
    p.add_argument('--max-iterations', type=int, default=1000)
    p.add_argument('--json', action='store_true')
    p.add_argument('--cpu-runtime', default='tuned', choices=['tuned', 'passive', 'default'],
                   help='the C# side\'s TorchRuntime.ConfigureCpu settings, applied here the same way: tuned = glibc '
                        'malloc keeps freed memory (no mmap, trim at 2 GiB); passive = that and OMP_WAIT_POLICY=PASSIVE')
    return p.parse_args(argv)


def configure_cpu_runtime(mode):
    """What TorchRuntime.ConfigureCpu does on the C# side, so both sides run under the same allocator settings."""
    applied = []
    if mode == 'passive' and not os.environ.get('OMP_WAIT_POLICY'):
        os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'
        applied.append('OMP_WAIT_POLICY=PASSIVE')
    if mode in ('tuned', 'passive'):
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        if libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1:
            applied.append('freed native memory kept for reuse (glibc malloc: no mmap, no trim)')
    return 'CPU runtime: ' + ('; '.join(applied) if applied else 'defaults')


ARGS = parse_args() if __name__ == '__main__' else None
if ARGS is not None:
    # Debian's PyTorch calls the system BLAS (libblas.so.3: OpenBLAS where installed), which reads its thread count
    # from the environment at load time, not from torch.set_num_threads: set it before torch is imported. Prefer
    # the OpenMP build of OpenBLAS (libopenblas0-openmp; LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp,
    # as benchmarks/scripts/benchlib.py does): it shares PyTorch's OpenMP threads, where the pthread build's own
    # threads spin beside them and oversubscribe the cores.
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ[var] = str(ARGS.threads)
    CPU_RUNTIME = configure_cpu_runtime(ARGS.cpu_runtime)

import torch  # noqa: E402

from official_layers import attention_step  # noqa: E402  (imports torch: after the environment)


def blas_library():
    """The BLAS shared object this process actually loaded (Debian's PyTorch uses the system libblas.so.3)."""
    try:
        with open('/proc/self/maps') as f:
            paths = {line.split()[-1] for line in f if '/' in line}
        hits = sorted(p for p in paths if any(n in os.path.basename(p) for n in ('blas', 'mkl', 'blis')))
        return ', '.join(os.path.realpath(p) for p in hits) or 'none found'
    except OSError:
        return 'unknown'


def current_rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return -1


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def time_it(step, warmup, min_iterations, min_seconds, max_seconds, max_iterations, max_warmup_seconds=3.0):
    """Same rule as Measurement.Time on the C# side."""
    start = time.perf_counter()
    warmups = 0
    while warmups < warmup and (warmups == 0 or time.perf_counter() - start < max_warmup_seconds):
        step()
        warmups += 1
    samples = []
    start = time.perf_counter()
    while len(samples) < max(1, max_iterations):
        elapsed = time.perf_counter() - start
        if len(samples) >= min_iterations and elapsed >= min_seconds:
            break
        if len(samples) >= 1 and elapsed >= max_seconds:
            break
        t0 = time.perf_counter()
        step()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples, warmups


def main():
    a = ARGS

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    baseline = current_rss()
    try:
        step = attention_step(a.impl, a.tokens, a.dim, a.heads, a.batch, a.mode)
    except ValueError as e:
        sys.exit(f'error: {e}')

    samples, warmups = time_it(step, a.warmup, a.iterations, a.min_seconds, a.max_seconds, a.max_iterations)
    peak = peak_rss()
    report = {
        'benchmark': 'attention', 'impl': a.impl, 'tokens': a.tokens, 'dim': a.dim, 'heads': a.heads, 'batch': a.batch,
        'mode': a.mode, 'threads': a.threads,
        'median_ms': statistics.median(samples), 'min_ms': min(samples), 'max_ms': max(samples),
        'iterations': len(samples), 'warmup_iterations': warmups,
        'peak_rss_bytes': peak, 'baseline_rss_bytes': baseline, 'peak_extra_bytes': peak - baseline,
        'torch_version': torch.__version__, 'runtime': f'PyTorch {torch.__version__} (Python {sys.version.split()[0]})',
        'blas': blas_library(), 'cpu_runtime': CPU_RUNTIME,
        'language': 'python',
    }
    if a.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f'{k:20} {v}')


if __name__ == '__main__':
    main()
