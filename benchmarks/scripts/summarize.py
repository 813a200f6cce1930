#!/usr/bin/env python3
"""Markdown tables from the JSON lines of polaformer-gpucheck (bench-attention, bench-models) and
benchmarks/python/gpu_attention.py, with the C#/PyTorch ratios. Standard library only.

    python3 benchmarks/scripts/summarize.py attention.jsonl models.jsonl > summary.md
"""
import json
import sys


def load(paths):
    rows = []
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line.startswith('{'):
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError:
                            pass
        except OSError as e:
            print(f'(could not read {path}: {e})')
    return rows


def mib(row):
    for key in ('gpu_used_delta_bytes', 'peak_extra_bytes'):
        if row.get(key) is not None:
            return f'{row[key] / 2**20:.0f}'
    return '–'


def ms(row):
    if row is None:
        return '–'
    if row.get('oom'):
        return 'OOM'
    if 'median_ms' not in row:
        return 'error'
    return f'{row["median_ms"]:.3g}'


def ratio(a, b):
    if a is None or b is None or 'median_ms' not in a or 'median_ms' not in b or a.get('oom') or b.get('oom'):
        return '–'
    return f'{a["median_ms"] / b["median_ms"]:.2f}'


def attention(rows):
    rows = [r for r in rows if r.get('benchmark') == 'attention']
    if not rows:
        return
    key = {(r['language'], r['impl'], r['tokens']): r for r in rows}
    tokens = sorted({r['tokens'] for r in rows})
    first = rows[0]
    print(f'### Attention forward+backward ({first.get("device")}, dim {first.get("dim")}, {first.get("heads")} heads, '
          f'batch {first.get("batch")}, float32, TF32 {first.get("tf32")})\n')
    print('median ms (memory MiB: GPU used-memory delta in a fresh process on CUDA, RSS growth on the CPU; '
          'PyTorch max_memory_allocated in brackets on CUDA)\n')
    print('| N | C# pola (fast) | C# pola (reference) | C# softmax | PyTorch pola | PyTorch softmax | '
          'C# pola / PyTorch pola | C# softmax / PyTorch softmax | C# pola / C# softmax |')
    print('|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for n in tokens:
        cp, cr, cs = (key.get(('csharp', i, n)) for i in ('pola', 'pola-reference', 'softmax'))
        pp, ps = (key.get(('python', i, n)) for i in ('pola', 'softmax'))

        def cell(r):
            if r is None:
                return '–'
            extra = ''
            if r.get('max_memory_allocated_bytes') is not None:
                extra = f' [{r["max_memory_allocated_bytes"] / 2**20:.0f}]'
            return f'{ms(r)} ({mib(r)}{extra})'
        print(f'| {n} | {cell(cp)} | {cell(cr)} | {cell(cs)} | {cell(pp)} | {cell(ps)} | {ratio(cp, pp)} | '
              f'{ratio(cs, ps)} | {ratio(cp, cs)} |')
    print()


def models(rows):
    rows = [r for r in rows if r.get('benchmark') == 'model']
    if not rows:
        return
    print(f'### Models ({rows[0].get("device")}, {rows[0].get("image_size")} px)\n')
    print('| model | phase | precision | batch | images/s | median ms | memory MiB |')
    print('|---|---|---|---:|---:|---:|---:|')
    for r in rows:
        ips = f'{r["images_per_s"]:.1f}' if 'images_per_s' in r else ('OOM' if r.get('oom') else 'error')
        print(f'| {r["model"]} | {r["phase"]} | {r["precision"]} | {r["batch"]} | {ips} | {ms(r)} | {mib(r)} |')
    print()
    errors = [r for r in rows if r.get('error')]
    for r in errors:
        print(f'- {r["model"]} {r["phase"]} {r["precision"]}: {r["error"]}')


def main():
    rows = load(sys.argv[1:])
    attention(rows)
    models(rows)
    errors = [r for r in rows if r.get('benchmark') == 'attention' and r.get('error')]
    for r in errors:
        print(f'- attention {r.get("language")} {r.get("impl")} N={r.get("tokens")}: {r["error"]}')


if __name__ == '__main__':
    main()
