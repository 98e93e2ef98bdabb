"""openpi's JAX parameter tree -> our (openpi PyTorch layout) state-dict keys, for any sizes.

Why not openpi's converter (`examples/convert_jax_model_to_pytorch.py`): it hard-codes the stock sizes, decides
Pi0.5 vs Pi0 by the string "pi05" in the path, and its LLM `o_proj` formula is right only when
num_heads x head_dim equals the width. Here every size is read off the arrays, the model kind off the tree
itself, and each einsum kernel is turned into a linear weight [out, in] by the general head arithmetic:

    q_einsum      [L, N, D, H]     -> q_proj  [N*H, D]   (per layer: transpose(0, 2, 1).reshape)
    kv_einsum     [L, 2, K, D, H]  -> k/v_proj [K*H, D]
    qkv_einsum    [L, 3, N, D, H]  -> q/k/v_proj          (Gemma's form when K == N)
    attn_vec_einsum [L, N, H, D]   -> o_proj  [D, N*H]   (reshape(N*H, D).T)
    gating_einsum [L, 2, D, F]     -> gate/up_proj [F, D]; mlp/linear [L, F, D] -> down_proj [D, F]

Layers are stacked along the first axis (flax `nn.scan`); the Dense/kernel [in, out] of flax is transposed.
Pi0.5 is recognised by its AdaRMS layers (`pre_attention_norm_1/Dense_0`, `final_norm_1/Dense_0`) and
`time_mlp_*`; Pi0 (plain expert norm scales, `state_proj`, `action_time_mlp_*`) is refused with that cause.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy_server.model.config import (
    CUSTOM_VARIANT,
    GEMMA_VARIANTS,
    SIGLIP_VARIANTS,
    GemmaConfig,
    ModelConfigError,
    Pi05Config,
    SiglipConfig,
    named_variant,
)

Array = np.ndarray[Any, Any]
P = "paligemma_with_expert."
VISION = P + "paligemma.model.vision_tower.vision_model."
LLM = P + "paligemma.model.language_model."
EXPERT = P + "gemma_expert.model."
PROJECTOR = P + "paligemma.model.multi_modal_projector.linear."
LLM_TREE = "PaliGemma/llm/"
IMG_TREE = "PaliGemma/img/"
ENC = IMG_TREE + "Transformer/encoderblock/"
PI05_TOP = ("action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out")
PI0_TOP = ("state_proj", "action_time_mlp_in", "action_time_mlp_out")


class OpenpiTreeError(ValueError):
    """The JAX tree is not a Pi0.5 tree of the layout this converter knows; the message says what differs."""


@dataclass(frozen=True)
class OutputTensor:
    """One tensor of the converted state dict: made by `make` from `source` (a JAX array), or from its row
    `layer` for a tensor of a layer stack."""

    name: str
    source: str
    shape: tuple[int, ...]
    make: Callable[[Array], Array]
    layer: int | None = None


@dataclass(frozen=True)
class InferredSizes:
    llm: GemmaConfig
    expert: GemmaConfig
    vision: SiglipConfig
    action_dim: int
    vocab_size: int
    detected_by: str

    def config(self, *, action_horizon: int, max_token_len: int) -> Pi05Config:
        """Our model config: a named variant where the sizes are one, explicit sizes otherwise."""
        llm_name = named_variant(GEMMA_VARIANTS, self.llm)
        expert_name = named_variant(GEMMA_VARIANTS, self.expert)
        vision_name = named_variant(SIGLIP_VARIANTS, self.vision)
        try:
            return Pi05Config(
                paligemma_variant=llm_name or CUSTOM_VARIANT, action_expert_variant=expert_name or CUSTOM_VARIANT,
                vision_variant=vision_name or CUSTOM_VARIANT, action_dim=self.action_dim,
                action_horizon=action_horizon, max_token_len=max_token_len, vocab_size=self.vocab_size,
                llm_sizes=None if llm_name else self.llm, expert_sizes=None if expert_name else self.expert,
                vision_sizes=None if vision_name else self.vision,
            )
        except ModelConfigError as exc:
            raise OpenpiTreeError(f"the sizes read off the tree do not make a Pi0.5 model: {exc}") from None


def _expert(name: str, expert: int) -> str:
    return name if expert == 0 else f"{name}_{expert}"


def detect_pi05(shapes: dict[str, tuple[int, ...]]) -> str:
    """Say why the tree is a Pi0.5 tree, or refuse a Pi0 / Pi0-FAST / unknown tree naming the cause."""
    keys = set(shapes)
    top = {k.split("/")[0] for k in keys}
    adarms = [k for k in (LLM_TREE + "layers/pre_attention_norm_1/Dense_0/kernel",
                          LLM_TREE + "final_norm_1/Dense_0/kernel") if k in keys]
    plain = [k for k in (LLM_TREE + "layers/pre_attention_norm_1/scale", LLM_TREE + "final_norm_1/scale")
             if k in keys]
    pi0_top = sorted(top & set(PI0_TOP))
    if pi0_top or (plain and not adarms):
        found = pi0_top + plain
        raise OpenpiTreeError(
            f"this is a Pi0 tree, not Pi0.5: it has {found} (Pi0's state projection / action-time MLP and plain "
            "RMSNorm scales in the action expert) and no AdaRMS Dense_0 layers in the expert norms; only Pi0.5 is "
            "served here")
    if not any(k.startswith(LLM_TREE + "layers/attn/") and "_1/" in k for k in keys) and "PaliGemma" in top:
        raise OpenpiTreeError("the tree has no action expert (no '_1' attention weights under PaliGemma/llm): a "
                              "Pi0-FAST or plain PaliGemma tree, not Pi0.5")
    if not adarms or not {"time_mlp_in", "time_mlp_out"} <= top:
        raise OpenpiTreeError(
            f"not a Pi0.5 tree of a known layout: expected top-level groups {sorted(('PaliGemma',) + PI05_TOP)} and "
            f"AdaRMS layers {LLM_TREE}layers/pre_attention_norm_1/Dense_0; found top-level {sorted(top)}")
    return (f"AdaRMS Dense_0 layers in the action expert's norms ({', '.join(adarms)}) and time_mlp_in/out; "
            "no state_proj")


def _need(shapes: dict[str, tuple[int, ...]], key: str, ndim: int) -> tuple[int, ...]:
    if key not in shapes:
        raise OpenpiTreeError(f"missing array '{key}'")
    shape = shapes[key]
    if len(shape) != ndim:
        raise OpenpiTreeError(f"'{key}': expected {ndim} dims, got shape {list(shape)}")
    return shape


def _gemma_sizes(shapes: dict[str, tuple[int, ...]], expert: int) -> GemmaConfig:
    attn = LLM_TREE + "layers/attn/"
    qkv = attn + _expert("qkv_einsum", expert) + "/w"
    if qkv in shapes:
        depth, _, heads, width, head_dim = _need(shapes, qkv, 5)
        kv_heads = heads
    else:
        depth, heads, width, head_dim = _need(shapes, attn + _expert("q_einsum", expert) + "/w", 4)
        kv_heads = _need(shapes, attn + _expert("kv_einsum", expert) + "/w", 5)[2]
    mlp_dim = _need(shapes, LLM_TREE + f"layers/{_expert('mlp', expert)}/gating_einsum", 4)[3]
    return GemmaConfig(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads, num_kv_heads=kv_heads,
                       head_dim=head_dim)


def infer_sizes(shapes: dict[str, tuple[int, ...]]) -> InferredSizes:
    """Every size of the model, read off the array shapes (after `detect_pi05`)."""
    detected_by = detect_pi05(shapes)
    llm, expert = _gemma_sizes(shapes, 0), _gemma_sizes(shapes, 1)
    vocab = _need(shapes, LLM_TREE + "embedder/input_embedding", 2)[0]
    patch, patch_w, _, vision_width = _need(shapes, IMG_TREE + "embedding/kernel", 4)
    num_patches = _need(shapes, IMG_TREE + "pos_embedding", 3)[1]
    side = math.isqrt(num_patches)
    if side * side != num_patches or patch != patch_w:
        raise OpenpiTreeError(f"'{IMG_TREE}pos_embedding' has {num_patches} positions and the patch kernel is "
                              f"{patch}x{patch_w}: not a square image grid")
    vision_depth = _need(shapes, ENC + "LayerNorm_0/scale", 2)[0]
    vision_mlp = _need(shapes, ENC + "MlpBlock_0/Dense_0/kernel", 3)[2]
    _, _, vision_heads, vision_head_dim = _need(shapes, ENC + "MultiHeadDotProductAttention_0/query/kernel", 4)
    if vision_heads * vision_head_dim != vision_width:
        raise OpenpiTreeError(f"vision attention has {vision_heads} heads x {vision_head_dim} != width "
                              f"{vision_width}; SigLIP here needs heads x head_dim == width")
    vision = SiglipConfig(image_size=side * patch, patch_size=patch, width=vision_width, depth=vision_depth,
                          mlp_dim=vision_mlp, num_heads=vision_heads)
    action_dim = _need(shapes, "action_in_proj/kernel", 2)[0]
    return InferredSizes(llm=llm, expert=expert, vision=vision, action_dim=action_dim, vocab_size=vocab,
                         detected_by=detected_by)


def expected_jax_shapes(s: InferredSizes) -> dict[str, tuple[int, ...]]:
    """The Pi0.5 JAX tree these sizes make: every array openpi's Pi0 model (pi05=True) holds, with its shape."""
    out: dict[str, tuple[int, ...]] = {}
    for e, g in ((0, s.llm), (1, s.expert)):
        attn = LLM_TREE + "layers/attn/"
        if g.num_kv_heads == g.num_heads:
            out[attn + _expert("qkv_einsum", e) + "/w"] = (g.depth, 3, g.num_heads, g.width, g.head_dim)
        else:
            out[attn + _expert("q_einsum", e) + "/w"] = (g.depth, g.num_heads, g.width, g.head_dim)
            out[attn + _expert("kv_einsum", e) + "/w"] = (g.depth, 2, g.num_kv_heads, g.width, g.head_dim)
        out[attn + _expert("attn_vec_einsum", e) + "/w"] = (g.depth, g.num_heads, g.head_dim, g.width)
        mlp = LLM_TREE + f"layers/{_expert('mlp', e)}/"
        out[mlp + "gating_einsum"] = (g.depth, 2, g.width, g.mlp_dim)
        out[mlp + "linear"] = (g.depth, g.mlp_dim, g.width)
        for norm in ("pre_attention_norm", "pre_ffw_norm"):
            base = LLM_TREE + f"layers/{_expert(norm, e)}/"
            if e == 0:
                out[base + "scale"] = (g.depth, g.width)
            else:
                out[base + "Dense_0/kernel"] = (g.depth, g.width, 3 * g.width)
                out[base + "Dense_0/bias"] = (g.depth, 3 * g.width)
    out[LLM_TREE + "final_norm/scale"] = (s.llm.width,)
    out[LLM_TREE + "final_norm_1/Dense_0/kernel"] = (s.expert.width, 3 * s.expert.width)
    out[LLM_TREE + "final_norm_1/Dense_0/bias"] = (3 * s.expert.width,)
    out[LLM_TREE + "embedder/input_embedding"] = (s.vocab_size, s.llm.width)
    v = s.vision
    head_dim = v.width // v.num_heads
    out[IMG_TREE + "embedding/kernel"] = (v.patch_size, v.patch_size, 3, v.width)
    out[IMG_TREE + "embedding/bias"] = (v.width,)
    out[IMG_TREE + "pos_embedding"] = (1, v.num_patches, v.width)
    for ln in ("LayerNorm_0", "LayerNorm_1"):
        out[ENC + f"{ln}/scale"] = (v.depth, v.width)
        out[ENC + f"{ln}/bias"] = (v.depth, v.width)
    out[ENC + "MlpBlock_0/Dense_0/kernel"] = (v.depth, v.width, v.mlp_dim)
    out[ENC + "MlpBlock_0/Dense_0/bias"] = (v.depth, v.mlp_dim)
    out[ENC + "MlpBlock_0/Dense_1/kernel"] = (v.depth, v.mlp_dim, v.width)
    out[ENC + "MlpBlock_0/Dense_1/bias"] = (v.depth, v.width)
    mha = ENC + "MultiHeadDotProductAttention_0/"
    for proj in ("query", "key", "value"):
        out[mha + f"{proj}/kernel"] = (v.depth, v.width, v.num_heads, head_dim)
        out[mha + f"{proj}/bias"] = (v.depth, v.num_heads, head_dim)
    out[mha + "out/kernel"] = (v.depth, v.num_heads, head_dim, v.width)
    out[mha + "out/bias"] = (v.depth, v.width)
    out[IMG_TREE + "Transformer/encoder_norm/scale"] = (v.width,)
    out[IMG_TREE + "Transformer/encoder_norm/bias"] = (v.width,)
    out[IMG_TREE + "head/kernel"] = (v.width, s.llm.width)
    out[IMG_TREE + "head/bias"] = (s.llm.width,)
    w = s.expert.width
    for name, (n_in, n_out) in (("action_in_proj", (s.action_dim, w)), ("action_out_proj", (w, s.action_dim)),
                                ("time_mlp_in", (w, w)), ("time_mlp_out", (w, w))):
        out[f"{name}/kernel"] = (n_in, n_out)
        out[f"{name}/bias"] = (n_out,)
    return out


