#!/usr/bin/python3
"""Makes the PolaFormer++ golden files of tests/PolaFormer.Tests/Golden/ (layout: README-plusplus.md) by running the
authors' classification code (ZacharyMeng/PolaFormerPP, polaformer++/models/pola.py): attention cases attnpp_*
(forward + backward, float64 companions in f64/), small whole models modelpp_* (forward, stage outputs), and the
state-dict listings statedict_pola_pp_b0.json ... b5.json of the six registered POLA_b* models.

    /usr/bin/python3 make_golden_pp.py --official <PolaFormerPP checkout>/polaformer++ --out <dir> [--compare <dir>]

The official code is imported from --official (never copied here); timm/einops/fvcore come from _shim/.
See README.md for the exact commands, the official commit and the PyTorch build.
"""
import argparse

import golden_env

ONEDNN_ISA = golden_env.apply_onednn_isa('AVX2')  # before torch is imported

import copy  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import golden_io as gio  # noqa: E402

OFFICIAL_REPO = 'ZacharyMeng/PolaFormerPP'
OFFICIAL_COMMIT_FULL = 'fd26f5e1c1bcc3210f4d583294ebf9a4d01d62dc'  # README-plusplus.md: 'commit fd26f5e'
pola = None  # the official module, imported in main() from --official

FORWARD = 'y = m(x, sin, cos); loss = (y*R).sum()'
RANDOMISED_PACS = 's1, s2 <- randn (zeros at construction); others PyTorch default init'


# ============================================================================================ attention cases

def attention_cases():
    return [
        # the two cases committed with the PolaFormer++ port (the softmax case's 'randomised' text is the committed
        # one: that layer has no s1/s2, so nothing is randomised there)
        dict(case='attnpp_pacs_d32_h2_hw6', seed=21, kind='pacs', dim=32, heads=2, H=6, W=6,
             randomised=RANDOMISED_PACS),
        dict(case='attnpp_vanilla_d32_h2_hw4', seed=22, kind='vanilla', dim=32, heads=2, H=4, W=4,
             randomised=RANDOMISED_PACS),
        # added with the generator
        dict(case='attnpp_pacs_d64_h4_hw8', seed=24, kind='pacs', dim=64, heads=4, H=8, W=8,
             randomised=RANDOMISED_PACS),
        dict(case='attnpp_pacs_d32_h2_h4w6', seed=25, kind='pacs', dim=32, heads=2, H=4, W=6,
             randomised=RANDOMISED_PACS),
        dict(case='attnpp_vanilla_d48_h3_h6w4', seed=26, kind='vanilla', dim=48, heads=3, H=6, W=4,
             randomised='nothing (no s1/s2 in this layer); PyTorch default init'),
    ]


def build_attention(c):
    if c['kind'] == 'pacs':
        return pola.PolaLinearAttention(c['dim'], c['heads']), pola.RoPE(2 * c['dim'], c['heads']), \
            'polaformer++ models.pola.PolaLinearAttention', 'RoPE(2*dim, heads)'
    return pola.VanillaSelfAttention(c['dim'], c['heads']), pola.RoPE(c['dim'], c['heads']), \
        'polaformer++ models.pola.VanillaSelfAttention', 'RoPE(dim, heads)'


def run_attention(m, x, sin, cos, R):
    m.train(False)
    m.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = m(x, sin, cos)
    (y * R).sum().backward()
    grads = {'grad.' + n: p.grad.detach().clone() for n, p in m.named_parameters()}
    grads['grad.x'] = x.grad.detach().clone()
    return y.detach(), grads


def attention_meta(c, module_name, rope, dtype):
    return {'case': c['case'], 'kind': 'attention', 'module': module_name, 'official_repo': OFFICIAL_REPO,
            'dim': str(c['dim']), 'num_heads': str(c['heads']), 'H': str(c['H']), 'W': str(c['W']),
            'rope': f'{rope} at ({c["H"]},{c["W"]})', 'forward': FORWARD, 'seed': str(c['seed']), 'dtype': dtype,
            'randomised': c['randomised'], 'torch_version': torch.__version__}


