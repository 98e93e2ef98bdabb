"""Gemma decoder stacks (the PaliGemma LLM and the action expert) and their shared-attention layer step.

Pi0.5 runs two Gemma stacks side by side: the LLM over the prefix (images + prompt) and the action expert over
the suffix (noisy actions). In every layer each stack normalizes and projects its own tokens, the queries,
keys and values of both are concatenated along the sequence, one attention runs over all of them, and each
stack applies its own output projection, MLP and residuals to its own part. The expert's norms are
adaRMSNorms conditioned on the flow time. With a prefix KV cache, the expert attends over the cached
(already RoPE-rotated) prefix keys/values plus its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from policy_server.model.config import GemmaConfig
from policy_server.model.layers import AdaptiveRMSNorm, GatedMLP, RMSNorm, apply_rope, attend, gated_residual


class GemmaAttentionProjections(nn.Module):
    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.q_proj = nn.Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)


class GemmaLayer(nn.Module):
    def __init__(self, cfg: GemmaConfig, cond_dim: int | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.self_attn = GemmaAttentionProjections(cfg)
        self.mlp = GatedMLP(cfg.width, cfg.mlp_dim)
        self.input_layernorm: RMSNorm | AdaptiveRMSNorm
        self.post_attention_layernorm: RMSNorm | AdaptiveRMSNorm
        if cond_dim is None:
            self.input_layernorm = RMSNorm(cfg.width, cfg.rms_eps)
            self.post_attention_layernorm = RMSNorm(cfg.width, cfg.rms_eps)
        else:
            self.input_layernorm = AdaptiveRMSNorm(cfg.width, cond_dim, cfg.rms_eps)
            self.post_attention_layernorm = AdaptiveRMSNorm(cfg.width, cond_dim, cfg.rms_eps)


class GemmaModel(nn.Module):
    """One Gemma stack. `embed_tokens` exists only for the LLM (the expert has no embedder)."""

    def __init__(self, cfg: GemmaConfig, *, vocab_size: int | None, cond_dim: int | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(vocab_size, cfg.width) if vocab_size else None
        self.layers = nn.ModuleList(GemmaLayer(cfg, cond_dim) for _ in range(cfg.depth))
        self.norm: RMSNorm | AdaptiveRMSNorm = (
            RMSNorm(cfg.width, cfg.rms_eps) if cond_dim is None else AdaptiveRMSNorm(cfg.width, cond_dim, cfg.rms_eps)
        )

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype the hidden states travel in (the dtype of the projection weights)."""
        layer: GemmaLayer = self.layers[0]  # type: ignore[assignment]
        return layer.self_attn.q_proj.weight.dtype


@dataclass
class Stream:
    """One stack's tokens in a shared-attention layer: hidden states [B, N, width] and its conditioning."""

    layer: GemmaLayer
    hidden: Tensor
    cond: Tensor | None = None


def shared_attention_layer(
    streams: list[Stream],
    cos: Tensor,
    sin: Tensor,
    bias: Tensor,
    cached_kv: tuple[Tensor, Tensor] | None = None,
    backend: str = "eager",
) -> tuple[list[Tensor], tuple[Tensor, Tensor]]:
    """Run one layer over all streams with one attention; return new hidden states and this call's (K, V).

    cos/sin [B, N_total, head_dim] are the RoPE tables of the streams' tokens, in order; bias [B, 1, N_total, M]
    with M = cached length + N_total, as `layers.attention_mask(allowed, backend)` built it for the attention
    `backend` ("eager" or "sdpa"). The returned K/V are RoPE-rotated (what a prefix cache stores).
    """
    queries, keys, values, gates, lengths = [], [], [], [], []
    for s in streams:
        cfg = s.layer.cfg
        normed, gate = s.layer.input_layernorm(s.hidden, s.cond)
        proj = s.layer.self_attn
        normed = normed.to(proj.q_proj.weight.dtype)
        b, n, _ = normed.shape
        queries.append(proj.q_proj(normed).view(b, n, cfg.num_heads, cfg.head_dim).transpose(1, 2))
        keys.append(proj.k_proj(normed).view(b, n, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2))
        values.append(proj.v_proj(normed).view(b, n, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2))
        gates.append(gate)
        lengths.append(n)
    q = apply_rope(queries[0] if len(queries) == 1 else _cat(queries), cos, sin)
    k = apply_rope(keys[0] if len(keys) == 1 else _cat(keys), cos, sin)
    v = values[0] if len(values) == 1 else _cat(values)
    k_all, v_all = (k, v) if cached_kv is None else (_cat([cached_kv[0], k]), _cat([cached_kv[1], v]))
    scale = streams[0].layer.cfg.head_dim ** -0.5
    out = attend(q, k_all, v_all, bias, scale, backend)

    new_hidden = []
    start = 0
    for s, gate, n in zip(streams, gates, lengths, strict=True):
        part = out[:, start : start + n]
        start += n
        o_proj = s.layer.self_attn.o_proj
        h = gated_residual(s.hidden, o_proj(part.to(o_proj.weight.dtype)), gate)
        normed, gate2 = s.layer.post_attention_layernorm(h, s.cond)
        h = gated_residual(h, s.layer.mlp(normed), gate2)
        new_hidden.append(h)
    return new_hidden, (k, v)


def _cat(tensors: list[Tensor]) -> Tensor:
    """Concatenate per-head tensors [B, H, N_i, d] along the sequence."""
    return torch.cat(tensors, dim=2)