def check_tree(shapes: dict[str, tuple[int, ...]], sizes: InferredSizes) -> None:
    """Refuse a tree whose arrays are not exactly the expected ones: missing, extra (e.g. LoRA) or mis-shaped."""
    expected = expected_jax_shapes(sizes)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        groups = sorted({k.rsplit("/", 1)[0] for k in expected})
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"not expected {extra}" + (" (LoRA weights: merge them first)" if any(
                "lora" in k for k in extra) else ""))
        raise OpenpiTreeError(f"unknown Pi0.5 tree layout: {'; '.join(parts)}; expected the groups {groups}")
    bad = [f"'{k}': expected {list(expected[k])}, got {list(shapes[k])}" for k in sorted(expected)
           if tuple(shapes[k]) != expected[k]]
    if bad:
        raise OpenpiTreeError("array shapes do not agree with the sizes read off the tree: " + "; ".join(bad))


def _linear_t(x: Array) -> Array:
    return np.ascontiguousarray(x.T)


def _stacked(name: str, source: str, shape: tuple[int, ...], layer: int,
             f: Callable[[Array], Array] | None) -> OutputTensor:
    def make(x: Array) -> Array:
        return np.ascontiguousarray(f(x) if f is not None else x)
    return OutputTensor(name, source, shape, make, layer)