def make_attention(c, out, compare, report):
    torch.manual_seed(c['seed'])
    m, rope, module_name, rope_name = build_attention(c)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n in ('s1', 's2'):
                p.copy_(torch.randn(p.shape))
    shape = (2, c['dim'], c['H'], c['W'])
    x = torch.randn(shape)
    R = torch.randn(shape)
    sin, cos = rope((c['H'], c['W']))
    y, grads = run_attention(m, x, sin, cos, R)

    def tensors_of(x, sin, cos, R, m, y, grads):
        t = {'input.x': x, 'input.sin': sin, 'input.cos': cos, 'input.R': R}
        t.update({'param.' + k: v for k, v in m.state_dict().items()})
        t['output.y'] = y
        t.update(grads)
        return t

    data = gio.safetensors_bytes(tensors_of(x, sin, cos, R, m, y, grads),
                                 attention_meta(c, module_name, rope_name, 'float32'))
    gio.write_and_compare(out, c['case'] + '.safetensors', data, compare, report)

    m64 = copy.deepcopy(m).double()
    x64, sin64, cos64, R64 = x.double(), sin.double(), cos.double(), R.double()
    y64, grads64 = run_attention(m64, x64, sin64, cos64, R64)
    data64 = gio.safetensors_bytes(tensors_of(x64, sin64, cos64, R64, m64, y64, grads64),
                                   attention_meta(c, module_name, rope_name, 'float64'))
    gio.write_and_compare(out, f'f64/{c["case"]}.f64.safetensors', data64, compare, report)
    worst = max(grads, key=lambda k: gio.scaled_error(grads[k], grads64[k]))
    return (f'{c["case"]}: float32 vs float64 output.y {gio.scaled_error(y, y64):.1e}, '
            f'worst gradient {worst} {gio.scaled_error(grads[worst], grads64[worst]):.1e} (scaled)')


# ============================================================================================ model cases

def model_cases():
    return [
        dict(case='modelpp_tiny_img64_s23', seed=23, num_classes=10, stage_flags='llvv', embed_dims=[16, 32, 64, 128],
             depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], mlp_ratios=[3.5, 3.5, 3.5, 3.5], projection=128,
             layerscales=[True] * 4, layer_init_values=[1, 1, 1, 1], input=(2, 3, 64, 64)),
        # added with the generator: other stage kinds per stage, layer scale only in stages 2 and 4, uneven
        # feed-forward widths (int(3.3 * 64) = 211), 3 heads, and a non-square image (stage grids 16x24 ... 2x3)
        dict(case='modelpp_vlvl_img64x96_s27', seed=27, num_classes=7, stage_flags='vlvl', embed_dims=[16, 32, 48, 64],
             depths=[1, 2, 1, 1], num_heads=[2, 2, 3, 4], mlp_ratios=[3, 2.5, 4, 3.3], projection=96,
             layerscales=[False, True, False, True], layer_init_values=[1, 1e-6, 1, 1e-6], input=(2, 3, 64, 96)),
    ]


def build_model(c):
    return pola.POLA(in_chans=3, num_classes=c['num_classes'],
                     flagss=[[f] * d for f, d in zip(c['stage_flags'], c['depths'])],
                     embed_dims=c['embed_dims'], depths=c['depths'], num_heads=c['num_heads'],
                     mlp_ratios=c['mlp_ratios'], drop_path_rate=0., projection=c['projection'],
                     layerscales=c['layerscales'], layer_init_values=c['layer_init_values'])


