"""openpi JAX trees for the converter's tests, written by our orbax-layout writer from one of our models.

`jax_tree_from_state` is the inverse of the converter's mapping, written out independently (each einsum kernel
rebuilt from the linear weight as openpi's modules define it: q_einsum [N, D, H], kv_einsum [2, K, D, H],
attn_vec_einsum [N, H, D], gating_einsum [2, D, F], flax kernels [in, out], layers stacked on axis 0), so a
round trip that returns the same state dict checks the head arithmetic for any sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy_server.checkpoint.orbax_writer import write_orbax_tree
from policy_server.model.config import GemmaConfig, Pi05Config

P = "paligemma_with_expert."
VIS = P + "paligemma.model.vision_tower.vision_model."
LLM = P + "paligemma.model.language_model."
EXP = P + "gemma_expert.model."
ENC = "PaliGemma/img/Transformer/encoderblock/"

Array = np.ndarray[Any, Any]


def _np(t: torch.Tensor) -> Array:
    return t.detach().to(torch.float32).cpu().numpy()


def _gemma(sd: dict[str, Array], prefix: str, g: GemmaConfig, e: int, out: dict[str, Array],
           qkv_form: bool) -> None:
    sfx = "" if e == 0 else f"_{e}"
    n, k, h, d = g.num_heads, g.num_kv_heads, g.head_dim, g.width

    def layers(fn: Any) -> Array:
        return np.stack([fn(i) for i in range(g.depth)])

    def einsum(w: Array, heads: int) -> Array:  # linear [heads*H, D] -> [heads, D, H]
        return w.reshape(heads, h, d).transpose(0, 2, 1)

    def q(i: int) -> Array:
        return einsum(sd[f"{prefix}layers.{i}.self_attn.q_proj.weight"], n)

    def kv(i: int, proj: str) -> Array:
        return einsum(sd[f"{prefix}layers.{i}.self_attn.{proj}.weight"], k)

    attn = "PaliGemma/llm/layers/attn/"
    if qkv_form:
        out[attn + f"qkv_einsum{sfx}/w"] = layers(lambda i: np.stack([q(i), kv(i, "k_proj"), kv(i, "v_proj")]))
    else:
        out[attn + f"q_einsum{sfx}/w"] = layers(q)
        out[attn + f"kv_einsum{sfx}/w"] = layers(lambda i: np.stack([kv(i, "k_proj"), kv(i, "v_proj")]))
    out[attn + f"attn_vec_einsum{sfx}/w"] = layers(
        lambda i: sd[f"{prefix}layers.{i}.self_attn.o_proj.weight"].T.reshape(n, h, d))
    mlp = f"PaliGemma/llm/layers/mlp{sfx}/"
    out[mlp + "gating_einsum"] = layers(lambda i: np.stack([sd[f"{prefix}layers.{i}.mlp.gate_proj.weight"].T,
                                                            sd[f"{prefix}layers.{i}.mlp.up_proj.weight"].T]))
    out[mlp + "linear"] = layers(lambda i: sd[f"{prefix}layers.{i}.mlp.down_proj.weight"].T)
    for jax_norm, ours in (("pre_attention_norm", "input_layernorm"), ("pre_ffw_norm", "post_attention_layernorm")):
        base = f"PaliGemma/llm/layers/{jax_norm}{sfx}/"
        if e == 0:
            out[base + "scale"] = layers(lambda i, ours=ours: sd[f"{prefix}layers.{i}.{ours}.weight"])
        else:
            out[base + "Dense_0/kernel"] = layers(lambda i, ours=ours: sd[f"{prefix}layers.{i}.{ours}.dense.weight"].T)
            out[base + "Dense_0/bias"] = layers(lambda i, ours=ours: sd[f"{prefix}layers.{i}.{ours}.dense.bias"])


def jax_tree_from_state(state: dict[str, torch.Tensor], cfg: Pi05Config) -> dict[str, Array]:
    """openpi's Pi0.5 JAX tree (keys '/'-joined below the 'params' root) holding the weights of `state`."""
    sd = {k: _np(v) for k, v in state.items()}
    out: dict[str, Array] = {}
    v = cfg.vision
    hd = v.width // v.num_heads
    out["PaliGemma/img/embedding/kernel"] = sd[VIS + "embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
    out["PaliGemma/img/embedding/bias"] = sd[VIS + "embeddings.patch_embedding.bias"]
    out["PaliGemma/img/pos_embedding"] = sd[VIS + "embeddings.position_embedding.weight"][None]

    def vl(name: str, fn: Any = None) -> Array:
        return np.stack([(fn or (lambda x: x))(sd[f"{VIS}encoder.layers.{i}.{name}"]) for i in range(v.depth)])

    out[ENC + "LayerNorm_0/scale"] = vl("layer_norm1.weight")
    out[ENC + "LayerNorm_0/bias"] = vl("layer_norm1.bias")
    out[ENC + "LayerNorm_1/scale"] = vl("layer_norm2.weight")
    out[ENC + "LayerNorm_1/bias"] = vl("layer_norm2.bias")
    out[ENC + "MlpBlock_0/Dense_0/kernel"] = vl("mlp.fc1.weight", lambda w: w.T)
    out[ENC + "MlpBlock_0/Dense_0/bias"] = vl("mlp.fc1.bias")
    out[ENC + "MlpBlock_0/Dense_1/kernel"] = vl("mlp.fc2.weight", lambda w: w.T)
    out[ENC + "MlpBlock_0/Dense_1/bias"] = vl("mlp.fc2.bias")
    mha = ENC + "MultiHeadDotProductAttention_0/"
    for jax_name, ours in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        out[mha + f"{jax_name}/kernel"] = vl(f"self_attn.{ours}.weight",
                                             lambda w: w.T.reshape(v.width, v.num_heads, hd))
        out[mha + f"{jax_name}/bias"] = vl(f"self_attn.{ours}.bias", lambda b: b.reshape(v.num_heads, hd))
    out[mha + "out/kernel"] = vl("self_attn.out_proj.weight", lambda w: w.T.reshape(v.num_heads, hd, v.width))
    out[mha + "out/bias"] = vl("self_attn.out_proj.bias")
    out["PaliGemma/img/Transformer/encoder_norm/scale"] = sd[VIS + "post_layernorm.weight"]
    out["PaliGemma/img/Transformer/encoder_norm/bias"] = sd[VIS + "post_layernorm.bias"]
    out["PaliGemma/img/head/kernel"] = sd[P + "paligemma.model.multi_modal_projector.linear.weight"].T
    out["PaliGemma/img/head/bias"] = sd[P + "paligemma.model.multi_modal_projector.linear.bias"]
    out["PaliGemma/llm/embedder/input_embedding"] = sd[LLM + "embed_tokens.weight"]
    out["PaliGemma/llm/final_norm/scale"] = sd[LLM + "norm.weight"]
    out["PaliGemma/llm/final_norm_1/Dense_0/kernel"] = sd[EXP + "norm.dense.weight"].T
    out["PaliGemma/llm/final_norm_1/Dense_0/bias"] = sd[EXP + "norm.dense.bias"]
    _gemma(sd, LLM, cfg.llm, 0, out, cfg.llm.num_kv_heads == cfg.llm.num_heads)
    _gemma(sd, EXP, cfg.expert, 1, out, cfg.expert.num_kv_heads == cfg.expert.num_heads)
    for name in ("action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out"):
        out[f"{name}/kernel"] = sd[f"{name}.weight"].T
        out[f"{name}/bias"] = sd[f"{name}.bias"]
    return {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in out.items()}


def write_jax_tree(params_dir: Path, tree: dict[str, Array], ocdbt: bool = True) -> Path:
    """Write `tree` as openpi training writes `<step>/params` (orbax layout, nnx 'value' leaves)."""
    entries = [(tuple(k.split("/")), tuple(a.shape), a.dtype) for k, a in sorted(tree.items())]
    write_orbax_tree(params_dir, entries, lambda path: tree["/".join(path)], ocdbt=ocdbt)
    return params_dir


def to_pi0_tree(tree: dict[str, Array], cfg: Pi05Config) -> dict[str, Array]:
    """The same weights arranged as a Pi0 tree: plain expert norm scales, state_proj and action_time_mlp_*."""
    out = {k: a for k, a in tree.items() if "Dense_0" not in k and not k.startswith("time_mlp")}
    g = cfg.expert
    for norm in ("pre_attention_norm_1", "pre_ffw_norm_1"):
        out[f"PaliGemma/llm/layers/{norm}/scale"] = np.zeros((g.depth, g.width), np.float32)
    out["PaliGemma/llm/final_norm_1/scale"] = np.zeros((g.width,), np.float32)
    out["state_proj/kernel"] = np.zeros((cfg.action_dim, g.width), np.float32)
    out["state_proj/bias"] = np.zeros((g.width,), np.float32)
    out["action_time_mlp_in/kernel"] = np.zeros((2 * g.width, g.width), np.float32)
    out["action_time_mlp_in/bias"] = np.zeros((g.width,), np.float32)
    out["action_time_mlp_out/kernel"] = np.zeros((g.width, g.width), np.float32)
    out["action_time_mlp_out/bias"] = np.zeros((g.width,), np.float32)
    return out
