#!/usr/bin/env python3
"""The authors' official PolaFormer models (github.com/ZacharyMeng/PolaFormer, models/pola_pvt.py and
models/pola_swin.py), timed the way `polaformer-gpucheck bench-models` times the C# models, for a side-by-side
comparison on the same device.

    python3 gpu_models.py --official official --deadline 140 > models-python.jsonl

The official files are not part of this repository (licence): copy models/pola_pvt.py and models/pola_swin.py of
the authors' repository into the folder given by --official (default: `official` beside this script). They are
imported unchanged. The imports they need that the installed packages lack are supplied before they load:
timm < 1.0 module paths (timm.models.layers, timm.models.registry, timm.models.vision_transformer._cfg) from
timm 1.x's own modules, and `einops` (imported, never called) by a stub. Without timm at all (the Debian CPU dry
run) a FALLBACK copy of the four timm helpers they use (DropPath, to_2tuple, trunc_normal_, register_model, _cfg)
stands in; the JSON says so ("timm": "fallback").

Models (224 px, 1000 classes, the drop path of the authors' configs, as the C# presets):
  pola_pvt_tiny      pola_pvt.pola_pvt_tiny(attn_type='LLLL', la_sr_ratios='1111', alpha 4, kernel 5, drop path 0.1)
                     (cfgs/pola_pvt_t.yaml with config.py's defaults, as models/build.py passes them)
  pvt_tiny_softmax   the same constructor with attn_type='SSSS': the official file's softmax Attention with the PVT
                     spatial reductions 8, 4, 2, 1 (the C# baseline of the same name). NOT PVT v1 as released by
                     whai362/PVT: no class token, mean pooling, as the Pola-PVT files do.
  pola_swin_tiny     pola_swin.PolaSwinTransformer: cfgs/pola_swin_t.yaml (window 56, LLSS, drop path 0.2)
  swin_tiny_softmax  the same class with attn_type='SSSS', window 7, drop path 0.2: Swin-T (28.3 M parameters);
                     224 px even with --quick (window 7 needs a multiple of 224 px; the JSON has a "note")
Parameters at 224 px (the "params" field): 12,924,648 / 13,228,264 / 29,285,696 / 28,288,354, the counts of the
C# presets and baselines (README.md, docs/benchmarks.md).

Per model: inference images/s at batch 64 (model.eval(), torch.no_grad()) and training images/s at batch 32
(cross-entropy on random labels, AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 on parameters with dim > 1
and 0 on the others, zero_grad(set_to_none=True)), each in
  fp32  float32, TF32 off (torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False)
  tf32  float32, TF32 on (both flags True)
  bf16  torch.autocast(dtype=torch.bfloat16), TF32 off; float32 weights (and master weights for training)
and for training with AdamW foreach=True ("adamw-foreach", the CUDA default) and foreach=False ("adamw-for-loop").
Timing: warm-up steps, then wall-clock per step with a synchronize after each (as the C# Timing.Measure), median of
at least --min-iters steps and --min-seconds. Training lines also carry a step breakdown (medians, ms):
  forward_ms, backward_ms, optimizer_ms, zero_grad_ms  each phase alone between two synchronizes
  step_ms        the four phases together, synchronized once at the end
  host_ms        the same step, time until the Python calls return, no synchronize (CPU launch time; the queue is
                 drained, untimed, before each step)
  clip_ms        torch.nn.utils.clip_grad_norm_(params, 5.0) (foreach default) on the step's gradients
  ema_ms         EMA over the state (timm ModelEmaV3-like): ema.lerp_(v, 1 - 0.9998) per floating tensor,
                 copy_ for the others; ema_foreach_ms: torch._foreach_lerp_ over the floating tensors (null where
                 this PyTorch lacks it)
The model is built once per model name and its initial weights are restored before each configuration.

One JSON line per (model, phase, precision, optimizer) on stdout (construction prints of the official files go to
stderr). An error (out of memory, import failure) gives a line with "error" and the run goes on; configurations not
started before --deadline get a line with "skipped": true. Exit status 0 unless nothing was measured.
Works with PyTorch 1.13 (Debian's, CPU dry run: --device cpu --quick) and 2.x (the GPU machine).
"""
import argparse
import contextlib
import copy
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings

