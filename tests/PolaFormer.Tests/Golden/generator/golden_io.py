"""Shared helpers of make_golden.py and make_golden_pp.py: the safetensors writer/reader in the exact byte layout
of the committed files, the JSON layouts of manifest.json and the statedict_*.json listings, the float32-vs-float64
deviation figures, and the comparison of a fresh run with the committed files (--compare)."""
import contextlib
import io
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DTYPES = {torch.float32: ('F32', np.float32), torch.float64: ('F64', np.float64), torch.int64: ('I64', np.int64)}
NP_OF = {'F32': np.float32, 'F64': np.float64, 'I64': np.int64}


def use_official(path):
    """Puts the stand-ins for timm/einops/fvcore (_shim/) and the official checkout (or its subfolder) on sys.path."""
    path = Path(path).resolve()
    if not (path / 'models').is_dir():
        sys.exit(f'{path} has no models/ folder: pass the root of the official code (see README.md)')
    sys.path[:0] = [str(HERE / '_shim'), str(path)]


@contextlib.contextmanager
def quiet():
    """The official constructors print a line per attention layer; keep the generator's output readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# ----------------------------------------------------------------------------------------------- safetensors

def safetensors_bytes(tensors, metadata):
    """8-byte little-endian header length, compact JSON header (metadata first, then the tensors in the given
    order) padded with spaces to a multiple of 8, then the raw little-endian row-major bytes."""
    header = {'__metadata__': metadata}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        code, npt = DTYPES[t.dtype]
        raw = t.detach().contiguous().cpu().numpy().astype(npt, copy=False).tobytes()
        header[name] = {'dtype': code, 'shape': list(t.shape), 'data_offsets': [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(',', ':')).encode()
    text += b' ' * (-len(text) % 8)
    return struct.pack('<Q', len(text)) + text + b''.join(blobs)


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop('__metadata__', {})
    tensors = {}
    for k, v in header.items():
        b, e = v['data_offsets']
        tensors[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype=NP_OF[v['dtype']]).reshape(v['shape']).copy())
    return tensors, meta


# ----------------------------------------------------------------------------------------------- JSON layouts

def compact(value):
    return json.dumps(value, separators=(',', ':'))


def manifest_text(manifest):
    """manifest.json: one file per top-level key; a case's entry one field per line with each field's value
    compact, a listing's entry compact on one line."""
    out = ['{']
    files = list(manifest.items())
    for i, (name, entry) in enumerate(files):
        if entry.get('kind') == 'listing':
            out.append(f' {json.dumps(name)}: {compact(entry)}' + (',' if i < len(files) - 1 else ''))
            continue
        out.append(f' {json.dumps(name)}: {{')
        fields = list(entry.items())
        for j, (k, v) in enumerate(fields):
            out.append(f'  {json.dumps(k)}: {compact(v)}' + (',' if j < len(fields) - 1 else ''))
        out.append(' }' + (',' if i < len(files) - 1 else ''))
    out.append('}')
    return '\n'.join(out) + '\n'


def listing_text(listing):
    """statedict_*.json: one field per line (indent 1); constructor_args compact when it holds only scalars,
    otherwise one argument per line (indent 2, lists compact); blocks and layernorm_eps one item per line;
    state_dict one compact entry per line."""
    out = ['{']
    fields = list(listing.items())
    for j, (k, v) in enumerate(fields):
        comma = ',' if j < len(fields) - 1 else ''
        key = json.dumps(k)
        if k == 'constructor_args' and any(isinstance(a, (list, dict)) for a in v.values()):
            out.append(f' {key}: {{')
            items = list(v.items())
            for i, (a, b) in enumerate(items):
                out.append(f'  {json.dumps(a)}: {compact(b)}' + (',' if i < len(items) - 1 else ''))
            out.append(' }' + comma)
        elif isinstance(v, dict) and k != 'constructor_args':
            out.append(f' {key}: {{')
            items = list(v.items())
            for i, (a, b) in enumerate(items):
                out.append(f'  {json.dumps(a)}: {compact(b)}' + (',' if i < len(items) - 1 else ''))
            out.append(' }' + comma)
        elif isinstance(v, list):
            out.append(f' {key}: [')
            for i, b in enumerate(v):
                out.append(f'  {compact(b)}' + (',' if i < len(v) - 1 else ''))
            out.append(' ]' + comma)
        else:
            out.append(f' {key}: {compact(v)}' + comma)
    out.append('}')
    return '\n'.join(out) + '\n'


