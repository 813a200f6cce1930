#!/usr/bin/python3
"""Makes the PolaFormer golden files of tests/PolaFormer.Tests/Golden/ by running the authors' official code
(ZacharyMeng/PolaFormer, models/pola_swin.py and models/pola_pvt.py): the attention cases (forward + backward),
the small whole models (forward, intermediate outputs, float64 companions in f64/, porting-slip sensitivities),
the state-dict listings of every released configuration, and manifest.json.

    /usr/bin/python3 make_golden.py --official <PolaFormer checkout> --out <dir> [--compare <committed Golden dir>]

The official code is imported from --official (never copied here); timm/einops come from the stand-ins in _shim/.
See README.md for the exact commands, the official commit and the PyTorch build.
"""
import argparse

import golden_env

ONEDNN_ISA = golden_env.apply_onednn_isa('AVX512_CORE')  # before torch is imported

import copy  # noqa: E402
import math  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import golden_io as gio  # noqa: E402

OFFICIAL_REPO = 'ZacharyMeng/PolaFormer'
OFFICIAL_COMMIT = '44cdd39e2f6c2a409ab1c16a9b836f08f22cfc79'

pola_swin = pola_pvt = None  # the official modules, imported in main() from --official


def common_meta(case, kind, module, seed, dtype='float32'):
    return {'format_version': '1', 'case': case, 'kind': kind, 'module': module, 'official_repo': OFFICIAL_REPO,
            'official_commit': OFFICIAL_COMMIT, 'torch_version': torch.__version__, 'dtype': dtype, 'device': 'cpu',
            'mode': 'eval', 'seed': str(seed)}


# ============================================================================================ randomisation

def randomise(module, model_case):
    """The README's parameter randomisation, drawn parameter by parameter in named_parameters() order right after
    the official constructor. Returns {name: rule}."""
    mods = dict(module.named_modules())
    rules = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            owner = mods[name.rsplit('.', 1)[0]] if '.' in name else module
            leaf = name.rsplit('.', 1)[-1]
            if leaf == 'power':
                p.copy_(torch.randn(p.shape))
                rules[name] = 'randn'
            elif leaf in ('scale', 'positional_encoding', 'relative_position_bias_table', 'absolute_pos_embed') \
                    or (owner is module and leaf.startswith('pos_embed')):
                p.copy_(0.5 * torch.randn(p.shape))
                rules[name] = '0.5*randn'
            elif isinstance(owner, nn.LayerNorm):
                p.copy_(1 + 0.2 * torch.randn(p.shape) if leaf == 'weight' else 0.2 * torch.randn(p.shape))
                rules[name] = 'layernorm'
            elif isinstance(owner, nn.Linear) and model_case:
                if leaf == 'weight':
                    p.copy_(torch.randn(p.shape) / math.sqrt(owner.in_features))
                else:
                    p.copy_(0.1 * torch.randn(p.shape))
                rules[name] = 'linear-rescaled'
            elif isinstance(owner, (nn.Linear, nn.Conv2d)):
                rules[name] = 'default-init'
            else:
                raise RuntimeError(f'no randomisation rule for {name}')
    return rules


# ============================================================================================ attention cases