START = time.monotonic()
MODELS = ['pola_pvt_tiny', 'pola_swin_tiny', 'pvt_tiny_softmax', 'swin_tiny_softmax']
PRECISIONS = ['fp32', 'tf32', 'bf16']
PHASES = ['inference', 'training']
OPTIMIZERS = ['adamw-foreach', 'adamw-for-loop']
EMA_DECAY = 0.9998


def parse_args(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--precisions', default=','.join(PRECISIONS))
    p.add_argument('--phases', default=','.join(PHASES))
    p.add_argument('--optimizers', default=','.join(OPTIMIZERS))
    p.add_argument('--official', default=os.path.join(here, 'official'),
                   help='folder holding the authors\' pola_pvt.py and pola_swin.py')
    p.add_argument('--size', type=int, default=None, help='image size (default 224; --quick: 64)')
    p.add_argument('--infer-batch', type=int, default=None, help='default 64 (--quick: 2)')
    p.add_argument('--train-batch', type=int, default=None, help='default 32 (--quick: 2)')
    p.add_argument('--warmup', type=int, default=None, help='warm-up steps (default 3; --quick: 1)')
    p.add_argument('--min-iters', type=int, default=None, help='timed steps at least (default 15; --quick: 3)')
    p.add_argument('--min-seconds', type=float, default=None, help='timed seconds at least (default 0.5; --quick: 0)')
    p.add_argument('--max-seconds', type=float, default=3.0, help='stop a measurement past this many seconds')
    p.add_argument('--breakdown-iters', type=int, default=None, help='steps of the breakdown (default 15; --quick: 2)')
    p.add_argument('--no-breakdown', action='store_true', help='training images/s only')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: PyTorch\'s default)')
    p.add_argument('--deadline', type=float, default=0, help='start no configuration past this many seconds (0: none)')
    p.add_argument('--quick', action='store_true', help='64 px, batch 2, few steps (CPU dry run)')
    a = p.parse_args(argv)
    q = a.quick
    a.size = a.size or (64 if q else 224)
    a.infer_batch = a.infer_batch or (2 if q else 64)
    a.train_batch = a.train_batch or (2 if q else 32)
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 3)
    a.min_iters = a.min_iters or (3 if q else 15)
    a.min_seconds = a.min_seconds if a.min_seconds is not None else (0.0 if q else 0.5)
    a.breakdown_iters = a.breakdown_iters or (2 if q else 15)
    for name in ('models', 'precisions', 'phases', 'optimizers'):
        setattr(a, name, [s.strip() for s in getattr(a, name).split(',') if s.strip()])
    return a


import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Imports of the official files
# ----------------------------------------------------------------------------------------------------------------

def _new_module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    if '.' in name:
        parent, _, child = name.rpartition('.')
        if parent in sys.modules:
            setattr(sys.modules[parent], child, m)
    return m


# FALLBACK for machines without timm (the Debian CPU dry run): the timm helpers the official files import, written
# after timm's timm/layers/drop.py, helpers.py and weight_init.py. Never used when timm is installed.
def _fallback_drop_path(x, drop_prob=0., training=False, scale_by_keep=True):
    if drop_prob == 0. or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class _FallbackDropPath(nn.Module):
    def __init__(self, drop_prob=0., scale_by_keep=True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x):
        return _fallback_drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


def _fallback_to_2tuple(x):
    if isinstance(x, (list, tuple)):
        return tuple(x)
    return (x, x)


def _fallback_trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, mean, std, a, b)


def _fallback_register_model(fn):
    return fn


