"""The two public Pi0.5 checkpoint layouts and how their keys and configs map onto our model.

openpi (PyTorch, from `convert_jax_model_to_pytorch.py` or openpi training):
    model.safetensors (keys as in our module tree), config.json {action_dim, action_horizon, paligemma_variant,
    action_expert_variant, precision}, assets/<asset_id>/norm_stats.json.
LeRobot (`PI05Policy.save_pretrained`):
    model.safetensors (keys "model." + openpi key), config.json (PI05Config, "type": "pi05"),
    policy_{pre,post}processor.json + normalizer/unnormalizer safetensors.

Known differences handled here (each one recorded in the load report, none silent):
- the LLM's tied embedding may be stored as `...paligemma.lm_head.weight` only (de-duplicated on save);
- the action expert's `lm_head` (vocab x width) is unused by Pi0.5 and left random by the converter: ignored;
- LeRobot renames `action_time_mlp_*` -> `time_mlp_*` and drops `state_proj.*` and the expert's plain-norm
  `.weight` keys (left over from Pi0-style checkpoints).
Both configs may carry "model_extensions" {vision_variant, max_token_len, vocab_size, image_keys, num_steps}
for non-standard sizes (our small test and demo models), and {llm_sizes, expert_sizes, vision_sizes}: explicit
Gemma/SigLIP sizes for parts that match no named variant (checkpoints converted from openpi's JAX tree, whose
sizes are read off the arrays); absent, the full Pi0.5 sizes apply.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_server.model.config import DEFAULT_IMAGE_KEYS, KEY_TYPO_CUTOFF, ModelConfigError, Pi05Config

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LEROBOT_PREFIX = "model."
TIED_LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
EMBED_TOKENS = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
EXPERT_LM_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"
EXTENSIONS_KEY = "model_extensions"
# How each layout's trainer fitted camera frames to the model's input (`policy_norm.image_fit` method names):
# openpi's data pipeline runs PIL resize_with_pad on uint8 frames; LeRobot's PI05Policy resizes float [0, 1] frames
# with torch bilinear (no antialias) inside the policy. A policy_config.json "image_resize" overrides it.
LAYOUT_IMAGE_RESIZE: dict[str, str] = {"openpi": "resize_with_pad", "lerobot": "resize_with_pad_torch"}
# config.json keys each layout reads, and keys its writers store that do not shape the model. An unknown key
# close (KEY_TYPO_CUTOFF) to one of them is taken for a misspelling and refused: a misspelt `paligemma_variant`
# would otherwise fall back to its default and build a model of another size. Keys close to none are real
# checkpoints' extras (other trainers' fields): they are reported and left alone.
OPENPI_KEYS = frozenset({"action_dim", "action_horizon", "paligemma_variant", "action_expert_variant"})
OPENPI_UNUSED_KEYS = frozenset({"precision", "dtype", "pi05", "max_token_len", "discrete_state_input"})
LEROBOT_KEYS = frozenset({
    "type", "paligemma_variant", "action_expert_variant", "chunk_size", "max_action_dim", "num_inference_steps",
    "tokenizer_max_length", "min_period", "max_period", "input_features", "empty_cameras", "image_resolution",
})
# LeRobot's PI05Config and PreTrainedConfig fields that do not shape the served model.
LEROBOT_UNUSED_KEYS = frozenset({
    "dtype", "n_obs_steps", "n_action_steps", "max_state_dim", "time_sampling_beta_alpha", "time_sampling_beta_beta",
    "time_sampling_scale", "time_sampling_offset", "rtc_config", "normalization_mapping", "gradient_checkpointing",
    "compile_model", "compile_mode", "optimizer_fused", "device", "freeze_vision_encoder", "train_expert_only",
    "optimizer_lr", "optimizer_betas", "optimizer_eps", "optimizer_weight_decay", "optimizer_grad_clip_norm",
    "scheduler_warmup_steps", "scheduler_decay_steps", "scheduler_decay_lr", "output_features", "use_amp",
    "use_peft", "push_to_hub", "repo_id", "private", "tags", "license", "pretrained_path", "pretrained_revision",
    "action_feature_names", "use_relative_actions", "relative_exclude_joints",
})
EXTENSION_KEYS = frozenset({"vision_variant", "max_token_len", "vocab_size", "image_keys", "num_steps",
                            "llm_sizes", "expert_sizes", "vision_sizes"})
log = logging.getLogger(__name__)
_EXPERT_PLAIN_NORM = re.compile(
    r"^paligemma_with_expert\.gemma_expert\.model\.(layers\.\d+\.(input|post_attention)_layernorm|norm)\.weight$"
)


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded as is; the message lists every offending key or field."""


