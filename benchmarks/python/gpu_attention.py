#!/usr/bin/env python3
"""PyTorch side of the GPU attention benchmark (eng/gpu): the official op sequence, timed and measured the way
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
import math
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
import torch.nn as nn  # noqa: E402


class PolaLinearAttention(nn.Module):
    """models.pola_pvt.PolaLinearAttention, op for op (sr_ratio 1, dropout 0 as in the released configs)."""

    def __init__(self, dim, num_patches, num_heads=8, qkv_bias=False, kernel_size=5, alpha=4):
        super().__init__()
        assert dim % num_heads == 0
        self.dim = dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.head_dim = head_dim
        self.qg = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(in_channels=head_dim, out_channels=head_dim, kernel_size=kernel_size,
                             groups=head_dim, padding=kernel_size // 2)
        self.power = nn.Parameter(torch.zeros(size=(1, self.num_heads, 1, self.head_dim)))
        self.alpha = alpha
        self.scale = nn.Parameter(torch.zeros(size=(1, 1, dim)))
        self.positional_encoding = nn.Parameter(torch.zeros(size=(1, num_patches, dim)))

    def forward(self, x, H, W):
        B, N, C = x.shape
        q, g = self.qg(x).reshape(B, N, 2, C).unbind(2)
        kv = self.kv(x).reshape(B, -1, 2, C).permute(2, 0, 1, 3)
        k, v = kv[0], kv[1]
        n = k.shape[1]

        k = k + self.positional_encoding
        kernel_function = nn.ReLU()
        scale = nn.Softplus()(self.scale)
        power = 1 + self.alpha * torch.sigmoid(self.power)

        q = q / scale
        k = k / scale
        q = q.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3).contiguous()
        k = k.reshape(B, n, self.num_heads, -1).permute(0, 2, 1, 3).contiguous()
        v = v.reshape(B, n, self.num_heads, -1).permute(0, 2, 1, 3).contiguous()

        q_pos = kernel_function(q) ** power
        q_neg = kernel_function(-q) ** power
        k_pos = kernel_function(k) ** power
        k_neg = kernel_function(-k) ** power

        q_sim = torch.cat([q_pos, q_neg], dim=-1)
        q_opp = torch.cat([q_neg, q_pos], dim=-1)
        k = torch.cat([k_pos, k_neg], dim=-1)

        v1, v2 = torch.chunk(v, 2, dim=-1)

        z = 1 / (q_sim @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (k.transpose(-2, -1) * (n ** -0.5)) @ (v1 * (n ** -0.5))
        x_sim = q_sim @ kv * z
        z = 1 / (q_opp @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (k.transpose(-2, -1) * (n ** -0.5)) @ (v2 * (n ** -0.5))
        x_opp = q_opp @ kv * z

        x = torch.cat([x_sim, x_opp], dim=-1)
        x = x.transpose(1, 2).reshape(B, N, C)

        v = v.reshape(B * self.num_heads, H, W, -1).permute(0, 3, 1, 2)
        v = self.dwc(v).reshape(B, C, N).permute(0, 2, 1)
        x = x + v
        x = x * g
        return self.proj(x)


class Attention(nn.Module):
    """models.pola_pvt.Attention (softmax attention), op for op, sr_ratio 1."""

    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


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
    side = int(round(math.sqrt(tokens)))
    if side * side != tokens:
        raise SystemExit(f'error: --tokens has {tokens}; expected square numbers (the layer runs on a side x side grid).')
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
        if impl == 'pola':
            layer = PolaLinearAttention(a.dim, tokens, a.heads, qkv_bias=True).to(device)
            # The official init leaves these at zero; spread them as trained ones are (same rule as the C# side).
            with torch.no_grad():
                for name, prm in layer.named_parameters():
                    if name in ('power', 'scale', 'positional_encoding'):
                        prm.copy_(torch.randn_like(prm) * (1.0 if name == 'power' else 0.5))
        elif impl == 'softmax':
            layer = Attention(a.dim, a.heads, qkv_bias=True).to(device)
        else:
            raise SystemExit(f"error: --impls has '{impl}'; expected pola or softmax.")
        x = torch.randn(a.batch, tokens, a.dim, device=device)
        r = torch.randn(a.batch, tokens, a.dim, device=device)
        if a.mode == 'fwd':
            layer.eval()

            def step():
                with torch.no_grad():
                    layer(x, side, side)
        else:
            layer.train()

            def step():
                inp = x.detach().requires_grad_(True)
                (layer(inp, side, side) * r).sum().backward()
                layer.zero_grad()

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