def _fallback_cfg(url='', **kwargs):
    return {'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), **kwargs}


def _einops_unavailable(*a, **k):
    raise RuntimeError('einops is not installed; gpu_models.py supplied a stub (the model files never call it)')


def install_import_shims():
    """Makes the official files' imports resolvable; returns a description of what was supplied."""
    notes = {}
    try:
        import einops  # noqa: F401
        notes['einops'] = getattr(einops, '__version__', 'installed')
    except ImportError:
        _new_module('einops', rearrange=_einops_unavailable, repeat=_einops_unavailable)
        notes['einops'] = 'stub'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            import timm
        except ImportError:
            timm = None
        if timm is None:
            _new_module('timm', __version__='fallback')
            _new_module('timm.models')
            _new_module('timm.models.layers', DropPath=_FallbackDropPath, to_2tuple=_fallback_to_2tuple,
                        trunc_normal_=_fallback_trunc_normal_, drop_path=_fallback_drop_path)
            _new_module('timm.models.registry', register_model=_fallback_register_model)
            _new_module('timm.models.vision_transformer', _cfg=_fallback_cfg)
            notes['timm'] = 'fallback'
            return notes
        notes['timm'] = timm.__version__
        shimmed = []
        wanted = {'timm.models.layers': ('DropPath', 'to_2tuple', 'trunc_normal_'),
                  'timm.models.registry': ('register_model',),
                  'timm.models.vision_transformer': ('_cfg',)}
        for modname, names in wanted.items():
            try:
                mod = importlib.import_module(modname)
            except Exception:  # noqa: BLE001 - any failure: supply the module
                mod = None
            missing = [n for n in names if mod is None or not hasattr(mod, n)]
            if not missing:
                continue
            supply = {}
            for n in missing:
                supply[n] = _from_timm_1x(n)
            if mod is None:
                _new_module(modname, **supply)
            else:
                for k, v in supply.items():
                    setattr(mod, k, v)
            shimmed.append(f'{modname}:{"+".join(missing)}')
        if shimmed:
            notes['timm_shims'] = shimmed
    return notes


def _from_timm_1x(name):
    if name in ('DropPath', 'to_2tuple', 'trunc_normal_'):
        import timm.layers as layers
        return getattr(layers, name)
    if name == 'register_model':
        try:
            from timm.models import register_model
            return register_model
        except ImportError:
            return _fallback_register_model
    if name == '_cfg':
        return _fallback_cfg
    raise KeyError(name)


def load_official(folder):
    folder = os.path.abspath(folder)
    mods = {}
    for name in ('pola_pvt', 'pola_swin'):
        path = os.path.join(folder, name + '.py')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{path} not found: copy models/{name}.py of github.com/ZacharyMeng/PolaFormer '
                                    f'into {folder} (or pass --official DIR)')
        spec = importlib.util.spec_from_file_location('official_' + name, path)
        mod = importlib.util.module_from_spec(spec)
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------

def model_spec(name, size, quick):
    """(constructor arguments description, image size actually used, note)."""
    if name == 'pola_pvt_tiny':
        return dict(family='pvt', attn_type='LLLL', la_sr_ratios='1111', drop_path_rate=0.1), size, None
    if name == 'pvt_tiny_softmax':
        # 'S' stages take the constructor's sr_ratios (8, 4, 2, 1); la_sr_ratios only concerns 'L' stages
        return dict(family='pvt', attn_type='SSSS', la_sr_ratios='1111', sr_ratios='8421',
                    drop_path_rate=0.1), size, None
    if name == 'pola_swin_tiny':
        return dict(family='swin', attn_type='LLSS', window_size=56, drop_path_rate=0.2), size, None
    if name == 'swin_tiny_softmax':
        # Swin with window 7 needs the stage resolutions size/4, /8, /16 to be multiples of 7 and even: 224 k.
        # (The official BasicLayer gives every 'S' block window 7 whatever window_size says, so no smaller
        # window can stand in for --quick.)
        note = None
        if size % 224 != 0:
            note = f'swin_tiny_softmax (window 7) needs a multiple of 224 px; {size} px asked, 224 px used'
            size = 224
        return dict(family='swin', attn_type='SSSS', window_size=7, drop_path_rate=0.2), size, note
    raise ValueError(f'unknown model {name!r}; expected one of {", ".join(MODELS)}')


