"""Read norm stats and mode from a LeRobot checkpoint's processor files.

Layout (LeRobot >= 0.4): `policy_preprocessor.json` is {"name", "steps": [{"registry_name", "config",
"state_file"?}, ...]}; the step "normalizer_processor" has config {"eps", "features": {key: {"type", "shape"}},
"norm_map": {"STATE": "QUANTILES", "ACTION": "QUANTILES", "VISUAL": "IDENTITY"}} and its tensors in
`<pipeline name>_step_<i>_normalizer_processor.safetensors` with flat keys "<feature>.<stat>"
(e.g. "observation.state.q01", "action.q99"). The postprocessor's "unnormalizer_processor" holds the action
stats used on the way out. Why both are read: if they disagree, the model's inputs and outputs are
(un)normalized with different stats, which must stop the server rather than bend an arm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

from policy_norm.errors import NormStatsError
from policy_norm.formats import load_json
from policy_norm.modes import NormMode, parse_mode
from policy_norm.numeric import LEROBOT_EPS
from policy_norm.stats import STAT_KEYS, FeatureNormStats, NormStats, StatsSource

PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
NORMALIZER = "normalizer_processor"
UNNORMALIZER = "unnormalizer_processor"

# LeRobot NormalizationMode -> our mode; the others (MIN_MAX, QUANTILE10) are not what Pi0/Pi0.5 use.
LEROBOT_MODES: dict[str, NormMode] = {
    "QUANTILES": NormMode.QUANTILE, "MEAN_STD": NormMode.ZSCORE, "IDENTITY": NormMode.IDENTITY,
}


@dataclass(frozen=True)
class ProcessorStep:
    index: int
    pipeline: str
    config: Mapping[str, Any]
    state_path: Path | None  # None when the file is missing
    state_file: str  # the file name the pipeline declares (or LeRobot's default name)


def _find_step(pipeline_path: Path, registry_name: str) -> ProcessorStep:
    raw = load_json(pipeline_path)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("steps"), list):
        raise NormStatsError(f"{pipeline_path}: expected {{\"name\", \"steps\": [...]}} (a LeRobot processor pipeline)")
    name = raw.get("name") or pipeline_path.stem
    hits = [
        (i, step) for i, step in enumerate(raw["steps"])
        if isinstance(step, Mapping) and step.get("registry_name") == registry_name
    ]
    if len(hits) != 1:
        listed = [s.get("registry_name") for s in raw["steps"] if isinstance(s, Mapping)]
        raise NormStatsError(
            f"{pipeline_path}: expected exactly one '{registry_name}' step, found {len(hits)}; steps are {listed}"
        )
    i, step = hits[0]
    config = step.get("config") or {}
    if not isinstance(config, Mapping):
        raise NormStatsError(f"{pipeline_path}: steps[{i}].config must be an object")
    state_file = step.get("state_file")
    if state_file is None:
        default = pipeline_path.parent / f"{name}_step_{i}_{registry_name}.safetensors"
        state_path = default if default.is_file() else None
    else:
        if not isinstance(state_file, str) or Path(state_file).name != state_file:
            raise NormStatsError(
                f"{pipeline_path}: steps[{i}].state_file must be a plain file name, got {state_file!r}"
            )
        declared = pipeline_path.parent / state_file
        state_path = declared if declared.is_file() else None
    declared_name = str(state_file or f"{name}_step_{i}_{registry_name}.safetensors")
    return ProcessorStep(i, str(name), config, state_path, declared_name)


def _mode_of(config: Mapping[str, Any], kind: str, where: str) -> NormMode:
    norm_map = config.get("norm_map")
    if not isinstance(norm_map, Mapping) or kind not in norm_map:
        raise NormStatsError(f"{where}: config.norm_map has no '{kind}' entry, so the {kind} mode is unknown")
    value = str(norm_map[kind]).split(".")[-1].upper()
    if value not in LEROBOT_MODES:
        raise NormStatsError(
            f"{where}: norm_map.{kind} = '{norm_map[kind]}' is not supported; supported: {sorted(LEROBOT_MODES)}"
        )
    return LEROBOT_MODES[value]


def _feature_key(config: Mapping[str, Any], kind: str, default: str, where: str) -> str:
    features = config.get("features")
    if not isinstance(features, Mapping) or not features:
        raise NormStatsError(
            f"{where}: the normalizer has no features (as in lerobot/pi05_base): this checkpoint carries no norm "
            f"stats; take them from the fine-tuning dataset's meta/stats.json"
        )
    keys = [k for k, v in features.items() if isinstance(v, Mapping) and v.get("type") == kind]
    if default in keys or not keys:
        return default
    if len(keys) > 1:
        raise NormStatsError(f"{where}: several {kind} features {keys}; expected one")
    return str(keys[0])


def _tensors(path: Path) -> dict[str, dict[str, npt.NDArray[np.float64]]]:
    try:
        flat = load_file(str(path))
    except Exception as err:  # safetensors raises several error types for a bad file
        raise NormStatsError(f"{path}: cannot read safetensors ({err})") from err
    out: dict[str, dict[str, npt.NDArray[np.float64]]] = {}
    for key, arr in flat.items():
        if "." not in key:
            raise NormStatsError(f"{path}: tensor key '{key}' is not '<feature>.<stat>'")
        feature, stat = key.rsplit(".", 1)
        out.setdefault(feature, {})[stat] = np.asarray(arr, dtype=np.float64).reshape(-1)
    return out


def _feature_stats(
    tensors: Mapping[str, Mapping[str, npt.NDArray[np.float64]]], key: str, where: str
) -> FeatureNormStats:
    if key not in tensors:
        raise NormStatsError(f"{where}: no tensors for feature '{key}'; features are {sorted(tensors)}")
    entry = {k: v for k, v in tensors[key].items() if k in STAT_KEYS or k == "count"}
    return FeatureNormStats.from_mapping(entry, f"{where}: {key}")


def read_lerobot_processor_stats(checkpoint_dir: str | Path) -> NormStats:
    """State stats + mode from the preprocessor's normalizer, action stats + mode from the postprocessor's
    unnormalizer (checked against the preprocessor's copy when it has one)."""
    root = Path(checkpoint_dir)
    pre_path = root / PREPROCESSOR_FILE
    pre = _find_step(pre_path, NORMALIZER)
    pre_where = f"{pre_path} (step {pre.index} '{NORMALIZER}')"
    state_key = _feature_key(pre.config, "STATE", "observation.state", pre_where)
    state_mode = _mode_of(pre.config, "STATE", pre_where)
    if pre.state_path is None:
        raise NormStatsError(f"{pre_where}: its stats file {pre.state_file} does not exist")
    pre_tensors = _tensors(pre.state_path)
    state = _feature_stats(pre_tensors, state_key, str(pre.state_path))

    post_path = root / POSTPROCESSOR_FILE
    if post_path.is_file():
        post = _find_step(post_path, UNNORMALIZER)
        post_where = f"{post_path} (step {post.index} '{UNNORMALIZER}')"
        action_key = _feature_key(post.config, "ACTION", "action", post_where)
        action_mode = _mode_of(post.config, "ACTION", post_where)
        if post.state_path is None:
            raise NormStatsError(f"{post_where}: its stats file {post.state_file} does not exist")
        actions = _feature_stats(_tensors(post.state_path), action_key, str(post.state_path))
        if action_key in pre_tensors:
            pre_actions = _feature_stats(pre_tensors, action_key, str(pre.state_path))
            for stat in actions.present():
                a, b = actions.get(stat), pre_actions.get(stat)
                if a is not None and b is not None and not np.array_equal(a, b):
                    raise NormStatsError(
                        f"{post.state_path}: {action_key}.{stat} differs from the preprocessor's copy in "
                        f"{pre.state_path}: inputs and outputs would use different stats"
                    )
        source_detail = f"preprocessor step {pre.index}, postprocessor step {post.index}"
    else:
        action_key = _feature_key(pre.config, "ACTION", "action", pre_where)
        action_mode = _mode_of(pre.config, "ACTION", pre_where)
        actions = _feature_stats(pre_tensors, action_key, str(pre.state_path))
        source_detail = f"preprocessor step {pre.index}; no {POSTPROCESSOR_FILE}"
    if state_mode != action_mode:
        raise NormStatsError(
            f"{root}: STATE is normalized as '{state_mode}' but ACTION as '{action_mode}'; this pipeline uses one "
            f"mode for both"
        )
    eps = pre.config.get("eps")
    if eps is not None and eps != LEROBOT_EPS:
        raise NormStatsError(
            f"{pre_where}: config.eps = {eps!r}; the 'lerobot' epsilon convention here implements LeRobot's default "
            f"{LEROBOT_EPS:g}"
        )
    return NormStats(
        state=state,
        actions=actions,
        source=StatsSource("lerobot-processor", str(root), source_detail + (f", eps {eps}" if eps is not None else "")),
        mode=state_mode,
        epsilon="lerobot",
    )


_OUR_TO_LEROBOT = {v: k for k, v in LEROBOT_MODES.items()}


def _stats_tensors(key: str, feat: FeatureNormStats) -> dict[str, npt.NDArray[np.float32]]:
    return {f"{key}.{stat}": np.asarray(feat.get(stat), dtype=np.float32) for stat in feat.present()}


def write_lerobot_processor_stats(
    checkpoint_dir: str | Path,
    stats: NormStats,
    mode: NormMode,
    state_key: str = "observation.state",
    action_key: str = "action",
) -> tuple[Path, Path]:
    """Write LeRobot's processor pipelines with the stats, laid out as a pi05 `save_pretrained` does
    (normalizer = preprocessor step 2, unnormalizer = postprocessor step 0). Returns the two JSON paths."""
    from safetensors.numpy import save_file

    mode = parse_mode(mode, "mode", NormStatsError)
    if mode not in _OUR_TO_LEROBOT:
        raise NormStatsError(f"mode '{mode}' has no LeRobot NormalizationMode; written modes: "
                             f"{sorted(m.value for m in _OUR_TO_LEROBOT)}")
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    features = {
        state_key: {"type": "STATE", "shape": [stats.state.dim]},
        action_key: {"type": "ACTION", "shape": [stats.actions.dim]},
    }
    norm_map = {"VISUAL": "IDENTITY", "STATE": _OUR_TO_LEROBOT[mode], "ACTION": _OUR_TO_LEROBOT[mode]}
    norm_config = {"eps": LEROBOT_EPS, "features": features, "norm_map": norm_map}
    pre_state = "policy_preprocessor_step_2_normalizer_processor.safetensors"
    post_state = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    pre = {"name": "policy_preprocessor", "steps": [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": NORMALIZER, "config": norm_config, "state_file": pre_state},
        {"registry_name": "pi05_prepare_state_tokenizer_processor_step", "config": {}},
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
    ]}
    post = {"name": "policy_postprocessor", "steps": [
        {"registry_name": UNNORMALIZER, "config": norm_config, "state_file": post_state},
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
    ]}
    tensors = {**_stats_tensors(state_key, stats.state), **_stats_tensors(action_key, stats.actions)}
    save_file(tensors, str(root / pre_state))
    save_file(tensors, str(root / post_state))
    pre_path, post_path = root / PREPROCESSOR_FILE, root / POSTPROCESSOR_FILE
    pre_path.write_text(json.dumps(pre, indent=2) + "\n")
    post_path.write_text(json.dumps(post, indent=2) + "\n")
    return pre_path, post_path