def attention_cases():
    return [
        dict(case='attn_swin_pola_w7_d96_h3_a4_k5', seed=101, module='models.pola_swin.PolaLinearAttention',
             note='Swin-style polarity linear attention, 7x7 windows.',
             hparams={'dim': '96', 'num_heads': '3', 'head_dim': '32', 'window_size': '7,7', 'alpha': '4',
                      'kernel_size': '5', 'qkv_bias': 'true', 'H': '7', 'W': '7', 'input_shape': '4,49,96'},
             build=lambda: pola_swin.PolaLinearAttention(96, window_size=(7, 7), num_heads=3, qkv_bias=True,
                                                         kernel_size=5, alpha=4),
             shape=(4, 49, 96), call=lambda m, x: m(x, 7, 7)),
        dict(case='attn_pvt_pola_sr1_d64_h1_hw8', seed=103, module='models.pola_pvt.PolaLinearAttention',
             note='PVT-style polarity linear attention without spatial reduction.',
             hparams={'dim': '64', 'num_heads': '1', 'head_dim': '64', 'num_patches': '64', 'sr_ratio': '1',
                      'alpha': '4', 'kernel_size': '5', 'qkv_bias': 'true', 'H': '8', 'W': '8',
                      'input_shape': '2,64,64'},
             build=lambda: pola_pvt.PolaLinearAttention(64, 64, num_heads=1, qkv_bias=True, sr_ratio=1,
                                                        kernel_size=5, alpha=4),
             shape=(2, 64, 64), call=lambda m, x: m(x, 8, 8)),
        dict(case='attn_swin_softmax_w7_d96_h3_nomask', seed=105, module='models.pola_swin.WindowAttention',
             note='Swin softmax window attention, no mask.',
             hparams={'dim': '96', 'num_heads': '3', 'head_dim': '32', 'window_size': '7,7', 'qkv_bias': 'true',
                      'mask': 'none', 'H': '7', 'W': '7', 'input_shape': '4,49,96'},
             build=lambda: pola_swin.WindowAttention(96, window_size=(7, 7), num_heads=3, qkv_bias=True),
             shape=(4, 49, 96), call=lambda m, x: m(x, 7, 7, mask=None)),
    ]


def run_attention(c, module, x, R):
    """output.y and every gradient of sum(output.y * R)."""
    module.train(False)
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = c['call'](module, x)
    (y * R).sum().backward()
    grads = {'grad.' + n: p.grad.detach().clone() for n, p in module.named_parameters()}
    grads['grad.x'] = x.grad.detach().clone()
    return y.detach(), grads


def make_attention(c, out, compare, report):
    torch.manual_seed(c['seed'])
    with gio.quiet():
        m = c['build']()
    rules = randomise(m, model_case=False)
    x = torch.randn(c['shape'])
    R = torch.randn(c['shape'])
    with gio.quiet():
        y, grads = run_attention(c, m, x, R)
        y2, grads2 = run_attention(c, m, x, R)
    rerun_same = torch.equal(y, y2) and all(torch.equal(grads[k], grads2[k]) for k in grads)

    m64 = copy.deepcopy(m).double()
    with gio.quiet():
        y64, grads64 = run_attention(c, m64, x.double(), R.double())
    dev_y = gio.deviation(y, y64)
    all_grads = {k: gio.deviation(grads[k], grads64[k]) for k in grads}
    worst = max((k for k in all_grads if k != 'grad.x'), key=lambda k: all_grads[k]['scaled'])
    dev = {'output.y': dev_y, 'worst_grad': [worst, all_grads[worst]], 'all_grads': all_grads}

    sd = m.state_dict()
    tensors = dict(sd)
    tensors.update({'input.x': x, 'input.R': R, 'output.y': y})
    tensors.update(grads)
    meta = common_meta(c['case'], 'attention', c['module'], c['seed'])
    meta.update(c['hparams'])
    meta.update({'loss': 'sum(output.y * input.R)',
                 'f64.output.y.max_abs': gio.e3(dev_y['max_abs']), 'f64.output.y.scaled': gio.e3(dev_y['scaled']),
                 'f64.grad.worst_scaled': gio.e3(all_grads[worst]['scaled']), 'f64.grad.worst_name': worst,
                 'f32_rerun_bitwise_identical': 'true' if rerun_same else 'false'})
    data = gio.safetensors_bytes(tensors, meta)
    gio.write_and_compare(out, c['case'] + '.safetensors', data, compare, report)

    # a fresh official module loaded (strict) from the file reproduces output.y bit for bit
    back, _ = gio.read_safetensors(out / (c['case'] + '.safetensors'))
    with gio.quiet():
        fresh = c['build']()
        fresh.load_state_dict({k: back[k] for k in sd}, strict=True)
        y3, _ = run_attention(c, fresh, back['input.x'], back['input.R'])
    reload_ok = torch.equal(y3, back['output.y'])

    return {'sensitivity': [], 'kind': 'attention', 'case': c['case'], 'note': c['note'], 'hparams': c['hparams'],
            'module': c['module'], 'seed': c['seed'], 'size': len(data),
            'state_dict': [[k, list(v.shape), gio.DTYPES[v.dtype][0]] for k, v in sd.items()],
            'extra': [k for k in tensors if k not in sd], 'dev': dev, 'deterministic': rerun_same,
            'reload_ok': reload_ok, 'rules': rules}