def build_model(mods, name, size, quick=False):
    spec, size, _ = model_spec(name, size, quick)
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if spec['family'] == 'pvt':
            # models/build.py: pola_pvt_tiny(drop_path_rate, alpha, kernel_size, attn_type, la_sr_ratios=str(1111))
            return mods['pola_pvt'].pola_pvt_tiny(
                img_size=size, num_classes=1000, drop_path_rate=spec['drop_path_rate'], alpha=4, kernel_size=5,
                attn_type=spec['attn_type'], la_sr_ratios=spec['la_sr_ratios'])
        # models/build.py with config.py defaults and cfgs/pola_swin_t.yaml
        return mods['pola_swin'].PolaSwinTransformer(
            img_size=size, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96, depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24], window_size=spec['window_size'], mlp_ratio=4., qkv_bias=True, qk_scale=None,
            drop_rate=0.0, drop_path_rate=spec['drop_path_rate'], ape=False, patch_norm=True, use_checkpoint=False,
            alpha=4, kernel_size=5, attn_type=spec['attn_type'])


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------

class Clock:
    def __init__(self, device, deadline):
        self.device = device
        self.deadline = deadline

    def sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def past_deadline(self):
        return self.deadline > 0 and time.monotonic() - START > self.deadline

    def measure(self, step, warmup, min_iters, min_seconds, max_seconds):
        """Wall-clock ms per step with a synchronize after each: (median, min, max, n)."""
        for _ in range(warmup):
            step()
        self.sync()
        samples = []
        t_start = time.perf_counter()
        while len(samples) < min_iters or time.perf_counter() - t_start < min_seconds:
            if samples and time.perf_counter() - t_start > max_seconds:
                break
            t0 = time.perf_counter()
            step()
            self.sync()
            samples.append((time.perf_counter() - t0) * 1000)
        return statistics.median(samples), min(samples), max(samples), len(samples)


def set_tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def tf32_state():
    return {'matmul': bool(torch.backends.cuda.matmul.allow_tf32), 'cudnn': bool(torch.backends.cudnn.allow_tf32)}


def install_cpu_autocast_layer_norm_fallback():
    """FALLBACK for the CPU dry run on PyTorch < 2 only: its CPU autocast leaves layer_norm out of the float32 list,
    and its CPU layer_norm cannot take a bfloat16 input with float32 weights ("expected scalar type BFloat16 but
    found Float"). Under CPU autocast the input is cast to float32 first, as CUDA autocast (and PyTorch 2's CPU
    autocast) does for layer_norm. Never installed on CUDA or on PyTorch 2.x."""
    original = F.layer_norm

    def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
        if torch.is_autocast_cpu_enabled() and input.dtype != torch.float32:
            input = input.float()
        return original(input, normalized_shape, weight, bias, eps)
    F.layer_norm = layer_norm


def autocast_ctx(device, precision):
    if precision == 'bf16':
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model, foreach):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{'params': decay, 'weight_decay': 0.05}, {'params': no_decay, 'weight_decay': 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, foreach=foreach)


def is_oom(e):
    oom_type = getattr(torch.cuda, 'OutOfMemoryError', None)
    return (oom_type is not None and isinstance(e, oom_type)) or 'out of memory' in str(e).lower()


def first_line(e):
    text = f'{type(e).__name__}: {e}'
    return text.strip().split('\n', 1)[0][:500]


def med(xs):
    return statistics.median(xs) if xs else None


