#!/usr/bin/env python3
"""Whole-model throughput: the float32 matmul ceiling (2048^3 through TorchSharp), FLOPs (MACs) of every model,
then images/s of Pola-PVT-T, Pola-Swin-T and their softmax counterparts at 224^2: inference at batch 1 and 8 and a
training step at batch 8, each measurement in a fresh process, the models interleaved, two rounds.
Writes {matmul,flops,models}.jsonl to this sitting's benchmarks/results/<date>-<machine>/ (benchlib.RESULTS).
See benchmarks/scripts/run-models.sh."""
import argparse
import json
import os
import subprocess

import benchlib as b

MODELS = ['pola_pvt_tiny', 'pvt_tiny_softmax', 'pola_swin_tiny', 'swin_tiny_softmax']
CONFIGS = [  # (mode, batch, timing)
    ('infer', 1, ['--warmup', 3, '--iterations', 10, '--min-seconds', 2]),
    ('infer', 8, ['--warmup', 2, '--iterations', 5, '--min-seconds', 2]),
    ('train', 8, ['--warmup', 2, '--iterations', 3, '--min-seconds', 0]),
]


def measure(a, cap, name, mode, batch, timing, macs, rnd):
    argv = b.csharp('model', '--name', name, '--batch', batch, '--size', a.size, '--mode', mode,
                    '--threads', a.threads, '--flops', macs, *timing)
    r = b.run_json(argv, cap, extra_env=b.DOTNET_ENV)
    r.update(name=name, mode=mode, batch=batch, size=a.size, round=rnd, macs_per_image=macs)
    b.append_jsonl('models.jsonl', r)
    b.log(f'{name:18} {mode} b{batch} round {rnd}',
          'FAILED: ' + r['error'] if r.get('failed') else f"{r['images_per_s']:7.2f} images/s")


def fill(a, cap):
    """Extra rounds for configurations whose rounds disagree (a neighbour's job landed in one of them)."""
    macs = {f['name']: f['macs'] for f in b.read_jsonl('flops.jsonl')}
    for extra in range(a.fill):
        rows = b.read_jsonl('models.jsonl')
        for mode, batch, timing in CONFIGS:
            for name in a.models.split(','):
                done = [r for r in rows if (r['name'], r['mode'], r['batch']) == (name, mode, batch)]
                use = b.clean(done)
                quiet = any(r.get('other_cores_during', 0) <= b.CLEAN for r in use)
                ok = sorted(r['images_per_s'] for r in use)
                if ok and quiet and (len(ok) >= 3 or (len(ok) >= 2 and ok[-1] / ok[0] <= 1.25)):
                    continue
                measure(a, cap, name, mode, batch, timing, macs[name], max((r['round'] for r in done), default=0) + 1)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--cap-gib', type=float, default=16)
    p.add_argument('--no-build', action='store_true')
    p.add_argument('--fill', type=int, default=0, metavar='K',
                   help='instead of a run: up to K more rounds of every configuration whose rounds disagree '
                        '(fastest > 1.25 × slowest images/s) or that no undisturbed process measured')
    a = p.parse_args()
    if not a.no_build:
        b.build()
    cap = int(a.cap_gib * b.GIB)
    env = dict(os.environ, **b.DOTNET_ENV)
    if a.fill:
        fill(a, cap)
        return

    r = b.run_json(b.csharp('matmul', '--size', 2048, '--threads', a.threads, '--iterations', 30), cap, extra_env=b.DOTNET_ENV)
    b.write_jsonl('matmul.jsonl', [r])
    b.log(f"matmul 2048^3: {r.get('gflop_per_s', float('nan')):.1f} GFLOP/s")

    proc = subprocess.run(b.csharp('flops', '--threads', a.threads), capture_output=True, text=True, env=env, check=True)
    flops = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')]
    b.write_jsonl('flops.jsonl', flops)
    macs = {f['name']: f['macs'] for f in flops}
    b.log('flops: ' + ', '.join(f"{f['name']} {f['gmacs']:.2f}G" for f in flops))

    out = 'models.jsonl'
    b.write_jsonl(out, [])
    for mode, batch, timing in CONFIGS:
        for rnd in range(1, a.rounds + 1):
            for name in a.models.split(','):
                measure(a, cap, name, mode, batch, timing, macs[name], rnd)


if __name__ == '__main__':
    main()