# ============================================================================================ model cases

def swin_blocks(model):
    out = []
    for i, layer in enumerate(model.layers):
        for j, b in enumerate(layer.blocks):
            t = 'L' if isinstance(b.attn, pola_swin.PolaLinearAttention) else 'S'
            h, w = b.input_resolution
            out.append(f'layers.{i}.blocks.{j}:{t}:res{h}x{w}:w{b.window_size}:s{b.shift_size}')
    return out


def pvt_blocks(model, img_size, patch_size):
    out = []
    for i in range(model.num_stages):
        res = img_size // patch_size // (2 ** i)
        for j, b in enumerate(getattr(model, f'block{i + 1}')):
            t = 'L' if isinstance(b.attn, pola_pvt.PolaLinearAttention) else 'S'
            out.append(f'block{i + 1}.{j}:{t}:res{res}x{res}:sr{b.attn.sr_ratio}')
    return out


def layernorm_eps(model):
    return {n: m.eps for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}


def model_cases():
    swin_kw = dict(img_size=64, patch_size=4, in_chans=3, num_classes=10, embed_dim=8, depths=[2, 2, 2, 2],
                   num_heads=[1, 2, 4, 8], window_size=8, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0.,
                   attn_drop_rate=0., drop_path_rate=0., ape=False, patch_norm=True, alpha=4, kernel_size=5,
                   attn_type='LLSS')
    pvt_kw = dict(img_size=64, patch_size=4, in_chans=3, num_classes=10, embed_dims=[8, 16, 32, 64],
                  num_heads=[1, 2, 4, 8], mlp_ratios=[8, 8, 4, 4], qkv_bias=True, qk_scale=None, drop_rate=0.,
                  attn_drop_rate=0., drop_path_rate=0., norm_layer=partial(nn.LayerNorm, eps=1e-6),
                  depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], la_sr_ratios='8421', num_stages=4, alpha=4,
                  kernel_size=5, attn_type='LLLL')
    return [
        dict(case='model_pola_swin_img64_e8_w8_LLSS', seed=201, module='models.pola_swin.PolaSwinTransformer',
             note='Small PolaSwinTransformer: stage resolutions 16/8/4/2; stage 1 L blocks use 8x8 windows (block 1 '
                  'shifted by 4, mask ignored), stage 2 L window clamped to 8 (=resolution, no shift), S stages use '
                  'window 7 clamped to 4 and 2.',
             hparams={'img_size': '64', 'patch_size': '4', 'in_chans': '3', 'num_classes': '10', 'embed_dim': '8',
                      'depths': '2,2,2,2', 'num_heads': '1,2,4,8', 'window_size': '8', 'mlp_ratio': '4',
                      'qkv_bias': 'true', 'qk_scale': 'none', 'drop_rate': '0', 'attn_drop_rate': '0',
                      'drop_path_rate': '0', 'ape': 'false', 'patch_norm': 'true', 'alpha': '4', 'kernel_size': '5',
                      'attn_type': 'LLSS', 'input_shape': '2,3,64,64'},
             build=lambda: pola_swin.PolaSwinTransformer(**swin_kw),
             blocks=swin_blocks,
             inter=lambda m: ['patch_embed'] + [f'layers.{i}.{s}' for i, l in enumerate(m.layers)
                                                for s in [f'blocks.{j}' for j in range(len(l.blocks))]
                                                + (['downsample'] if l.downsample is not None else [])] + ['norm'],
             variants=swin_variants),
        dict(case='model_pola_pvt_img64_e8_LLLL_sr8421', seed=202, module='models.pola_pvt.PyramidVisionTransformer',
             note='Small Pola-PVT, stage resolutions 16/8/4/2, linear-attention sr ratios 8,4,2,1 (k/v on 2x2 tokens '
                  'in every stage, v interpolated back).',
             hparams={'img_size': '64', 'patch_size': '4', 'in_chans': '3', 'num_classes': '10',
                      'embed_dims': '8,16,32,64', 'num_heads': '1,2,4,8', 'mlp_ratios': '8,8,4,4', 'qkv_bias': 'true',
                      'qk_scale': 'none', 'drop_rate': '0', 'attn_drop_rate': '0', 'drop_path_rate': '0',
                      'norm_layer': 'LayerNorm(eps=1e-6)', 'depths': '1,1,1,1', 'sr_ratios': '8,4,2,1',
                      'la_sr_ratios': '8421', 'num_stages': '4', 'alpha': '4', 'kernel_size': '5',
                      'attn_type': 'LLLL', 'input_shape': '2,3,64,64'},
             build=lambda: pola_pvt.PyramidVisionTransformer(**pvt_kw),
             blocks=lambda m: pvt_blocks(m, 64, 4),
             inter=lambda m: [n for i in range(m.num_stages) for n in
                              [f'patch_embed{i + 1}'] + [f'block{i + 1}.{j}' for j in range(m.depths[i])]],
             variants=pvt_variants),
    ]