def training_breakdown(clock, model, opt, x, labels, device, precision, iters, ema_pairs):
    params = [p for p in model.parameters() if p.requires_grad]
    fwd, bwd, optm, zero, step, host, clip, ema, ema_fe = ([] for _ in range(9))

    def now():
        return time.perf_counter()

    for _ in range(iters):
        clock.sync()
        t0 = now()
        with autocast_ctx(device, precision):
            loss = F.cross_entropy(model(x), labels)
        clock.sync()
        t1 = now()
        loss.backward()
        clock.sync()
        t2 = now()
        # clip_grad_norm_ on the real gradients (not part of the optimizer timing; the gradients are clipped in
        # place, which the step below then uses, as a clipped training step would)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        clock.sync()
        t3 = now()
        opt.step()
        clock.sync()
        t4 = now()
        opt.zero_grad(set_to_none=True)
        clock.sync()
        t5 = now()
        fwd.append((t1 - t0) * 1e3)
        bwd.append((t2 - t1) * 1e3)
        clip.append((t3 - t2) * 1e3)
        optm.append((t4 - t3) * 1e3)
        zero.append((t5 - t4) * 1e3)
        del loss

    def one_step():
        with autocast_ctx(device, precision):
            loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(iters):
        clock.sync()
        t0 = now()
        one_step()
        t1 = now()          # host: the calls have returned, the device may still be working
        clock.sync()
        t2 = now()
        host.append((t1 - t0) * 1e3)
        step.append((t2 - t0) * 1e3)

    floats = [(e, v) for e, v in ema_pairs if e.is_floating_point()]
    others = [(e, v) for e, v in ema_pairs if not e.is_floating_point()]
    weight = 1.0 - EMA_DECAY
    has_foreach_lerp = hasattr(torch, '_foreach_lerp_')
    e_list, v_list = [e for e, _ in floats], [v for _, v in floats]
    with torch.no_grad():
        for i in range(iters + 1):      # the first is a warm-up
            clock.sync()
            t0 = now()
            for e, v in floats:
                e.lerp_(v, weight)
            for e, v in others:
                e.copy_(v)
            clock.sync()
            t1 = now()
            if has_foreach_lerp:
                torch._foreach_lerp_(e_list, v_list, weight)
                for e, v in others:
                    e.copy_(v)
                clock.sync()
            t2 = now()
            if i:
                ema.append((t1 - t0) * 1e3)
                if has_foreach_lerp:
                    ema_fe.append((t2 - t1) * 1e3)
    return {
        'forward_ms': med(fwd), 'backward_ms': med(bwd), 'optimizer_ms': med(optm), 'zero_grad_ms': med(zero),
        'step_ms': med(step), 'host_ms': med(host), 'host_min_ms': min(host) if host else None,
        'clip_ms': med(clip), 'ema_ms': med(ema), 'ema_foreach_ms': med(ema_fe), 'breakdown_iterations': iters,
        'ema_tensors': len(ema_pairs), 'ema_decay': EMA_DECAY,
    }


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------

def emit(row):
    print(json.dumps(row, sort_keys=False), flush=True)


def main(argv=None):
    a = parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    clock = Clock(device, a.deadline)
    base = {'benchmark': 'model', 'language': 'python', 'impl': 'official', 'device': a.device}
    env = {'torch': torch.__version__, 'python': platform.python_version()}
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            emit({**base, 'error': 'CUDA is not available', **env})
            return 1
        env['gpu'] = torch.cuda.get_device_name(device)
        env['cuda'] = torch.version.cuda
        env['cudnn'] = torch.backends.cudnn.version()
    else:
        env['gpu'] = None
        env['threads'] = torch.get_num_threads()
    env['cudnn_benchmark'] = bool(torch.backends.cudnn.benchmark)
    if device.type == 'cpu' and int(torch.__version__.split('.')[0]) < 2 and 'bf16' in a.precisions:
        install_cpu_autocast_layer_norm_fallback()
        env['cpu_autocast_layer_norm_fallback'] = True

    try:
        env.update(install_import_shims())
        mods = load_official(a.official)
        env['official'] = os.path.abspath(a.official)
    except Exception as e:  # noqa: BLE001
        emit({**base, **env, 'error': 'importing the official model files: ' + first_line(e)})
        return 1

    ok = failed = 0
    skipped = []
    for name in a.models:
        model = None
        init_state = None
        for phase in a.phases:
            for precision in a.precisions:
                optimizers = a.optimizers if phase == 'training' else [None]
                for opt_name in optimizers:
                    try:
                        spec, size, note = model_spec(name, a.size, a.quick)
                    except ValueError as e:
                        emit({**base, 'model': name, 'phase': phase, 'precision': precision, 'error': str(e)})
                        failed += 1
                        continue
                    batch = a.train_batch if phase == 'training' else a.infer_batch
                    row = {**base, 'model': name, 'phase': phase, 'precision': precision, 'optimizer': opt_name,
                           'batch': batch, 'image_size': size, 'num_classes': 1000,
                           'attn_type': spec['attn_type'], 'drop_path_rate': spec['drop_path_rate']}
                    if 'window_size' in spec:
                        row['window_size'] = spec['window_size']
                    if 'sr_ratios' in spec:
                        row['sr_ratios'] = spec['sr_ratios']
                    elif 'la_sr_ratios' in spec:
                        row['la_sr_ratios'] = spec['la_sr_ratios']
                    if note:
                        row['note'] = note
                    if clock.past_deadline():
                        skipped.append(f'{name}/{phase}/{precision}/{opt_name or "-"}')
                        emit({**row, 'skipped': True, 'error': f'not started: past the --deadline of {a.deadline:g} s',
                              'elapsed_s': round(time.monotonic() - START, 2), **env})
                        continue
                    t_config = time.monotonic()
                    try:
                        if model is None:
                            torch.manual_seed(0)
                            model = build_model(mods, name, a.size, a.quick).to(device)
                            init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        else:
                            model.load_state_dict(init_state)
                        row['params'] = sum(p.numel() for p in model.parameters())
                        row.update(measure_config(a, clock, model, device, phase, precision, opt_name, batch, size))
                        ok += 1
                    except Exception as e:  # noqa: BLE001 - report and go on with the next configuration
                        row['oom'] = is_oom(e)
                        row['error'] = first_line(e)
                        failed += 1
                        if device.type == 'cuda':
                            torch.cuda.empty_cache()
                    row['seconds'] = round(time.monotonic() - t_config, 2)
                    row['elapsed_s'] = round(time.monotonic() - START, 2)
                    row.update(env)
                    emit(row)
        del model, init_state
        gc.collect()
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    if skipped:
        log(f'gpu_models.py: past the deadline of {a.deadline:g} s, not started: {", ".join(skipped)}')
    log(f'gpu_models.py: {ok} measured, {failed} failed, {len(skipped)} skipped, '
        f'{time.monotonic() - START:.1f} s')
    return 0 if ok > 0 else 1


