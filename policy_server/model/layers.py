"""Numeric building blocks of Pi0.5, each written from its published formula.

Every function states its formula so the per-block tests can check it independently. dtype flow is explicit:
norms compute in float32 and return the input dtype; attention softmax runs in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Additive attention bias for masked positions (openpi's value; finite, so a fully masked row cannot give NaN).
MASKED_LOGIT = -2.3819763e38


def gelu_tanh(x: Tensor) -> Tensor:
    """GeLU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return F.gelu(x, approximate="tanh")


class RMSNorm(nn.Module):
    """Gemma RMSNorm: y = x * rsqrt(mean(x^2) + eps) * (1 + w), computed in float32; w is zero-initialised.

    Returns (y, None) so it is interchangeable with AdaptiveRMSNorm.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if cond is not None:
            raise ValueError("plain RMSNorm takes no conditioning; the prefix expert has no adaRMSNorm")
        normed = _rms_normalize(x, self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype), None


class AdaptiveRMSNorm(nn.Module):
    """adaRMSNorm of the Pi0.5 action expert.

    [scale, shift, gate] = dense(c) (Dense cond_dim -> 3 dim, zero-initialised kernel);
    y = rms(x) * (1 + scale) + shift, in float32; the caller applies the gated residual x + gate * sublayer(y).
    """

    def __init__(self, dim: int, cond_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.dense.weight)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if cond is None:
            raise ValueError("adaRMSNorm needs the time conditioning vector")
        modulation = self.dense(cond.to(self.dense.weight.dtype))
        if x.ndim == 3:
            modulation = modulation[:, None, :]
        scale, shift, gate = modulation.chunk(3, dim=-1)
        normed = _rms_normalize(x, self.eps) * (1.0 + scale.float()) + shift.float()
        return normed.to(x.dtype), gate.to(x.dtype)


def _rms_normalize(x: Tensor, eps: float) -> Tensor:
    variance = x.float().pow(2).mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(variance + eps)


def gated_residual(x: Tensor, y: Tensor, gate: Tensor | None) -> Tensor:
    """x + y (plain) or x + gate * y (adaRMSNorm's gated residual)."""
    return x + y if gate is None else x + y * gate


class GatedMLP(nn.Module):
    """Gemma feed-forward: down(gelu_tanh(gate(x)) * up(x)), no biases."""

    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.up_proj.weight.dtype)
        out: Tensor = self.down_proj(gelu_tanh(self.gate_proj(x)) * self.up_proj(x))
        return out


def rope_cos_sin(positions: Tensor, head_dim: int, max_wavelength: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Rotary embedding tables for integer positions [B, N]: cos/sin of pos * base^(-2i/d), duplicated halves.

    Returns [B, N, head_dim] tensors in `dtype` (computed in float32).
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (max_wavelength**exponents)
    freqs = positions.float()[:, :, None] * inv_freq[None, None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, N, d] rotated by position: x cos + rotate_half(x) sin."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """softmax(q k^T * scale + bias) v with grouped KV heads; softmax in float32.

    q [B, H, N, d], k/v [B, KV, M, d] with H a multiple of KV, bias [B, 1, N, M] (additive, float32).
    Returns [B, N, H * d].
    """
    batch, heads, n, d = q.shape
    groups = heads // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(weights, v)
    return out.transpose(1, 2).reshape(batch, n, heads * d)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """`attention` through torch's fused scaled_dot_product_attention: same shapes, same function.

    Grouped K/V heads are never copied. One KV head (Pi0.5's Gemma) is broadcast as a stride-0 `expand` view:
    on CUDA `enable_gqa` runs only in the flash kernel, which takes no mask, so a masked call would fall back to
    the math kernel (which copies K/V per head); the expanded view keeps the memory-efficient kernel. Several KV
    heads use `enable_gqa`. On CPU both measured the same. mask: bool [B, 1, N, M] (True = may attend) with at
    least one allowed key per row (see `attention_mask`), or None. The kernels keep the logits and the softmax in
    float32 for bfloat16 inputs, as the eager path does.
    """
    batch, heads, n, d = q.shape
    kv_heads = k.shape[1]
    if kv_heads == 1 and heads > 1:
        k, v = k.expand(batch, heads, *k.shape[2:]), v.expand(batch, heads, *v.shape[2:])
        kv_heads = heads
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=heads != kv_heads)
    return out.transpose(1, 2).reshape(batch, n, heads * d)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, backend: str) -> Tensor:
    """Attention with the named backend ("sdpa" or "eager"); `mask` as `attention_mask(..., backend)` built it."""
    if backend == "sdpa":
        return sdpa_attention(q, k, v, mask, scale)
    if backend == "eager":
        return attention(q, k, v, mask, scale)
    raise ValueError(f"attention backend must be 'sdpa' or 'eager', got '{backend}'")


def attention_mask(allowed: Tensor, backend: str) -> Tensor:
    """Boolean [B, N, M] "may attend" -> what `attend` takes for `backend`.

    eager: the additive float32 bias (`attention_bias`). sdpa: bool [B, 1, N, M], where a query row with no
    allowed key (a padding token) may attend to every key instead: a fused kernel returns NaN (or zeros,
    depending on the kernel) for a fully masked row, and a NaN there would reach valid tokens through the next
    layer's keys/values (0 * NaN). The eager path averages such a row's values; both results belong to padding
    that no valid token attends to, so the model's outputs are the same.
    """
    if backend == "eager":
        return attention_bias(allowed)
    return (allowed | ~allowed.any(dim=-1, keepdim=True))[:, None]


def attention_bias(allowed: Tensor) -> Tensor:
    """Boolean [B, N, M] "may attend" -> additive float32 bias [B, 1, N, M] (0 or MASKED_LOGIT)."""
    zero = torch.zeros((), dtype=torch.float32, device=allowed.device)
    masked = torch.full((), MASKED_LOGIT, dtype=torch.float32, device=allowed.device)
    return torch.where(allowed[:, None], zero, masked)


def block_attention_mask(pad: Tensor, ar: Tensor) -> Tensor:
    """big_vision's mask: token i may attend j iff cumsum(ar)_j <= cumsum(ar)_i and both are valid.

    pad: bool [B, N] (True = real token); ar: int [B, N] (1 = starts a new causal block). Returns bool [B, N, N].
    """
    cum = torch.cumsum(ar, dim=1)
    causal = cum[:, None, :] <= cum[:, :, None]
    valid = pad[:, None, :] & pad[:, :, None]
    return causal & valid


def sinusoidal_time_embedding(t: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """[sin(2 pi t / P_k)] ++ [cos(2 pi t / P_k)], P_k = min * (max/min)^(k/(dim/2 - 1)); float64 math, float32 out."""
    if t.ndim != 1:
        raise ValueError(f"time must be [B], got shape {list(t.shape)}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = 1.0 / period * 2 * math.pi
    angles = scaling[None, :] * t[:, None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).to(t.dtype)
