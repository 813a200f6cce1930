#!/usr/bin/env python3
"""Checks that benchmarks/python/official_layers.py's PolaLinearAttention (the official op sequence written out for
the PyTorch side of the benchmarks) reproduces the authors' code: loads the golden case made by make_golden.py
(../attn_pvt_pola_sr1_d64_h1_hw8.safetensors), runs forward and backward, and prints the scaled max errors of the
output and of every gradient (float32 noise is ~1e-6). Unlike the generators it needs no official checkout.

    python3 tests/PolaFormer.Tests/Golden/generator/check_golden.py [path/to/attn_pvt_pola_*.safetensors]
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / 'benchmarks' / 'python'))
from official_layers import PolaLinearAttention  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[1] / 'attn_pvt_pola_sr1_d64_h1_hw8.safetensors'


def load_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop('__metadata__', {})
    dtypes = {'F32': np.float32, 'F64': np.float64, 'I64': np.int64}
    tensors = {k: torch.from_numpy(np.frombuffer(data[v['data_offsets'][0]:v['data_offsets'][1]],
                                                 dtype=dtypes[v['dtype']]).reshape(v['shape']).copy())
               for k, v in header.items()}
    return tensors, meta


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    t, meta = load_safetensors(path)
    dim, heads = int(meta['dim']), int(meta['num_heads'])
    h, w = int(meta['H']), int(meta['W'])
    layer = PolaLinearAttention(dim, int(meta['num_patches']), heads, qkv_bias=meta['qkv_bias'] == 'true',
                                sr_ratio=int(meta['sr_ratio']), kernel_size=int(meta['kernel_size']),
                                alpha=float(meta['alpha']))
    layer.load_state_dict({k: v for k, v in t.items() if not k.startswith(('input.', 'output.', 'grad.'))}, strict=True)
    x = t['input.x'].clone().requires_grad_(True)
    y = layer(x, h, w)
    (y * t['input.R']).sum().backward()
    scaled = lambda a, g: ((a - g).abs().max() / g.abs().max()).item()
    worst = {'output.y': scaled(y.detach(), t['output.y']), 'grad.x': scaled(x.grad, t['grad.x'])}
    for name, p in layer.named_parameters():
        worst['grad.' + name] = scaled(p.grad, t['grad.' + name])
    for k, v in worst.items():
        print(f'{k:32} {v:.2e}')
    ok = worst['output.y'] < 5e-6 and max(v for k, v in worst.items() if k != 'output.y') < 2e-5
    print('matches the official code' if ok else 'MISMATCH')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
