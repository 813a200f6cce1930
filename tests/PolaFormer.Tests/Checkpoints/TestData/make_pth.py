"""Writes the PyTorch checkpoints that PyTorchCheckpointTests reads, and the values they must load as.

Run from this folder with any PyTorch >= 1.6 (written with Debian's python3-torch 1.13.1):

    python3 make_pth.py

Input: pvt_small_keys.json, the names and shapes (in order) of the C# PolaPyramidVisionTransformer's state_dict()
for the small options it records; PyTorchCheckpointTests checks that the model still lists exactly these.

Outputs (all committed; the tests need no Python):
  swin_style_checkpoint.pth  torch.save of a checkpoint laid out as the official (Swin-derived) training code
                             saves it: {'model', 'optimizer', 'lr_scheduler', 'max_accuracy', 'scaler', 'epoch',
                             'config'}, with 'config' a yacs.config.CfgNode-like object (a class the reader cannot
                             know) and 'model' holding every storage dtype, views with offsets and strides, and two
                             names sharing one storage.
  bare_state_dict.pth        torch.save(module.state_dict()) of a tiny nn.Sequential(Linear, LayerNorm).
  data_parallel_protocol4.pth  {'state_dict': the same, keys prefixed 'module.'}, pickle protocol 4 (FRAME,
                             SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE instead of protocol 2's opcodes).
  pola_pvt_small.pth         {'model': a state dict with the names and shapes of the small Pola-PVT in
                             pvt_small_keys.json (listed by the C# model), 'config': CfgNode, 'epoch'}.
  no_state_dict.pth          a training checkpoint whose 'model' holds no tensors (the reader must say what it found).
  expected.safetensors       every tensor above as it must load: 'swin/<key>', 'bare/<key>', 'pvt/<key>',
                             'optimizer/<param>/<name>'. Written by a tiny writer below (no safetensors package).
"""

import json
import struct
import sys
import types
from collections import OrderedDict

import numpy as np
import torch

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


# --- A stand-in for yacs.config.CfgNode, registered under its real module name so that the pickle names
# --- 'yacs.config.CfgNode' exactly as the released checkpoints do.
class CfgNode(dict):
    """Like yacs: a dict subclass whose attributes live in __dict__ (pickled as NEWOBJ + SETITEMS + BUILD)."""

    def __init__(self, init_dict=None):
        super().__init__()
        for k, v in (init_dict or {}).items():
            self[k] = CfgNode(v) if isinstance(v, dict) else v
        self.__dict__["__immutable__"] = True
        self.__dict__["__deprecated_keys__"] = set()
        self.__dict__["__renamed_keys__"] = {}
        self.__dict__["__new_allowed__"] = False


yacs = types.ModuleType("yacs")
yacs_config = types.ModuleType("yacs.config")
yacs_config.CfgNode = CfgNode
CfgNode.__module__ = "yacs.config"
CfgNode.__qualname__ = "CfgNode"
yacs.config = yacs_config
sys.modules["yacs"] = yacs
sys.modules["yacs.config"] = yacs_config