def randomise_model(m):
    """Drawn tensor by tensor in state_dict() order right after the official constructor (whose init leaves conv
    biases at 0, LayerNorm at 1/0, BatchNorm at 1/0 with running statistics 0/1, layer scales at their init value,
    s1/s2 at 0): conv and linear weights <- randn / sqrt(fan_in), linear biases <- 0.1*randn (conv biases stay 0),
    LayerNorm and BatchNorm weight <- 1 + 0.2*randn, bias <- 0.2*randn, BatchNorm running_mean <- 0.2*randn,
    running_var <- 1 + 0.5*rand, layer scales gamma_1/gamma_2 <- 1 + 0.2*randn, s1/s2 <- randn. The rotary
    angle buffers and num_batches_tracked are kept."""
    mods = dict(m.named_modules())
    with torch.no_grad():
        for name, t in m.state_dict(keep_vars=True).items():
            owner_name, leaf = name.rsplit('.', 1) if '.' in name else ('', name)
            owner = mods[owner_name]
            if isinstance(owner, (nn.Conv2d, nn.Linear)) and leaf == 'weight':
                t.copy_(torch.randn(t.shape) / math.sqrt(t[0].numel()))
            elif isinstance(owner, nn.Linear) and leaf == 'bias':
                t.copy_(0.1 * torch.randn(t.shape))
            elif isinstance(owner, nn.Conv2d) and leaf == 'bias':
                pass
            elif isinstance(owner, (nn.LayerNorm, nn.BatchNorm2d)) and leaf in ('weight', 'bias'):
                t.copy_(1 + 0.2 * torch.randn(t.shape) if leaf == 'weight' else 0.2 * torch.randn(t.shape))
            elif isinstance(owner, nn.BatchNorm2d) and leaf == 'running_mean':
                t.copy_(0.2 * torch.randn(t.shape))
            elif isinstance(owner, nn.BatchNorm2d) and leaf == 'running_var':
                t.copy_(1 + 0.5 * torch.rand(t.shape))
            elif leaf in ('gamma_1', 'gamma_2'):
                t.copy_(1 + 0.2 * torch.randn(t.shape))
            elif leaf in ('s1', 's2'):
                t.copy_(torch.randn(t.shape))
            elif leaf in ('angle', 'num_batches_tracked'):
                pass
            else:
                raise RuntimeError(f'no randomisation rule for {name}')


def fmt_list(values):
    return ','.join(str(v).lower() if isinstance(v, bool) else f'{v:g}' for v in values)