def _gemma_outputs(prefix: str, g: GemmaConfig, e: int) -> list[OutputTensor]:
    n, k, h, d, f = g.num_heads, g.num_kv_heads, g.head_dim, g.width, g.mlp_dim
    attn = LLM_TREE + "layers/attn/"
    out: list[OutputTensor] = []

    def add(name: str, source: str, shape: tuple[int, ...], fn: Callable[[Array], Array] | None = None) -> None:
        for i in range(g.depth):
            out.append(_stacked(f"{prefix}layers.{i}.{name}", source, shape, i, fn))

    def heads_to_linear(w: Array) -> Array:  # [heads, D, H] -> [heads*H, D]
        return w.transpose(0, 2, 1).reshape(-1, w.shape[1])

    if k == n:
        qkv = attn + _expert("qkv_einsum", e) + "/w"
        def part(j: int) -> Callable[[Array], Array]:
            return lambda w: heads_to_linear(w[j])

        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            add(f"self_attn.{proj}.weight", qkv, (n * h, d), part(j))
    else:
        add("self_attn.q_proj.weight", attn + _expert("q_einsum", e) + "/w", (n * h, d), heads_to_linear)
        kv = attn + _expert("kv_einsum", e) + "/w"
        add("self_attn.k_proj.weight", kv, (k * h, d), lambda w: heads_to_linear(w[0]))
        add("self_attn.v_proj.weight", kv, (k * h, d), lambda w: heads_to_linear(w[1]))
    add("self_attn.o_proj.weight", attn + _expert("attn_vec_einsum", e) + "/w", (d, n * h),
        lambda w: w.reshape(n * h, d).T)
    mlp = LLM_TREE + f"layers/{_expert('mlp', e)}/"
    add("mlp.gate_proj.weight", mlp + "gating_einsum", (f, d), lambda w: w[0].T)
    add("mlp.up_proj.weight", mlp + "gating_einsum", (f, d), lambda w: w[1].T)
    add("mlp.down_proj.weight", mlp + "linear", (d, f), lambda w: w.T)
    for norm, ours in (("pre_attention_norm", "input_layernorm"), ("pre_ffw_norm", "post_attention_layernorm")):
        base = LLM_TREE + f"layers/{_expert(norm, e)}/"
        if e == 0:
            add(f"{ours}.weight", base + "scale", (d,))
        else:
            add(f"{ours}.dense.weight", base + "Dense_0/kernel", (3 * d, d), lambda w: w.T)
            add(f"{ours}.dense.bias", base + "Dense_0/bias", (3 * d,))
    return out