class Namespace:
    """Stands in for argparse.Namespace: a plain object (NEWOBJ + BUILD of its __dict__)."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def config(name):
    return CfgNode({
        "MODEL": {"TYPE": "pola_pvt", "NAME": name, "DROP_PATH_RATE": 0.1, "LA_SR_RATIOS": "1111"},
        "TRAIN": {"EPOCHS": 300, "BASE_LR": 1e-3, "OPTIMIZER": {"NAME": "adamw", "BETAS": (0.9, 0.999)}},
        "DATA": {"IMG_SIZE": 224, "DATASET": "imagenet"},
        "LOCAL_RANK": 0,
        "TAG": None,
        "AMP_ENABLE": True,
    })


def save_safetensors(path, tensors):
    names = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
             torch.uint8: "U8", torch.bool: "BOOL"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def main():
    torch.manual_seed(20250101)
    expected = OrderedDict()

    # ---------------------------------------------------------------- (a) Swin-style training checkpoint
    big = torch.arange(48, dtype=torch.float32).reshape(6, 8) * 0.5 - 3.0
    model = OrderedDict([
        ("layer.weight", torch.randn(4, 3)),
        ("layer.bias", torch.randn(4)),
        ("big", big),
        ("big_slice", big[2:5, 1:7]),               # shares big's storage: offset 17, strides (8, 1)
        ("big_column", big[:, 3]),                  # offset 3, stride 8
        ("transposed", torch.randn(3, 5).t()),      # strides (1, 5)
        ("expanded", torch.tensor([1.5, -2.0]).expand(3, 2)),  # stride 0
        ("double", torch.randn(2, 2, dtype=torch.float64)),
        ("half", torch.randn(2, 3).half()),
        ("bfloat16", torch.randn(5).bfloat16()),
        ("index", torch.arange(-3, 7, dtype=torch.int64).reshape(2, 5)),
        ("int32", torch.tensor([-(2 ** 31), 0, 2 ** 31 - 1], dtype=torch.int32)),
        ("int16", torch.tensor([-32768, 1, 32767], dtype=torch.int16)),
        ("int8", torch.tensor([-128, 5, 127], dtype=torch.int8)),
        ("uint8", torch.tensor([0, 200, 255], dtype=torch.uint8)),
        ("mask", torch.tensor([[True, False, True], [False, False, True]])),
        ("scalar", torch.tensor(2.5)),
        ("num_batches_tracked", torch.tensor(7)),
        ("empty", torch.zeros(0, 3)),
    ])
    for k, v in model.items():
        expected["swin/" + k] = v.contiguous().clone()

    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    net(torch.randn(4, 3)).square().sum().backward()
    optimizer.step()
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                expected[f"optimizer/{index}/{name}"] = value.clone()

    checkpoint = {
        "model": model,
        "optimizer": optimizer_state,
        "lr_scheduler": {
            "t_initial": 300, "lr_min": 1e-5, "cycle_mul": 1.0, "warmup_t": 20, "warmup_prefix": False,
            "base_values": [1e-3], "metric": None, "noise_range_t": None, "noise_pct": 0.67,
            "param_group_field": "lr", "t_in_epochs": False, "warmup_steps": [4.9e-5],
        },
        "max_accuracy": 81.2,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 0},
        "epoch": 299,
        "config": config("pola_pvt_tiny"),
        "args": Namespace(batch_size=128, data_path="/data/imagenet", amp_dtype=torch.float16,
                          device=torch.device("cpu"), top1=np.float64(81.2), seen={1, 2, 3}, big=2 ** 70),
    }
    torch.save(checkpoint, f"{HERE}/swin_style_checkpoint.pth")

    # ---------------------------------------------------------------- (b) bare state dict, and DataParallel
    tiny = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    with torch.no_grad():
        tiny[1].weight.uniform_(0.5, 1.5)
        tiny[1].bias.uniform_(-0.5, 0.5)
    bare = tiny.state_dict()
    torch.save(bare, f"{HERE}/bare_state_dict.pth")
    for k, v in bare.items():
        expected["bare/" + k] = v.clone()
    wrapped = OrderedDict(("module." + k, v) for k, v in bare.items())
    torch.save({"state_dict": wrapped, "epoch": 3}, f"{HERE}/data_parallel_protocol4.pth", pickle_protocol=4)

    # ---------------------------------------------------------------- (d) a small Pola-PVT
    with open(f"{HERE}/pvt_small_keys.json") as f:
        listing = json.load(f)
    pvt = OrderedDict()
    for name, shape in listing["state_dict"]:
        if name.endswith("norm.weight") or name.endswith("norm1.weight") or name.endswith("norm2.weight"):
            value = 1.0 + 0.1 * torch.randn(shape)
        else:
            value = 0.2 * torch.randn(shape)
        pvt[name] = value
        expected["pvt/" + name] = value.clone()
    torch.save({"model": pvt, "epoch": 299, "max_accuracy": 12.5, "config": config("pola_pvt_small_test")},
               f"{HERE}/pola_pvt_small.pth")

    torch.save({"model": {"w": 1.0}, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}},
               f"{HERE}/no_state_dict.pth")

    save_safetensors(f"{HERE}/expected.safetensors", expected)


if __name__ == "__main__":
    main()