@dataclass
class KeyPlan:
    """How stored tensor names map onto model parameter names."""

    to_model: dict[str, str] = field(default_factory=dict)  # stored name -> model name
    ignored: dict[str, str] = field(default_factory=dict)  # stored name -> reason
    renamed: list[tuple[str, str]] = field(default_factory=list)
    tied_from_lm_head: bool = False
    lm_head_duplicate: str | None = None  # stored lm_head name when embed_tokens is also stored


@dataclass(frozen=True)
class CheckpointInfo:
    layout: str  # "openpi" | "lerobot"
    directory: Path
    weights: Path
    config: Pi05Config
    raw_config: dict[str, Any]
    notes: tuple[str, ...] = ()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def did_you_mean(key: str, known: frozenset[str] | set[str]) -> str | None:
    """The known key `key` is most likely a misspelling of (KEY_TYPO_CUTOFF), or None."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=KEY_TYPO_CUTOFF)
    return close[0] if close else None


def check_config_keys(raw: dict[str, Any], known: frozenset[str], where: Path, label: str = "") -> list[str]:
    """Refuse keys that look like misspellings of `known` ones, naming the suggestion; return the keys close
    to none (real checkpoints carry other tools' fields), which are only reported."""
    unknown = sorted(str(k) for k in set(raw) - known)
    typos = [(key, match) for key in unknown if (match := did_you_mean(key, known)) is not None]
    if typos:
        listed = "; ".join(f"'{label}{key}': did you mean '{match}'?" for key, match in typos)
        raise CheckpointError(f"{where}: unknown key {listed} (a misspelt key would silently take its default)")
    return unknown


def _extensions(raw: dict[str, Any], where: Path) -> dict[str, Any]:
    ext = raw.get(EXTENSIONS_KEY, {}) or {}
    if not isinstance(ext, dict):
        raise CheckpointError(f"{where}: {EXTENSIONS_KEY} must be an object, got {type(ext).__name__}")
    unknown = check_config_keys(ext, EXTENSION_KEYS, where, f"{EXTENSIONS_KEY}.")
    if unknown:
        raise CheckpointError(f"{where}: unknown {EXTENSIONS_KEY} keys {unknown}; allowed {sorted(EXTENSION_KEYS)}")
    return dict(ext)


def _unused_keys_note(unknown: list[str], where: Path) -> list[str]:
    if not unknown:
        return []
    log.warning("%s: keys not used for the model: %s", where, unknown)
    return [f"config.json keys not used for the model: {unknown}"]


def _build_config(values: dict[str, Any], where: Path) -> Pi05Config:
    try:
        return Pi05Config.from_dict(values)
    except (ModelConfigError, TypeError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def openpi_config(raw: dict[str, Any], where: Path) -> tuple[Pi05Config, list[str]]:
    unused = check_config_keys(raw, OPENPI_KEYS | OPENPI_UNUSED_KEYS | {EXTENSIONS_KEY}, where)
    notes = []
    values: dict[str, Any] = {}
    for key in ("action_dim", "action_horizon", "paligemma_variant", "action_expert_variant"):
        if key in raw:
            values[key] = raw[key]
        else:
            notes.append(f"config.json has no '{key}'; using the Pi0.5 default")
    values.update(_extensions(raw, where))
    return _build_config(values, where), notes + _unused_keys_note(unused, where)


def lerobot_config(raw: dict[str, Any], where: Path) -> tuple[Pi05Config, list[str]]:
    if raw.get("type") != "pi05":
        raise CheckpointError(f"{where}: LeRobot policy type is '{raw.get('type')}'; only 'pi05' is supported")
    notes = _unused_keys_note(
        check_config_keys(raw, LEROBOT_KEYS | LEROBOT_UNUSED_KEYS | {EXTENSIONS_KEY}, where), where)
    inputs = raw.get("input_features") or {}
    visual = [k for k, v in inputs.items() if isinstance(v, dict) and v.get("type") == "VISUAL"]
    visual += [f"observation.images.empty_camera_{i}" for i in range(int(raw.get("empty_cameras", 0) or 0))]
    values: dict[str, Any] = {
        "paligemma_variant": raw.get("paligemma_variant", "gemma_2b"),
        "action_expert_variant": raw.get("action_expert_variant", "gemma_300m"),
        "action_horizon": raw.get("chunk_size", 50),
        "action_dim": raw.get("max_action_dim", 32),
        "num_steps": raw.get("num_inference_steps", 10),
        "max_token_len": raw.get("tokenizer_max_length", 200),
        "time_min_period": raw.get("min_period", 4e-3),
        "time_max_period": raw.get("max_period", 4.0),
        "image_keys": tuple(visual) if visual else DEFAULT_IMAGE_KEYS,
    }
    if not visual:
        notes.append("config.json lists no VISUAL input features; using the three Pi0.5 camera slots")
    values.update(_extensions(raw, where))
    cfg = _build_config(values, where)
    resolution = raw.get("image_resolution")
    if resolution is not None and list(resolution) != [cfg.vision.image_size, cfg.vision.image_size]:
        raise CheckpointError(f"{where}: image_resolution {resolution} does not match the vision tower's "
                              f"{cfg.vision.image_size}x{cfg.vision.image_size}")
    return cfg, notes


def layout_image_resize(layout: str) -> str:
    """The image fitting method the trainer of `layout` used (LAYOUT_IMAGE_RESIZE)."""
    if layout not in LAYOUT_IMAGE_RESIZE:
        raise CheckpointError(f"unknown checkpoint layout {layout!r}; expected one of {sorted(LAYOUT_IMAGE_RESIZE)}")
    return LAYOUT_IMAGE_RESIZE[layout]


def inspect_checkpoint(directory: Path) -> CheckpointInfo:
    """Identify the layout of `directory` and read its model config (no weights are read)."""
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        found = sorted(p.name for p in directory.glob("*.safetensors"))
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE} (found {found or 'no .safetensors files'}); "
                              "PEFT adapters must be merged first; an openpi JAX step (params/ + assets/) is "
                              "converted by `python -m policy_server convert --openpi-params STEP --out DIR`")
    config_path = directory / CONFIG_FILE
    raw = _read_json(config_path)
    if "type" in raw:
        cfg, notes = lerobot_config(raw, config_path)
        layout = "lerobot"
    else:
        cfg, notes = openpi_config(raw, config_path)
        layout = "openpi"
    return CheckpointInfo(layout, directory, weights, cfg, raw, tuple(notes))