def plan_outputs(s: InferredSizes) -> list[OutputTensor]:
    """Every tensor of our state dict, grouped by source array and layer (so each stored block is read once)."""
    v = s.vision
    vision_hd = v.width // v.num_heads
    out: list[OutputTensor] = [
        OutputTensor(VISION + "embeddings.patch_embedding.weight", IMG_TREE + "embedding/kernel",
                     (v.width, 3, v.patch_size, v.patch_size), lambda w: w.transpose(3, 2, 0, 1)),
        OutputTensor(VISION + "embeddings.patch_embedding.bias", IMG_TREE + "embedding/bias", (v.width,),
                     lambda w: w),
        OutputTensor(VISION + "embeddings.position_embedding.weight", IMG_TREE + "pos_embedding",
                     (v.num_patches, v.width), lambda w: w.reshape(v.num_patches, v.width)),
    ]

    def vis(name: str, source: str, shape: tuple[int, ...], fn: Callable[[Array], Array] | None = None) -> None:
        for i in range(v.depth):
            out.append(_stacked(f"{VISION}encoder.layers.{i}.{name}", ENC + source, shape, i, fn))

    vis("layer_norm1.weight", "LayerNorm_0/scale", (v.width,))
    vis("layer_norm1.bias", "LayerNorm_0/bias", (v.width,))
    vis("layer_norm2.weight", "LayerNorm_1/scale", (v.width,))
    vis("layer_norm2.bias", "LayerNorm_1/bias", (v.width,))
    vis("mlp.fc1.weight", "MlpBlock_0/Dense_0/kernel", (v.mlp_dim, v.width), lambda w: w.T)
    vis("mlp.fc1.bias", "MlpBlock_0/Dense_0/bias", (v.mlp_dim,))
    vis("mlp.fc2.weight", "MlpBlock_0/Dense_1/kernel", (v.width, v.mlp_dim), lambda w: w.T)
    vis("mlp.fc2.bias", "MlpBlock_0/Dense_1/bias", (v.width,))
    mha = "MultiHeadDotProductAttention_0/"
    for jax_name, ours in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        vis(f"self_attn.{ours}.weight", mha + f"{jax_name}/kernel", (v.num_heads * vision_hd, v.width),
            lambda w: w.reshape(w.shape[0], -1).T)
        vis(f"self_attn.{ours}.bias", mha + f"{jax_name}/bias", (v.num_heads * vision_hd,),
            lambda w: w.reshape(-1))
    vis("self_attn.out_proj.weight", mha + "out/kernel", (v.width, v.num_heads * vision_hd),
        lambda w: w.reshape(-1, w.shape[-1]).T)
    vis("self_attn.out_proj.bias", mha + "out/bias", (v.width,))
    out += [
        OutputTensor(VISION + "post_layernorm.weight", IMG_TREE + "Transformer/encoder_norm/scale", (v.width,),
                     lambda w: w),
        OutputTensor(VISION + "post_layernorm.bias", IMG_TREE + "Transformer/encoder_norm/bias", (v.width,),
                     lambda w: w),
        OutputTensor(PROJECTOR + "weight", IMG_TREE + "head/kernel", (s.llm.width, v.width), _linear_t),
        OutputTensor(PROJECTOR + "bias", IMG_TREE + "head/bias", (s.llm.width,), lambda w: w),
        OutputTensor(LLM + "embed_tokens.weight", LLM_TREE + "embedder/input_embedding",
                     (s.vocab_size, s.llm.width), lambda w: w),
        OutputTensor(LLM + "norm.weight", LLM_TREE + "final_norm/scale", (s.llm.width,), lambda w: w),
        OutputTensor(EXPERT + "norm.dense.weight", LLM_TREE + "final_norm_1/Dense_0/kernel",
                     (3 * s.expert.width, s.expert.width), _linear_t),
        OutputTensor(EXPERT + "norm.dense.bias", LLM_TREE + "final_norm_1/Dense_0/bias", (3 * s.expert.width,),
                     lambda w: w),
    ]
    out += _gemma_outputs(LLM, s.llm, 0)
    out += _gemma_outputs(EXPERT, s.expert, 1)
    w = s.expert.width
    for name, (n_in, n_out) in (("action_in_proj", (s.action_dim, w)), ("action_out_proj", (w, s.action_dim)),
                                ("time_mlp_in", (w, w)), ("time_mlp_out", (w, w))):
        out.append(OutputTensor(f"{name}.weight", f"{name}/kernel", (n_out, n_in), _linear_t))
        out.append(OutputTensor(f"{name}.bias", f"{name}/bias", (n_out,), lambda x: x))
    order = {src: i for i, src in enumerate(dict.fromkeys(t.source for t in out))}
    # Grouped by source, then by layer: every tensor of one stored block is made before the next block is read.
    return sorted(out, key=lambda t: (order[t.source], -1 if t.layer is None else t.layer))