def measure_config(a, clock, model, device, phase, precision, opt_name, batch, size):
    set_tf32(precision == 'tf32')
    out = {'dtype': 'float32' if precision != 'bf16' else 'bfloat16 (autocast, float32 weights)',
           'tf32': tf32_state()}
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    remaining = a.max_seconds
    if a.deadline > 0:
        remaining = max(0.2, min(a.max_seconds, a.deadline - (time.monotonic() - START)))
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    if phase == 'inference':
        model.eval()

        def step():
            with torch.no_grad(), autocast_ctx(device, precision):
                model(x)
        m = clock.measure(step, a.warmup, a.min_iters, a.min_seconds, remaining)
    elif phase == 'training':
        model.train()
        labels = torch.randint(0, 1000, (batch,), device=device)
        foreach = {'adamw-foreach': True, 'adamw-for-loop': False}.get(opt_name)
        if foreach is None:
            raise ValueError(f'unknown optimizer {opt_name!r}; expected adamw-foreach or adamw-for-loop')
        opt = make_optimizer(model, foreach)
        out['optimizer_foreach'] = foreach
        out['lr'] = 1e-4
        out['weight_decay'] = '0.05 (dim > 1), 0 (others)'

        def step():
            with autocast_ctx(device, precision):
                loss = F.cross_entropy(model(x), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        m = clock.measure(step, a.warmup, a.min_iters, a.min_seconds, remaining)
        if not a.no_breakdown:
            ema = copy.deepcopy(model)
            pairs = list(zip(ema.state_dict().values(), model.state_dict().values()))
            out.update(training_breakdown(clock, model, opt, x, labels, device, precision, a.breakdown_iters, pairs))
            del ema, pairs
        del opt
    else:
        raise ValueError(f'unknown phase {phase!r}; expected inference or training')
    median, lo, hi, n = m
    out.update({'images_per_s': batch * 1000.0 / median, 'median_ms': median, 'min_ms': lo, 'max_ms': hi,
                'iterations': n, 'oom': False})
    if device.type == 'cuda':
        out['max_memory_allocated_bytes'] = torch.cuda.max_memory_allocated(device)
        out['max_memory_reserved_bytes'] = torch.cuda.max_memory_reserved(device)
    return out


if __name__ == '__main__':
    sys.exit(main())