def plan_keys(layout: str, stored: list[str]) -> KeyPlan:
    """Map stored names to model names for `layout`, recording every rename and every ignored key."""
    plan = KeyPlan()
    for name in stored:
        key = name
        if layout == "lerobot":
            if not key.startswith(LEROBOT_PREFIX):
                plan.to_model[name] = key  # left as is: reported as unexpected if it matches nothing
                continue
            key = key[len(LEROBOT_PREFIX):]
            for old, new in (("action_time_mlp_in.", "time_mlp_in."), ("action_time_mlp_out.", "time_mlp_out.")):
                if key.startswith(old):
                    plan.renamed.append((name, new + key[len(old):]))
                    key = new + key[len(old):]
            if key.startswith("state_proj."):
                plan.ignored[name] = "Pi0 state projection, unused by Pi0.5 (LeRobot drops it too)"
                continue
            if _EXPERT_PLAIN_NORM.match(key):
                plan.ignored[name] = "plain-norm weight of the action expert; Pi0.5 uses adaRMSNorm dense layers"
                continue
        if key == EXPERT_LM_HEAD:
            plan.ignored[name] = "action expert lm_head: unused by Pi0.5 (the converter leaves it random)"
            continue
        plan.to_model[name] = key
    model_names = set(plan.to_model.values())
    lm_head = [s for s, m in plan.to_model.items() if m == TIED_LM_HEAD]
    if lm_head:
        stored_name = lm_head[0]
        if EMBED_TOKENS in model_names:
            del plan.to_model[stored_name]
            plan.lm_head_duplicate = stored_name
        else:
            plan.to_model[stored_name] = EMBED_TOKENS
            plan.tied_from_lm_head = True
    return plan


def is_pi0(stored: list[str]) -> bool:
    """A Pi0 (not Pi0.5) checkpoint: its action expert has plain norms, no adaRMSNorm dense layers."""
    names = [n.removeprefix(LEROBOT_PREFIX) for n in stored]
    has_expert = any(n.startswith("paligemma_with_expert.gemma_expert.") for n in names)
    has_adarms = any(n.startswith("paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.")
                     for n in names)
    return has_expert and not has_adarms
