"""The official PolaFormer attention layers, op for op, for the PyTorch side of the benchmarks and the golden check.

models.pola_pvt.PolaLinearAttention and models.pola_pvt.Attention (ZacharyMeng/PolaFormer @ 44cdd39), written out
here from tests/PolaFormer.Tests/Golden/README.md ("Behaviours of the official code"); the official repository is
not imported. Used by bench_attention.py (CPU), gpu_attention.py (GPU) and
tests/PolaFormer.Tests/Golden/generator/check_golden.py. Import it after any
environment a BLAS or OpenMP must read at load time has been set: it imports torch.
"""
import math

import torch
import torch.nn as nn


class PolaLinearAttention(nn.Module):
    """models.pola_pvt.PolaLinearAttention, op for op (attention dropout p=0 as in the released configs)."""

    def __init__(self, dim, num_patches, num_heads=8, qkv_bias=False, proj_drop=0., sr_ratio=1, kernel_size=5, alpha=4):
        super().__init__()
        assert dim % num_heads == 0
        self.dim = dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.head_dim = head_dim
        self.qg = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.dwc = nn.Conv2d(in_channels=head_dim, out_channels=head_dim, kernel_size=kernel_size,
                             groups=head_dim, padding=kernel_size // 2)
        self.power = nn.Parameter(torch.zeros(size=(1, self.num_heads, 1, self.head_dim)))
        self.alpha = alpha
        self.scale = nn.Parameter(torch.zeros(size=(1, 1, dim)))
        self.positional_encoding = nn.Parameter(torch.zeros(size=(1, num_patches // (sr_ratio * sr_ratio), dim)))

    def forward(self, x, H, W):
        B, N, C = x.shape
        q, g = self.qg(x).reshape(B, N, 2, C).unbind(2)
        if self.sr_ratio > 1:
            x_ = x.permute(0, 2, 1).reshape(B, C, H, W)
            x_ = self.sr(x_).reshape(B, C, -1).permute(0, 2, 1)
            x_ = self.norm(x_)
            kv = self.kv(x_).reshape(B, -1, 2, C).permute(2, 0, 1, 3)
        else:
            kv = self.kv(x).reshape(B, -1, 2, C).permute(2, 0, 1, 3)
        k, v = kv[0], kv[1]
        n = k.shape[1]

        k = k + self.positional_encoding
        kernel_function = nn.ReLU()
        scale = nn.Softplus()(self.scale)
        power = 1 + self.alpha * torch.sigmoid(self.power)  # official: nn.functional.sigmoid, a deprecated alias

        q = q / scale
        k = k / scale
        q = q.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3).contiguous()
        k = k.reshape(B, n, self.num_heads, -1).permute(0, 2, 1, 3).contiguous()
        v = v.reshape(B, n, self.num_heads, -1).permute(0, 2, 1, 3).contiguous()

        q_pos = kernel_function(q) ** power
        q_neg = kernel_function(-q) ** power
        k_pos = kernel_function(k) ** power
        k_neg = kernel_function(-k) ** power

        q_sim = torch.cat([q_pos, q_neg], dim=-1)
        q_opp = torch.cat([q_neg, q_pos], dim=-1)
        k = torch.cat([k_pos, k_neg], dim=-1)

        v1, v2 = torch.chunk(v, 2, dim=-1)

        z = 1 / (q_sim @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (k.transpose(-2, -1) * (n ** -0.5)) @ (v1 * (n ** -0.5))
        x_sim = q_sim @ kv * z
        z = 1 / (q_opp @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (k.transpose(-2, -1) * (n ** -0.5)) @ (v2 * (n ** -0.5))
        x_opp = q_opp @ kv * z

        x = torch.cat([x_sim, x_opp], dim=-1)
        x = x.transpose(1, 2).reshape(B, N, C)

        if self.sr_ratio > 1:
            v = nn.functional.interpolate(v.transpose(-2, -1).reshape(B * self.num_heads, -1, n), size=N,
                                          mode='linear').reshape(B, self.num_heads, -1, N).transpose(-2, -1)

        v = v.reshape(B * self.num_heads, H, W, -1).permute(0, 3, 1, 2)
        v = self.dwc(v).reshape(B, C, N).permute(0, 2, 1)
        x = x + v
        x = x * g

        x = self.proj(x)
        x = self.proj_drop(x)
        return x


class Attention(nn.Module):
    """models.pola_pvt.Attention (softmax attention, optional spatial reduction), op for op."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0., sr_ratio=1):
        super().__init__()
        assert dim % num_heads == 0
        self.dim = dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            x_ = x.permute(0, 2, 1).reshape(B, C, H, W)
            x_ = self.sr(x_).reshape(B, C, -1).permute(0, 2, 1)
            x_ = self.norm(x_)
            kv = self.kv(x_).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        else:
            kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


def attention_step(impl, tokens, dim, heads, batch, mode, device='cpu'):
    """The benchmark's unit of work, as the C# side's AttentionWorkload: one layer (PVT style, no spatial reduction,
    q/k/v biases) on a side x side grid, its input and a fixed random cotangent. Returns step(): fwd is a forward
    without gradients, fwdbwd is forward, sum(y * r), backward to the input and every parameter."""
    side = int(round(math.sqrt(tokens)))
    if side * side != tokens:
        raise ValueError(f'tokens is {tokens}; expected a square number (the layer runs on a side x side grid).')
    if impl == 'pola':
        layer = PolaLinearAttention(dim, tokens, heads, qkv_bias=True).to(device)
        # The official init leaves these at zero; spread them as trained ones are (same rule as the C# side).
        with torch.no_grad():
            for name, prm in layer.named_parameters():
                if name in ('power', 'scale', 'positional_encoding'):
                    prm.copy_(torch.randn_like(prm) * (1.0 if name == 'power' else 0.5))
    elif impl == 'softmax':
        layer = Attention(dim, heads, qkv_bias=True).to(device)
    else:
        raise ValueError(f"impl is '{impl}'; expected pola or softmax.")
    x = torch.randn(batch, tokens, dim, device=device)
    r = torch.randn(batch, tokens, dim, device=device)
    if mode == 'fwd':
        layer.eval()

        def step():
            with torch.no_grad():
                layer(x, side, side)
    else:
        layer.train()

        def step():
            inp = x.detach().requires_grad_(True)
            (layer(inp, side, side) * r).sum().backward()
            layer.zero_grad()
    return step