def state_dict_listing(module):
    """(entries, counts) of module.state_dict(): name, shape, dtype code, parameter|buffer."""
    params = dict(module.named_parameters())
    entries = []
    for name, t in module.state_dict().items():
        entries.append({'name': name, 'shape': list(t.shape), 'dtype': DTYPES[t.dtype][0],
                        'kind': 'parameter' if name in params else 'buffer'})
    buffers = [e for e in entries if e['kind'] == 'buffer']
    sd = module.state_dict()
    counts = {
        'num_parameters': sum(p.numel() for p in params.values()),
        'num_parameter_tensors': len(params),
        'num_state_dict_entries': len(entries),
        'num_buffer_entries': len(buffers),
        'num_buffer_elements': sum(sd[e['name']].numel() for e in buffers),
    }
    return entries, counts


# ----------------------------------------------------------------------------------------------- deviations

def deviation(f32, f64):
    """max |f32 - f64|, max |f64|, their ratio, and the largest elementwise relative error over the elements with
    |f64| > 1e-3 max |f64| (all in float64)."""
    a = f32.detach().double()
    r = f64.detach().double()
    diff = (a - r).abs()
    max_abs = diff.max().item()
    max_ref = r.abs().max().item()
    big = r.abs() > 1e-3 * max_ref
    return {'max_abs': max_abs, 'max_ref': max_ref, 'scaled': max_abs / max_ref,
            'max_rel_big': (diff[big] / r.abs()[big]).max().item()}


def scaled_error(a, ref):
    a = a.detach().double()
    ref = ref.detach().double()
    return (a - ref).abs().max().item() / ref.abs().max().item()


def e3(x):
    return f'{x:.3e}'


# ----------------------------------------------------------------------------------------------- comparison

def compare_file(produced: Path, committed: Path):
    """One report line per tensor (identical / max abs difference) plus the header and whole-file verdict."""
    lines = []
    if not committed.exists():
        return False, [f'  (no committed file {committed.name})']
    a_raw, b_raw = produced.read_bytes(), committed.read_bytes()
    if a_raw == b_raw:
        return True, ['  byte-identical file']
    if produced.suffix == '.json':
        return False, ['  JSON text differs'] + _json_diff(produced, committed)
    ta, ma = read_safetensors(produced)
    tb, mb = read_safetensors(committed)
    if list(ta) != list(tb):
        lines.append(f'  tensor names/order differ: only produced {sorted(set(ta) - set(tb))}, '
                     f'only committed {sorted(set(tb) - set(ta))}')
    for k, v in mb.items():
        if ma.get(k) != v:
            lines.append(f'  metadata {k}: produced {ma.get(k)!r}, committed {v!r}')
    for k in ma:
        if k not in mb:
            lines.append(f'  metadata {k}: only in the produced file')
    for k in tb:
        if k not in ta:
            continue
        x, y = ta[k], tb[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            lines.append(f'  {k}: dtype/shape {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}')
        elif torch.equal(x, y):
            lines.append(f'  {k}: identical')
        else:
            d = (x.double() - y.double()).abs().max().item()
            s = d / max(y.double().abs().max().item(), 1e-300)
            lines.append(f'  {k}: DIFFERS max abs {d:.3e} (scaled {s:.3e})')
    return False, lines


def _json_diff(a, b):
    la = a.read_text().splitlines()
    lb = b.read_text().splitlines()
    out = []
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            out.append(f'    line {i + 1}: produced {x[:160]!r}')
            out.append(f'    line {i + 1}: committed {y[:160]!r}')
            if len(out) > 12:
                break
    if len(la) != len(lb):
        out.append(f'    {len(la)} lines produced, {len(lb)} committed')
    return out


def write_and_compare(out_dir: Path, rel: str, data: bytes, compare_dir, report):
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if compare_dir is not None:
        same, lines = compare_file(path, Path(compare_dir) / rel)
        report.append((rel, same, lines))
    return path


def print_report(report):
    if not report:
        return 0
    print('\n==== comparison with the committed files')
    n_same = 0
    for rel, same, lines in report:
        print(f'{"IDENTICAL" if same else "DIFFERENT"}  {rel}')
        if not same:
            for line in lines:
                print(line)
        n_same += same
    print(f'{n_same} of {len(report)} files byte-identical')
    return 0 if n_same == len(report) else 1


def set_threads(n):
    torch.set_num_threads(n)
    os.environ.setdefault('OMP_NUM_THREADS', str(n))