def make_model(c, out, compare, report):
    torch.manual_seed(c['seed'])
    m = build_model(c)
    randomise_model(m)
    x = torch.randn(c['input'])
    m.train(False)
    captured = {}
    hooks = [layer.register_forward_hook(lambda _m, _i, o, i=i: captured.__setitem__(f'inter.layers.{i}', o.detach()))
             for i, layer in enumerate(m.layers)]
    with torch.no_grad():
        y = m(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        features = m.forward_features(x).flatten(1)
    t = {'input.x': x}
    t.update({'param.' + k: v for k, v in m.state_dict().items()})
    t.update({'output.y': y, 'output.features': features})
    t.update({f'inter.layers.{i}': captured[f'inter.layers.{i}'] for i in range(len(m.layers))})
    meta = {'case': c['case'], 'kind': 'model', 'module': 'polaformer++ models.pola.POLA',
            'official_repo': OFFICIAL_REPO, 'num_classes': str(c['num_classes']),
            'stage_flags': ','.join(c['stage_flags']), 'embed_dims': fmt_list(c['embed_dims']),
            'depths': fmt_list(c['depths']), 'num_heads': fmt_list(c['num_heads']),
            'mlp_ratios': fmt_list(c['mlp_ratios']), 'projection': str(c['projection']),
            'layerscale': fmt_list(c['layerscales']), 'layer_init_values': fmt_list(c['layer_init_values']),
            'drop_path_rate': '0', 'input': '(' + ','.join(map(str, c['input'])) + ')',
            'mode': 'eval (BatchNorm running stats randomised)',
            'features': 'forward_features(x).flatten(1) (after proj, BN, swish, avgpool)', 'seed': str(c['seed']),
            'dtype': 'float32', 'torch_version': torch.__version__}
    gio.write_and_compare(out, c['case'] + '.safetensors', gio.safetensors_bytes(t, meta), compare, report)

    m64 = copy.deepcopy(m).double()
    with torch.no_grad():
        y64 = m64(x.double())
    return f'{c["case"]}: float32 vs float64 output.y {gio.scaled_error(y, y64):.1e} (scaled)'


# ============================================================================================ state-dict listings

PRESETS = ['POLA_b0', 'POLA_b1', 'POLA_b2', 'POLA_b3', 'POLA_b4', 'POLA_b5']


def preset_args(fn):
    """The keyword arguments a POLA_b* registration passes to POLA, read by calling it with POLA replaced by a
    recorder (so the listing states exactly what the official factory builds)."""
    seen = {}
    real = pola.POLA

    class Recorder(real):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(**kwargs)
    pola.POLA = Recorder
    try:
        model = fn()
    finally:
        pola.POLA = real
    return seen, model


def make_listings(out, compare, report):
    summary = []
    for factory in PRESETS:
        name = 'pola_pp_' + factory.split('_')[1]
        kwargs, model = preset_args(getattr(pola, factory))
        ctor = {'factory': factory, 'in_chans': 3, 'num_classes': 1000,
                'stage_flags': 'l,l,v,v (the POLA default flagss: every block of stages 1-2 PolaLinearAttention, '
                               'of stages 3-4 VanillaSelfAttention)'}
        ctor.update(kwargs)
        entries, counts = gio.state_dict_listing(model)
        blocks = []
        res = 224 // 4
        for i, layer in enumerate(model.layers):
            for j, b in enumerate(layer.blocks):
                blocks.append(f'layers.{i}.blocks.{j}:{b.flag}:res{res}x{res}:dim{b.embed_dim}:'
                              f'heads{b.attn.num_heads}:ffn{b.ffn.ffn_dim}')
            res = (res - 1) // 2 + 1 if layer.downsample is not None else res
        doc = {'format_version': '1', 'model': name,
               'note': f'{factory} as registered in polaformer++/models/pola.py (1000 classes).',
               'official_repo': OFFICIAL_REPO, 'official_commit': OFFICIAL_COMMIT_FULL,
               'torch_version': torch.__version__, 'constructor_args': ctor}
        doc.update(counts)
        doc.update({'blocks': blocks,
                    'layernorm_eps': {n: mm.eps for n, mm in model.named_modules() if isinstance(mm, nn.LayerNorm)},
                    'state_dict': entries})
        gio.write_and_compare(out, f'statedict_{name}.json', gio.listing_text(doc).encode(), compare, report)
        summary.append(f'{name}: {counts["num_parameters"]:,} parameters, {counts["num_state_dict_entries"]} '
                       f'state-dict entries ({counts["num_buffer_entries"]} buffers)')
        del model
    return summary


# ============================================================================================ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--official', required=True, help="the PolaFormerPP checkout's polaformer++ folder (has models/)")
    ap.add_argument('--out', required=True, help='folder to write the golden files into')
    ap.add_argument('--compare', help='folder of committed golden files: report, per file and tensor, what matches')
    ap.add_argument('--threads', type=int, default=2,
                    help='intra-op threads; the committed files used 2 (with more than one thread PyTorch runs the '
                         "model's 1x1 convolutions through oneDNN, with one through its own im2col+GEMM)")
    ap.add_argument('--onednn-isa', default='AVX2',
                    help="cap on oneDNN's CPU kernels (ONEDNN_MAX_CPU_ISA, set before torch loads; 'none' leaves "
                         "it alone); the committed files were made with AVX2 kernels")
    ap.add_argument('--skip-listings', action='store_true', help='skip the (slow) POLA_b0..b5 listings')
    args = ap.parse_args()

    global pola
    gio.set_threads(args.threads)
    gio.use_official(args.official)
    import warnings
    warnings.filterwarnings('ignore')
    from models import pola as p
    pola = p

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, notes = [], []
    for c in attention_cases():
        print('case', c['case'], flush=True)
        notes.append(make_attention(c, out, args.compare, report))
    for c in model_cases():
        print('case', c['case'], flush=True)
        notes.append(make_model(c, out, args.compare, report))
    if not args.skip_listings:
        print('state-dict listings', flush=True)
        notes.extend(make_listings(out, args.compare, report))
    print(f'\noneDNN ISA cap: {ONEDNN_ISA}; torch {torch.__version__}; {torch.get_num_threads()} thread(s)')
    for n in notes:
        print(n)
    return gio.print_report(report)


if __name__ == '__main__':
    raise SystemExit(main())