def run_model(module, x, inter_names):
    """logits, forward_features(x), and the outputs of the named submodules during the forward."""
    module.train(False)
    captured = {}
    mods = dict(module.named_modules())
    hooks = []
    for n in inter_names:
        def hook(_m, _inp, out, n=n):
            captured['inter.' + n] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        hooks.append(mods[n].register_forward_hook(hook))
    with torch.no_grad():
        y = module(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        features = module.forward_features(x)
    return {'output.y': y, 'output.features': features, **{k: captured[k] for k in
                                                            ['inter.' + n for n in inter_names]}}


# porting slips whose effect on the outputs is recorded in the manifest ("sensitivity")

def _set_ln_eps(model, eps, which=lambda name: True):
    for n, m in model.named_modules():
        if isinstance(m, nn.LayerNorm) and which(n):
            m.eps = eps


def _gelu_tanh(model):
    for m in model.modules():
        if isinstance(m, nn.GELU):
            m.approximate = 'tanh'


def _no_shift_in_l_blocks(model):
    for layer in model.layers:
        for b in layer.blocks:
            if b.shift_size > 0 and isinstance(b.attn, pola_swin.PolaLinearAttention):
                b.shift_size = 0


def swin_variants():
    return [('every LayerNorm eps 1e-6 (should be 1e-5)', lambda m: _set_ln_eps(m, 1e-6), None),
            ('GELU tanh approximation (should be exact erf)', _gelu_tanh, None),
            ('no cyclic shift in the shifted L blocks', _no_shift_in_l_blocks, None)]


class _AlignCornersLinear:
    """Inside the with-block, F.interpolate(mode='linear') runs with align_corners=True (the official v resize)."""

    def __enter__(self):
        self.orig = F.interpolate

        def patched(*args, **kwargs):
            if kwargs.get('mode') == 'linear':
                kwargs['align_corners'] = True
            return self.orig(*args, **kwargs)
        F.interpolate = patched
        return self

    def __exit__(self, *exc):
        F.interpolate = self.orig


def pvt_variants():
    return [('every LayerNorm eps 1e-6 (patch-embed and attn.norm should be 1e-5)', lambda m: _set_ln_eps(m, 1e-6),
             None),
            ('only attn.norm (sr) eps 1e-6 (should be 1e-5)',
             lambda m: _set_ln_eps(m, 1e-6, lambda n: n.endswith('attn.norm')), None),
            ('every LayerNorm eps 1e-5 (block norms should be 1e-6)', lambda m: _set_ln_eps(m, 1e-5), None),
            ('GELU tanh approximation (should be exact erf)', _gelu_tanh, None),
            ('1-D v interpolation with align_corners=True', lambda m: None, _AlignCornersLinear)]


def make_model(c, out, compare, report):
    torch.manual_seed(c['seed'])
    with gio.quiet():
        m = c['build']()
    rules = randomise(m, model_case=True)
    x = torch.randn(2, 3, 64, 64)
    names = c['inter'](m)
    res = run_model(m, x, names)
    res2 = run_model(m, x, names)
    rerun_same = all(torch.equal(res[k], res2[k]) for k in res)

    m64 = copy.deepcopy(m).double()
    res64 = run_model(m64, x.double(), names)
    dev_of = {k: gio.deviation(res[k], res64[k]) for k in res}
    inter_keys = [k for k in res if k.startswith('inter.')]
    worst = max(inter_keys, key=lambda k: dev_of[k]['scaled'])
    dev = {'output.y': dev_of['output.y'], 'output.features': dev_of['output.features'],
           'worst_inter': [worst, dev_of[worst]], 'all_inter': {k: dev_of[k] for k in inter_keys}}

    sensitivity = []
    for label, mutate, ctx in c['variants']():
        mm = copy.deepcopy(m)
        mutate(mm)
        if ctx is not None:
            with ctx():
                r = run_model(mm, x, names)
        else:
            r = run_model(mm, x, names)
        errs = {k: gio.scaled_error(r[k], res[k]) for k in inter_keys}
        w = max(errs, key=errs.get)
        sensitivity.append({'variant': label, 'logits_scaled': gio.scaled_error(r['output.y'], res['output.y']),
                            'features_scaled': gio.scaled_error(r['output.features'], res['output.features']),
                            'worst_inter': w, 'worst_inter_scaled': errs[w]})

    blocks = c['blocks'](m)
    eps = layernorm_eps(m)
    n_params = sum(p.numel() for p in m.parameters())
    sd = m.state_dict()
    tensors = dict(sd)
    tensors['input.x'] = x
    tensors.update(res)
    meta = common_meta(c['case'], 'model', c['module'], c['seed'])
    meta.update(c['hparams'])
    meta.update({'blocks': ';'.join(blocks), 'layernorm_eps': ';'.join(f'{k}={v}' for k, v in eps.items()),
                 'num_parameters': str(n_params),
                 'f64.output.y.max_abs': gio.e3(dev_of['output.y']['max_abs']),
                 'f64.output.y.scaled': gio.e3(dev_of['output.y']['scaled']),
                 'f64.output.features.max_abs': gio.e3(dev_of['output.features']['max_abs']),
                 'f64.output.features.scaled': gio.e3(dev_of['output.features']['scaled']),
                 'f64.inter.worst_scaled': gio.e3(dev_of[worst]['scaled']), 'f64.inter.worst_name': worst,
                 'f32_rerun_bitwise_identical': 'true' if rerun_same else 'false'})
    data = gio.safetensors_bytes(tensors, meta)
    gio.write_and_compare(out, c['case'] + '.safetensors', data, compare, report)

    meta64 = common_meta(c['case'], 'model-f64-reference', c['module'], c['seed'], dtype='float64')
    meta64['note'] = (f'float64 re-run of ../{c["case"]}.safetensors: module.double() with the same parameters, '
                      'input.x converted to float64; no parameters or inputs stored here')
    data64 = gio.safetensors_bytes(res64, meta64)
    f64_rel = f'f64/{c["case"]}.safetensors'
    gio.write_and_compare(out, f64_rel, data64, compare, report)

    back, _ = gio.read_safetensors(out / (c['case'] + '.safetensors'))
    with gio.quiet():
        fresh = c['build']()
    fresh.load_state_dict({k: back[k] for k in sd}, strict=True)
    reload_ok = torch.equal(run_model(fresh, back['input.x'], names)['output.y'], back['output.y'])

    return {'f64_file': f64_rel, 'f64_size': len(data64), 'sensitivity': sensitivity, 'kind': 'model',
            'case': c['case'], 'note': c['note'], 'hparams': c['hparams'], 'module': c['module'], 'seed': c['seed'],
            'size': len(data), 'num_parameters': n_params, 'num_state_dict_entries': len(sd), 'blocks': blocks,
            'layernorm_eps': eps, 'extra': [k for k in tensors if k not in sd], 'dev': dev,
            'deterministic': rerun_same, 'reload_ok': reload_ok, 'rules': rules}


# ============================================================================================ state-dict listings

SWIN_RELEASED = [
    # (listing name, note (the cfgs/*.yaml it follows), embed_dim, depths, num_heads, window, img_size, drop_path_rate)
    ('pola_swin_tiny', 'cfgs/pola_swin_t.yaml.', 96, [2, 2, 6, 2], [3, 6, 12, 24], 56, 224, 0.2),
    ('pola_swin_small', 'cfgs/pola_swin_s.yaml.', 96, [2, 2, 18, 2], [3, 6, 12, 24], 56, 224, 0.3),
    ('pola_swin_base', 'cfgs/pola_swin_b.yaml.', 128, [2, 2, 18, 2], [4, 8, 16, 32], 56, 224, 0.5),
    ('pola_swin_base_384', 'cfgs/pola_swin_b_384.yaml (window 96 -> S stages use window 12).', 128, [2, 2, 18, 2],
     [4, 8, 16, 32], 96, 384, 0.5),
]

# drop_path_rate 0.1 is recorded for every PVT listing (the committed files' value; cfgs/pola_pvt_m.yaml and
# pola_pvt_b.yaml say 0.3). It changes no name or shape.
PVT_RELEASED = [
    ('pola_pvt_tiny', 'pola_pvt_tiny', '1111', 'cfgs/pola_pvt_t.yaml as built by main.py (PVT_LA_SR_RATIOS default 1111).'),
    ('pola_pvt_tiny_la8421', 'pola_pvt_tiny', '8421',
     "pola_pvt_tiny with the constructor default la_sr_ratios '8421' (NOT the released setting)."),
    ('pola_pvt_small', 'pola_pvt_small', '1111', 'cfgs/pola_pvt_s.yaml as built by main.py.'),
    ('pola_pvt_medium', 'pola_pvt_medium', '1111', 'cfgs/pola_pvt_m.yaml as built by main.py.'),
    ('pola_pvt_large', 'pola_pvt_large', '1111', 'cfgs/pola_pvt_b.yaml (TYPE pola_pvt_large) as built by main.py.'),
]


def listing_doc(name, note, ctor, model, blocks):
    entries, counts = gio.state_dict_listing(model)
    doc = {'format_version': '1', 'model': name, 'note': note, 'official_repo': OFFICIAL_REPO,
           'official_commit': OFFICIAL_COMMIT, 'torch_version': torch.__version__, 'constructor_args': ctor}
    doc.update(counts)
    doc.update({'blocks': blocks, 'layernorm_eps': layernorm_eps(model), 'state_dict': entries})
    return doc


def make_listings(out, compare, report):
    entries = {}
    for name, note, embed, depths, heads, window, img, dpr in SWIN_RELEASED:
        ctor = {'img_size': img, 'patch_size': 4, 'in_chans': 3, 'num_classes': 1000, 'embed_dim': embed,
                'depths': depths, 'num_heads': heads, 'window_size': window, 'mlp_ratio': 4.0, 'qkv_bias': True,
                'qk_scale': None, 'drop_rate': 0.0, 'drop_path_rate': dpr, 'ape': False, 'patch_norm': True,
                'alpha': 4, 'kernel_size': 5, 'attn_type': 'LLSS'}
        with gio.quiet():
            model = pola_swin.PolaSwinTransformer(**ctor)
        entries[name] = (note, ctor, listing_doc(name, note, ctor, model, swin_blocks(model)))
        del model
    for name, factory, la, note in PVT_RELEASED:
        ctor = {'factory': factory, 'drop_path_rate': 0.1, 'alpha': 4, 'kernel_size': 5, 'attn_type': 'LLLL',
                'la_sr_ratios': la}
        with gio.quiet():
            model = getattr(pola_pvt, factory)(**{k: v for k, v in ctor.items() if k != 'factory'})
        entries[name] = (note, ctor, listing_doc(name, note, ctor, model, pvt_blocks(model, 224, 4)))
        del model
    manifest = {}
    for name in [n for n, *_ in PVT_RELEASED] + [n for n, *_ in SWIN_RELEASED]:
        note, ctor, doc = entries[name]
        text = gio.listing_text(doc).encode()
        rel = f'statedict_{name}.json'
        gio.write_and_compare(out, rel, text, compare, report)
        manifest[rel] = {'kind': 'listing', 'case': name, 'note': note, 'size': len(text),
                         'num_parameters': doc['num_parameters'],
                         'num_state_dict_entries': doc['num_state_dict_entries'], 'ctor': ctor,
                         'num_buffer_entries': doc['num_buffer_entries']}
    return manifest


# ============================================================================================ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--official', required=True, help='root of the ZacharyMeng/PolaFormer checkout (has models/)')
    ap.add_argument('--out', required=True, help='folder to write the golden files into')
    ap.add_argument('--compare', help='folder of committed golden files: report, per file and tensor, what matches')
    ap.add_argument('--threads', type=int, default=1, help='intra-op threads (the committed files used 1)')
    ap.add_argument('--onednn-isa', default='AVX512_CORE',
                    help="cap on oneDNN's CPU kernels (ONEDNN_MAX_CPU_ISA, set before torch loads; 'none' leaves it "
                         'alone); the committed files were made with AVX-512 kernels (a cap cannot raise what the CPU '
                         'lacks: on a CPU without AVX-512 the convolutions differ in the last bits)')
    ap.add_argument('--skip-listings', action='store_true', help='skip the (slow) released-model state-dict listings')
    args = ap.parse_args()

    gio.set_threads(args.threads)
    gio.use_official(args.official)
    global pola_swin, pola_pvt
    with gio.quiet():
        from models import pola_swin as s, pola_pvt as p
    pola_swin, pola_pvt = s, p
    import warnings
    warnings.filterwarnings('ignore', category=UserWarning)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = []
    manifest = {}
    for c in attention_cases():
        print('case', c['case'], flush=True)
        manifest[c['case'] + '.safetensors'] = make_attention(c, out, args.compare, report)
    for c in model_cases():
        print('case', c['case'], flush=True)
        manifest[c['case'] + '.safetensors'] = make_model(c, out, args.compare, report)
    if not args.skip_listings:
        print('state-dict listings', flush=True)
        manifest.update(make_listings(out, args.compare, report))
        gio.write_and_compare(out, 'manifest.json', gio.manifest_text(manifest).encode(), args.compare, report)
    else:
        print('(listings and manifest.json skipped)')
    print(f'\noneDNN ISA cap: {ONEDNN_ISA}; torch {torch.__version__}; {torch.get_num_threads()} thread(s)')
    return gio.print_report(report)


if __name__ == '__main__':
    raise SystemExit(main())
