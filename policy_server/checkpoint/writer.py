"""Write a model in the openpi or LeRobot checkpoint layout (random weights for tests, trained ones for the demo).

Tests load what this writes through the real loaders, so the loaders are exercised on files with the exact
structure of the public layouts: the tied-embedding de-duplication, the unused expert lm_head, "model." prefixes
and the config.json of each.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from policy_server.checkpoint.layouts import (
    CONFIG_FILE,
    EMBED_TOKENS,
    EXPERT_LM_HEAD,
    EXTENSIONS_KEY,
    LEROBOT_PREFIX,
    TIED_LM_HEAD,
    WEIGHTS_FILE,
)
from policy_server.model.config import DEFAULT_IMAGE_KEYS, PALIGEMMA_VOCAB_SIZE, SIZE_FIELDS, Pi05Config
from policy_server.model.pi05 import Pi05Model

Layout = Literal["openpi", "lerobot"]


@dataclass(frozen=True)
class WriteOptions:
    layout: Layout = "openpi"
    # The openpi converter casts every tensor when asked for bfloat16; float32 keeps them as they are.
    store_dtype: Literal["float32", "bfloat16"] = "float32"
    # Which name(s) the tied LLM embedding is stored under.
    tied_embedding: Literal["embed_tokens", "lm_head", "both"] = "embed_tokens"
    # openpi's converter also saves the (unused, random) expert lm_head [vocab, expert width].
    include_expert_lm_head: bool = False
    # LeRobot config only: the robot's state/action dims (input/output features).
    robot_state_dim: int = 14
    robot_action_dim: int = 14


def randomize(model: Pi05Model, seed: int = 0) -> Pi05Model:
    """Fill every parameter with random values (including norms and adaRMS layers, which are zero at init),
    scaled by 1/sqrt(fan_in) so activations keep their size through the stacks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.ndim >= 2:
                fan_in = p[0].numel()
                values = torch.randn(p.shape, generator=gen) * fan_in**-0.5
            else:
                values = torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(values.to(p.dtype))
    return model


def model_extensions(cfg: Pi05Config) -> dict[str, Any]:
    """Sizes beyond the public configs' fields, written only when they differ from full Pi0.5."""
    ext: dict[str, Any] = {}
    if cfg.vision_variant != "so400m_14":
        ext["vision_variant"] = cfg.vision_variant
    if cfg.max_token_len != 200:
        ext["max_token_len"] = cfg.max_token_len
    if cfg.vocab_size != PALIGEMMA_VOCAB_SIZE:
        ext["vocab_size"] = cfg.vocab_size
    if cfg.num_steps != 10:
        ext["num_steps"] = cfg.num_steps
    for name in SIZE_FIELDS:
        sizes = getattr(cfg, name)
        if sizes is not None:
            ext[name] = asdict(sizes)
    return ext


def _state_dict(model: Pi05Model, options: WriteOptions) -> dict[str, torch.Tensor]:
    dtype = torch.bfloat16 if options.store_dtype == "bfloat16" else None
    state = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu")
        state[name] = (t.to(dtype) if dtype is not None else t).contiguous().clone()
    embed = state[EMBED_TOKENS]
    if options.tied_embedding in ("lm_head", "both"):
        state[TIED_LM_HEAD] = embed.clone()
    if options.tied_embedding == "lm_head":
        del state[EMBED_TOKENS]
    if options.include_expert_lm_head:
        gen = torch.Generator().manual_seed(1234)
        width = model.cfg.expert.width
        state[EXPERT_LM_HEAD] = (torch.randn(model.cfg.vocab_size, width, generator=gen) * 0.02).to(embed.dtype)
    if options.layout == "lerobot":
        state = {LEROBOT_PREFIX + k: v for k, v in state.items()}
    return state


def openpi_config_json(cfg: Pi05Config, options: WriteOptions) -> dict[str, Any]:
    data: dict[str, Any] = {
        "action_dim": cfg.action_dim,
        "action_horizon": cfg.action_horizon,
        "paligemma_variant": cfg.paligemma_variant,
        "action_expert_variant": cfg.action_expert_variant,
        "precision": options.store_dtype,
    }
    ext = model_extensions(cfg)
    if tuple(cfg.image_keys) != DEFAULT_IMAGE_KEYS:
        ext["image_keys"] = list(cfg.image_keys)
    if ext:
        data[EXTENSIONS_KEY] = ext
    return data


def lerobot_config_json(cfg: Pi05Config, options: WriteOptions) -> dict[str, Any]:
    size = cfg.vision.image_size
    inputs: dict[str, Any] = {
        (k if k.startswith("observation.") else f"observation.images.{k}"): {"type": "VISUAL", "shape": [3, size, size]}
        for k in cfg.image_keys
    }
    inputs["observation.state"] = {"type": "STATE", "shape": [options.robot_state_dim]}
    data: dict[str, Any] = {
        "type": "pi05",
        "paligemma_variant": cfg.paligemma_variant,
        "action_expert_variant": cfg.action_expert_variant,
        "dtype": options.store_dtype,
        "n_obs_steps": 1,
        "chunk_size": cfg.action_horizon,
        "n_action_steps": cfg.action_horizon,
        "max_state_dim": cfg.action_dim,
        "max_action_dim": cfg.action_dim,
        "num_inference_steps": cfg.num_steps,
        "min_period": cfg.time_min_period,
        "max_period": cfg.time_max_period,
        "image_resolution": [size, size],
        "empty_cameras": 0,
        "tokenizer_max_length": cfg.max_token_len,
        "input_features": inputs,
        "output_features": {"action": {"type": "ACTION", "shape": [options.robot_action_dim]}},
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"},
    }
    ext = model_extensions(cfg)
    if ext:
        data[EXTENSIONS_KEY] = ext
    return data


def write_checkpoint(model: Pi05Model, directory: Path, options: WriteOptions | None = None) -> Path:
    """Write weights and config.json of `model` into `directory` (created); returns the weights path."""
    options = options or WriteOptions()
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    save_file(_state_dict(model, options), str(weights), metadata={"format": "pt"})
    config = (openpi_config_json if options.layout == "openpi" else lerobot_config_json)(model.cfg, options)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return weights
