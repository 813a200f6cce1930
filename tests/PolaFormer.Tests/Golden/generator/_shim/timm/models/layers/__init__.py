"""The three timm.models.layers names the official model files import (see ../../../README.md)."""
import collections.abc
from itertools import repeat

import torch
import torch.nn as nn


def drop_path(x, drop_prob: float = 0., training: bool = False, scale_by_keep: bool = True):
    """Stochastic depth per sample: zeroes whole samples with probability drop_prob while training."""
    if drop_prob == 0. or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    """Stochastic depth (no parameters, no buffers); identity in eval mode."""

    def __init__(self, drop_prob: float = 0., scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


def to_2tuple(x):
    """An iterable (not a string) stays as it is; anything else becomes (x, x)."""
    if isinstance(x, collections.abc.Iterable) and not isinstance(x, str):
        return tuple(x)
    return tuple(repeat(x, 2))


def trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
    """Truncated normal fill (inverse-CDF method), as torch.nn.init.trunc_normal_."""
    return torch.nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)
