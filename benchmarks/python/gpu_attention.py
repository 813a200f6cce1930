#!/usr/bin/env python3
"""PyTorch side of the GPU attention benchmark (benchmarks/PolaFormer.GpuCheck): the official op sequence, timed and measured the way
`polaformer-gpucheck bench-attention` measures the C# layers, on the same device, for a side-by-side ratio.

--impls pola     models.pola_pvt.PolaLinearAttention (ZacharyMeng/PolaFormer), op for op, written out here from
                 tests/PolaFormer.Tests/Golden/README.md ("Behaviours of the official code"); no spatial reduction
                 (sr_ratio 1), as in the C# benchmark. The official repository is not imported.
--impls softmax  models.pola_pvt.Attention: q and kv Linear, softmax(q k^T * scale) v, proj (sr_ratio 1).

One JSON line per (impl, tokens): median_ms of forward+backward (a random cotangent R: (layer(x) * R).sum().backward()),
and memory. On CUDA: torch.cuda.max_memory_allocated / max_memory_reserved, and gpu_used_delta_bytes (the device's
used memory after the run minus after CUDA initialisation, torch.cuda.mem_get_info), the same quantity the C# side
reports (TorchSharp has no allocator statistics). Each configuration runs in a fresh process by default so the
figures are per configuration. Out-of-memory configurations are reported with "oom": true.

Works with PyTorch 1.13 (Debian's, CPU dry run) and 2.x (the GPU machine).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    p.add_argument('--impls', default='pola,softmax')
    p.add_argument('--tokens', default=None, help='comma-separated square numbers (default 1024,4096,16384,65536)')
    p.add_argument('--dim', type=int, default=64)
    p.add_argument('--heads', type=int, default=2)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--mode', default='fwdbwd', choices=['fwd', 'fwdbwd'])
    p.add_argument('--tf32', default='off', choices=['on', 'off'])
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: leave PyTorch\'s default)')
    p.add_argument('--quick', action='store_true', help='small sizes and few iterations (CPU dry run)')
    p.add_argument('--no-isolate', action='store_true', help='run every configuration in this process')
    p.add_argument('--single', action='store_true', help=argparse.SUPPRESS)
    return p.parse_args(argv)


import torch  # noqa: E402

from official_layers import attention_step  # noqa: E402  (beside this script, also in the GPU pack)


def is_oom(e):
    oom_type = getattr(torch.cuda, 'OutOfMemoryError', None)
    return (oom_type is not None and isinstance(e, oom_type)) or 'out of memory' in str(e).lower()


def rss(key):
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def gpu_used():
    free, total = torch.cuda.mem_get_info()
    return total - free, total


def measure(step, sync, quick):
    """Same rule as Timing.Measure on the C# side: warm-up, then at least 15 iterations and 1 s (max 20 s)."""
    warmup, min_iterations, min_seconds, max_seconds = (1, 3, 0.0, 20.0) if quick else (5, 15, 1.0, 20.0)
    for _ in range(warmup):
        step()
    sync()
    samples = []
    start = time.perf_counter()
    while len(samples) < min_iterations or time.perf_counter() - start < min_seconds:
        if samples and time.perf_counter() - start > max_seconds:
            break
        t0 = time.perf_counter()
        step()
        sync()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def one(a, impl, tokens):
    report = {'benchmark': 'attention', 'language': 'python', 'impl': impl, 'tokens': tokens, 'dim': a.dim,
              'heads': a.heads, 'batch': a.batch, 'mode': a.mode, 'device': a.device, 'dtype': 'float32', 'tf32': a.tf32}
    cuda = a.device == 'cuda'
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = a.tf32 == 'on'
        torch.backends.cudnn.allow_tf32 = a.tf32 == 'on'
        torch.cuda.init()
        torch.zeros(1, device='cuda')  # the context exists before the baseline, as on the C# side
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline, total = gpu_used()
    else:
        if a.threads > 0:
            torch.set_num_threads(a.threads)
        baseline = rss('VmRSS:')
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    try:
        try:
            step = attention_step(impl, tokens, a.dim, a.heads, a.batch, a.mode, device)
        except ValueError as e:
            raise SystemExit(f'error: {e}')
        samples = measure(step, sync, a.quick)
        samples.sort()
        report.update({'median_ms': statistics.median(samples), 'min_ms': samples[0], 'max_ms': samples[-1],
                       'iterations': len(samples), 'oom': False})
    except RuntimeError as e:
        if not is_oom(e):
            raise
        report.update({'oom': True, 'error': str(e).splitlines()[0]})
    if cuda:
        torch.cuda.synchronize()
        used, total = gpu_used()
        report.update({'max_memory_allocated_bytes': torch.cuda.max_memory_allocated(),
                       'max_memory_reserved_bytes': torch.cuda.max_memory_reserved(),
                       'gpu_used_delta_bytes': used - baseline, 'gpu_used_bytes': used, 'gpu_baseline_bytes': baseline,
                       'gpu_total_bytes': total,
                       'memory_method': 'torch.cuda.max_memory_allocated/reserved; gpu_used_delta: mem_get_info used-after '
                                        'minus used-after-CUDA-init, fresh process'})
        report['gpu_name'] = torch.cuda.get_device_name(0)
        report['cuda_version'] = torch.version.cuda
        report['cudnn_version'] = torch.backends.cudnn.version()
    else:
        peak = rss('VmHWM:')
        report.update({'peak_rss_bytes': peak, 'baseline_rss_bytes': baseline, 'peak_extra_bytes': peak - baseline,
                       'memory_method': 'VmHWM minus VmRSS before the configuration'})
    report['runtime'] = f'PyTorch {torch.__version__} (Python {sys.version.split()[0]})'
    print(json.dumps(report), flush=True)


def main(argv=None):
    a = parse_args(argv)
    if a.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but torch.cuda.is_available() is False')
    impls = [s.strip() for s in a.impls.split(',') if s.strip()]
    tokens = [int(s) for s in (a.tokens or ('256,1024' if a.quick else '1024,4096,16384,65536')).split(',') if s.strip()]
    failed = 0
    for n in tokens:
        for impl in impls:
            if a.single or a.no_isolate:
                one(a, impl, n)
                continue
            argv_child = [sys.executable, os.path.abspath(__file__), '--single', '--device', a.device, '--impls', impl,
                          '--tokens', str(n), '--dim', str(a.dim), '--heads', str(a.heads), '--batch', str(a.batch),
                          '--mode', a.mode, '--tf32', a.tf32, '--threads', str(a.threads)] + (['--quick'] if a.quick else [])
            sys.stdout.flush()
            code = subprocess.call(argv_child)
            if code != 0:
                failed += 1
                print(json.dumps({'benchmark': 'attention', 'language': 'python', 'impl': impl, 'tokens': n,
                                  'device': a.device, 'error': f'the child process exited with code {code}'}), flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
