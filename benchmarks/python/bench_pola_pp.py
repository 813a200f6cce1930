#!/usr/bin/python3
"""CPU timing of the authors' PolaFormer++ classification models (github.com/ZacharyMeng/PolaFormerPP,
polaformer++/models/pola.py, POLA_b0 / b1 / b2 as registered there), for comparison with the C# pola_pp_b* presets.

    /usr/bin/python3 benchmarks/python/bench_pola_pp.py --official <PolaFormerPP checkout>/polaformer++ \
        --threads 2 [--models b0,b1,b2] [--batches 1,8] [--modes fwd,fwdbwd] > pola_pp_cpu.jsonl

The official code is imported from --official, unchanged (it is not part of this repository); get it at the commit
the golden files name (tests/PolaFormer.Tests/Golden/generator/README.md):

    git clone https://github.com/ZacharyMeng/PolaFormerPP && git -C PolaFormerPP checkout fd26f5e

Its imports that Debian's PyTorch 1.13 lacks (timm, einops, fvcore) come from the stand-ins in
tests/PolaFormer.Tests/Golden/generator/_shim (DropPath, to_2tuple, trunc_normal_, register_model, _cfg; the rest
imported but never called).

Per (model, batch, mode) one JSON line on stdout:
  model, official, image, batch, threads, mode, ms_median (median wall-clock ms per iteration), ms_min, ms_mean,
  iterations, warmup, params, torch
Modes: fwd = model.eval() under torch.no_grad(), one forward of a (batch, 3, image, image) random batch;
fwdbwd = model.train(), forward, cross-entropy on fixed random labels, backward (gradients set to None before each
iteration; no optimizer step; BatchNorm in training mode and drop path active, as in training). Timing: --warmup untimed iterations, then at least --iterations timed ones and at
least --min-seconds (capped by --max-seconds). Threads: OMP_NUM_THREADS and MKL_NUM_THREADS are set before torch is
imported and torch.set_num_threads(--threads), interop threads 1. Construction prints go to stderr.
Dry run: --warmup 0 --iterations 1 --min-seconds 0.
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / 'tests' / 'PolaFormer.Tests' / 'Golden' / 'generator' / '_shim'
FACTORIES = {'b0': 'POLA_b0', 'b1': 'POLA_b1', 'b2': 'POLA_b2', 'b3': 'POLA_b3', 'b4': 'POLA_b4', 'b5': 'POLA_b5'}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--official', required=True, help="the PolaFormerPP checkout's polaformer++ folder (has models/)")
    p.add_argument('--threads', type=int, required=True, help='intra-op threads')
    p.add_argument('--models', default='b0,b1,b2', help='comma-separated, of ' + ','.join(FACTORIES))
    p.add_argument('--batches', default='1,8')
    p.add_argument('--modes', default='fwd,fwdbwd')
    p.add_argument('--image', type=int, default=224)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--iterations', type=int, default=10, help='timed iterations at least')
    p.add_argument('--min-seconds', type=float, default=3.0)
    p.add_argument('--max-seconds', type=float, default=120.0)
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ['OMP_NUM_THREADS'] = str(args.threads)
    os.environ['MKL_NUM_THREADS'] = str(args.threads)
    import torch  # after the thread variables
    import torch.nn.functional as F
    import warnings
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)

    official = Path(args.official).resolve()
    if not (official / 'models' / 'pola.py').is_file():
        sys.exit(f'{official} has no models/pola.py: pass the polaformer++ folder of the PolaFormerPP checkout')
    sys.path[:0] = [str(SHIM), str(official)]
    with contextlib.redirect_stdout(sys.stderr):
        from models import pola

    def timed(step):
        for _ in range(args.warmup):
            step()
        times = []
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
            elapsed = time.perf_counter() - start
            if len(times) >= args.iterations and elapsed >= args.min_seconds:
                break
            if elapsed >= args.max_seconds and times:
                break
        return times

    status = 1
    for key in [m.strip() for m in args.models.split(',') if m.strip()]:
        factory = FACTORIES[key]
        torch.manual_seed(args.seed)
        with contextlib.redirect_stdout(sys.stderr):
            model = getattr(pola, factory)()
        params = sum(p.numel() for p in model.parameters())
        for batch in [int(b) for b in args.batches.split(',')]:
            gen = torch.Generator().manual_seed(args.seed + batch)
            x = torch.randn(batch, 3, args.image, args.image, generator=gen)
            labels = torch.randint(0, 1000, (batch,), generator=gen)
            for mode in [m.strip() for m in args.modes.split(',')]:
                if mode == 'fwd':
                    model.eval()

                    def step():
                        with torch.no_grad():
                            model(x)
                elif mode == 'fwdbwd':
                    model.train()

                    def step():
                        model.zero_grad(set_to_none=True)
                        F.cross_entropy(model(x), labels).backward()
                else:
                    sys.exit(f'unknown mode {mode!r} (fwd, fwdbwd)')
                times = timed(step)
                print(json.dumps({
                    'model': f'pola_pp_{key}', 'official': factory, 'image': args.image, 'batch': batch,
                    'threads': torch.get_num_threads(), 'mode': mode, 'ms_median': round(statistics.median(times), 3),
                    'ms_min': round(min(times), 3), 'ms_mean': round(statistics.fmean(times), 3),
                    'iterations': len(times), 'warmup': args.warmup, 'params': params, 'torch': torch.__version__,
                }), flush=True)
                status = 0
        del model
    return status


if __name__ == '__main__':
    raise SystemExit(main())
