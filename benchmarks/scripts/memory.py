#!/usr/bin/env python3
"""Memory at high resolution: peak resident memory of one batch-1 inference of Pola-PVT-T and its softmax
counterpart at 224, 512 and 1024, and the largest square image each runs within 8 GiB of process memory.

Method: each attempt is a fresh process (`model --mode infer --batch 1 --size S`, one forward, no warm-up) under an
address-space cap of 12 GiB (RLIMIT_AS; the .NET GC reservation is bounded so the cap is meaningful) that only
protects the shared machine. An attempt fits when the process completes and its peak RSS (VmHWM: model, input and
every activation) is at most 8 GiB; it does not when the peak exceeds 8 GiB or LibTorch cannot allocate under the
cap; the driver also kills an attempt the moment its resident memory passes 8 GiB (polled every 20 ms), so
attempts that cannot fit fail fast. The side doubles from 224 until an attempt does not fit, then bisects between the last fit and the first
failure in steps of 32 (the models need multiples of 32). Writes memory.jsonl to this sitting's
benchmarks/results/<date>-<machine>/ (benchlib.RESULTS)."""
import argparse

import benchlib as b

MODELS = ['pola_pvt_tiny', 'pvt_tiny_softmax']


def attempt(name, size, cap, limit, threads, phase, cpu_runtime):
    argv = b.csharp('model', '--name', name, '--batch', 1, '--size', size, '--mode', 'infer', '--threads', threads,
                    '--warmup', 0, '--iterations', 1, '--min-seconds', 0, '--max-seconds', 0, '--cpu-runtime', cpu_runtime)
    r = b.run_json(argv, cap, timeout=600, extra_env=b.DOTNET_ENV, rss_limit=limit)
    r.update(name=name, size=size, phase=phase, limit_bytes=limit, cap_bytes=cap)
    r['fits'] = not r.get('failed') and r['peak_rss_bytes'] <= limit
    b.append_jsonl('memory.jsonl', r)
    b.log(f'{name:18} {size:5}px {phase:7}',
          ('FAILED: ' + r['error']) if r.get('failed') else
          f"peak {r['peak_rss_bytes'] / b.GIB:6.2f} GiB  {r['median_ms'] / 1000:7.1f} s  {'fits' if r['fits'] else 'over 8 GiB'}")
    return r['fits']


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--limit-gib', type=float, default=8)
    p.add_argument('--cap-gib', type=float, default=12)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--sizes', default='224,512,1024')
    p.add_argument('--start', type=int, default=224)
    p.add_argument('--cpu-runtime', default='default', choices=['default', 'tuned', 'passive'],
                   help='native CPU runtime (default: untouched; "tuned" keeps freed memory for reuse, which raises '
                        'the peak of a single huge forward)')
    p.add_argument('--no-build', action='store_true')
    a = p.parse_args()
    if not a.no_build:
        b.build()
    limit, cap = int(a.limit_gib * b.GIB), int(a.cap_gib * b.GIB)
    b.write_jsonl('memory.jsonl', [])
    for name in a.models.split(','):
        for size in [int(s) for s in a.sizes.split(',')]:
            attempt(name, size, cap, limit, a.threads, 'peak', a.cpu_runtime)
    for name in a.models.split(','):
        good, bad = None, None
        size = a.start
        while bad is None:
            if attempt(name, size, cap, limit, a.threads, 'double', a.cpu_runtime):
                good, size = size, size * 2
            else:
                bad = size
        if good is None:
            b.log(f'{name}: even {a.start}px does not fit')
            continue
        while bad - good > 32:
            mid = (good + bad) // 2 // 32 * 32
            if attempt(name, mid, cap, limit, a.threads, 'bisect', a.cpu_runtime):
                good = mid
            else:
                bad = mid
        b.append_jsonl('memory.jsonl', {'benchmark': 'memory-limit', 'name': name, 'largest_side': good,
                                        'first_failing_side': bad, 'limit_bytes': limit})
        b.log(f'{name}: largest side within {a.limit_gib} GiB = {good} (fails at {bad})')


if __name__ == '__main__':
    main()
