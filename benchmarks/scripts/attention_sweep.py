#!/usr/bin/env python3
"""Attention scaling sweep: ours (C#, TorchSharp) against the official op sequence in PyTorch, each configuration in
a fresh process, the series interleaved (A B C D E, A B C D E) so both sides see the same machine state.
Writes attention.jsonl, profile.jsonl and machine.json to this sitting's benchmarks/results/<date>-<machine>/
(benchlib.RESULTS); render.py turns them into docs/benchmarks.md. See benchmarks/scripts/run-attention-sweep.sh."""
import argparse
import json

import benchlib as b

SERIES = [  # (key, language, impl)
    ('ours-pola', 'csharp', 'pola'),
    ('ours-pola-reference', 'csharp', 'pola-reference'),
    ('ours-softmax', 'csharp', 'softmax'),
    ('pytorch-pola', 'python', 'pola'),
    ('pytorch-softmax', 'python', 'softmax'),
]


def timing(tokens, impl):
    """Enough iterations to be stable, but bounded: softmax at 25,600 tokens takes tens of seconds per iteration."""
    if tokens >= 25600 and impl == 'softmax':
        # One timed iteration, no warm-up (first-call overheads are milliseconds against tens of seconds); the
        # two rounds give two samples.
        return ['--warmup', 0, '--iterations', 1, '--min-seconds', 0, '--max-seconds', 0]
    if tokens >= 12544:
        return ['--warmup', 2, '--iterations', 5, '--min-seconds', 1, '--max-seconds', 12]
    if tokens >= 6400:
        return ['--warmup', 3, '--iterations', 9, '--min-seconds', 1.5, '--max-seconds', 10]
    return ['--warmup', 5, '--iterations', 15, '--min-seconds', 1.5, '--max-seconds', 10]


def run_one(a, py, cap, key, language, impl, tokens, mode, rnd, **retries):
    common = ['--impl', impl, '--tokens', tokens, '--dim', a.dim, '--heads', a.heads, '--batch', a.batch,
              '--mode', mode, '--threads', a.threads, '--cpu-runtime', a.cpu_runtime, *timing(tokens, impl)]
    if language == 'csharp':
        r = b.run_json(b.csharp('attention', *common), cap, extra_env=b.DOTNET_ENV, **retries)
    else:
        r = b.run_json([py, str(b.PY_BENCH), *[str(c) for c in common], '--json'], cap, extra_env=b.PYTHON_ENV, **retries)
    r.update(series=key, language=language, impl=impl, tokens=tokens, mode=mode, round=rnd,
             cap_bytes=cap, dim=a.dim, heads=a.heads, batch=a.batch, threads=a.threads)
    return r


def fill(a, py, cap, out):
    """Extra rounds for configurations that no clean process measured (see benchlib.clean) or whose clean processes
    disagree (slowest median > 1.25 × fastest, or every median > 2 × the fastest iteration)."""
    for extra in range(a.fill):
        rows = b.read_jsonl(out)
        todo = []
        for key, language, impl in SERIES:
            for tokens in sorted({r['tokens'] for r in rows}):
                if impl == 'softmax' and tokens >= 25600:
                    continue  # tens of seconds per process; its rounds agree within a few per cent anyway
                for mode in sorted({r['mode'] for r in rows}):
                    done = [r for r in rows if (r['series'], r['tokens'], r['mode']) == (key, tokens, mode)]
                    use = b.clean(done)
                    if not use:
                        continue
                    quiet = any(r.get('other_cores_during', 0) <= b.CLEAN for r in use)
                    ok = sorted(r['median_ms'] for r in use)
                    fastest = min(r['min_ms'] for r in use)
                    agree = len(ok) >= 2 and ok[-1] / ok[0] <= 1.25 and ok[0] <= 2 * fastest
                    if quiet and (agree or len(ok) >= 3):
                        continue
                    todo.append((key, language, impl, tokens, mode, max(r['round'] for r in done) + 1))
        b.log(f'fill pass {extra + 1}: {len(todo)} configurations')
        for key, language, impl, tokens, mode, rnd in todo:
            r = run_one(a, py, cap, key, language, impl, tokens, mode, rnd)
            b.append_jsonl(out, r)
            b.log(f'N={tokens:6} {mode:6} round {rnd} {key:20}',
                  'FAILED: ' + r['error'] if r.get('failed') else
                  f"{r['median_ms']:10.2f} ms  (others {r['other_cores_during']:.2f} cores)")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--tokens', default='196,784,3136,6400,12544,25600')
    p.add_argument('--modes', default='fwdbwd,fwd')
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--dim', type=int, default=64)
    p.add_argument('--heads', type=int, default=2)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--cap-gib', type=float, default=20, help='address-space cap per process (protects the machine)')
    p.add_argument('--cpu-runtime', default='default', choices=['default', 'tuned', 'passive'],
                   help='native CPU runtime of both sides (default: untouched; "tuned" keeps freed memory, which costs '
                        'address space for the 15 GB softmax matrices at 25,600 tokens: they no longer fit the cap)')
    p.add_argument('--no-build', action='store_true')
    p.add_argument('--no-profile', action='store_true')
    p.add_argument('--append', action='store_true', help='add to results/attention.jsonl instead of starting afresh')
    p.add_argument('--fill', type=int, default=0, metavar='K',
                   help='instead of a sweep: up to K more rounds of every configuration whose processes disagree '
                        '(slowest median > 1.25 × fastest, or every median > 2 × the fastest iteration), so that its median '
                        'is taken over three or more processes')
    a = p.parse_args()

    if not a.no_build:
        b.build()
    py = b.python_with_torch()
    (b.RESULTS / 'machine.json').parent.mkdir(parents=True, exist_ok=True)
    keep = a.append or a.fill
    if not keep or not (b.RESULTS / 'machine.json').exists():
        (b.RESULTS / 'machine.json').write_text(json.dumps(b.machine(), indent=2) + '\n')
    cap = int(a.cap_gib * b.GIB)
    out = 'attention.jsonl'
    if not keep:
        b.write_jsonl(out, [])
    if a.fill:
        fill(a, py, cap, out)
        return
    for tokens in [int(t) for t in a.tokens.split(',')]:
        for mode in a.modes.split(','):
            for rnd in range(1, a.rounds + 1):
                for key, language, impl in SERIES:
                    # a retry of a tens-of-seconds softmax run costs more than the noise it removes
                    retries = dict(retries=0) if tokens >= 25600 and impl == 'softmax' else {}
                    r = run_one(a, py, cap, key, language, impl, tokens, mode, rnd, **retries)
                    b.append_jsonl(out, r)
                    b.log(f'N={tokens:6} {mode:6} round {rnd} {key:20}',
                          'FAILED: ' + r['error'] if r.get('failed') else
                          f"{r['median_ms']:10.2f} ms  x{r['iterations']:<4} peak {r['peak_rss_bytes'] / 2**20:8.0f} MiB")

    if not a.no_profile:
        argv = b.csharp('profile-attention', '--tokens', 3136, '--dim', a.dim, '--heads', a.heads, '--batch', a.batch,
                        '--threads', a.threads, '--min-seconds', 1.5, '--cpu-runtime', a.cpu_runtime)
        import subprocess
        proc = subprocess.run(argv, capture_output=True, text=True, env=dict(__import__('os').environ, **b.DOTNET_ENV))
        b.write_jsonl('profile.jsonl', [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')])
        b.log('profile at N=3136 written')


if __name__ == '__main__':
    main()
