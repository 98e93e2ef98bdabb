"""Read and write norm stats files: openpi `norm_stats.json`, LeRobot `meta/stats.json`, and ours.

Formats:
- openpi: {"norm_stats": {"state": {"mean", "std", "q01", "q99"}, "actions": {...}}}, lists at the unpadded
  robot dim, no names, no mode (openpi picks the mode from the model type).
- LeRobot dataset `meta/stats.json`: {feature: {"min", "max", "mean", "std", "count", "q01", "q10", "q50",
  "q90", "q99"}} with features "observation.state" and "action"; no names, no mode.
- ours ("yam-norm-stats", version 1): everything a pipeline needs to trust the stats without guessing:

      {"format": "yam-norm-stats", "version": 1,
       "mode": "quantile", "epsilon": "openpi",
       "action_delta_mask": [true, ..., false] | null, "action_horizon": 50 | null,
       "state":   {"names": [...], "count": N, "mean": [...], "std": [...], "min": [...], "max": [...],
                   "q01": [...], "q99": [...], ...},
       "actions": {...same keys...},
       "provenance": {"dataset": "...", "tool": "...", ...string values}}

Every reader names the file and the field on bad input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from policy_norm.errors import NormStatsError
from policy_norm.modes import NormMode, parse_mode
from policy_norm.numeric import EPSILON_CONVENTIONS
from policy_norm.stats import STAT_KEYS, FeatureNormStats, NormStats, StatsSource

OPENPI_FILE = "norm_stats.json"
YAM_FORMAT = "yam-norm-stats"
YAM_VERSION = 1
LEROBOT_STATE_KEY = "observation.state"
LEROBOT_ACTION_KEY = "action"


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise NormStatsError(f"{path}: norm stats file not found")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NormStatsError(f"{path}: not valid JSON ({err})") from err


def _object(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise NormStatsError(f"{where}: expected an object, got {type(raw).__name__}")
    return raw


# ---- openpi ----------------------------------------------------------------------------------------------


def read_openpi_norm_stats(path: str | Path, detail: str = "") -> NormStats:
    """openpi `norm_stats.json` (mean and std required, q01/q99 optional as in openpi's NormStats)."""
    p = Path(path)
    raw = _object(load_json(p), str(p))
    if "norm_stats" not in raw:
        raise NormStatsError(f"{p}: missing top-level 'norm_stats' (openpi format); keys are {sorted(raw)}")
    body = _object(raw["norm_stats"], f"{p}: norm_stats")
    feats: dict[str, FeatureNormStats] = {}
    for key in ("state", "actions"):
        if key not in body:
            raise NormStatsError(f"{p}: norm_stats.{key} missing; openpi needs both 'state' and 'actions'")
        entry = _object(body[key], f"{p}: norm_stats.{key}")
        for required in ("mean", "std"):
            if entry.get(required) is None:
                raise NormStatsError(f"{p}: norm_stats.{key}.{required} missing (openpi NormStats requires it)")
        feats[key] = FeatureNormStats.from_mapping(entry, f"{p}: norm_stats.{key}")
    return NormStats(
        state=feats["state"], actions=feats["actions"], source=StatsSource("openpi", str(p), detail), epsilon="openpi"
    )


def write_openpi_norm_stats(path: str | Path, state: FeatureNormStats, actions: FeatureNormStats) -> Path:
    """Write openpi's `norm_stats.json` (mean, std, q01, q99 per feature; indent 2 as openpi writes it)."""
    p = Path(path)
    body: dict[str, Any] = {}
    for key, feat in (("state", state), ("actions", actions)):
        entry: dict[str, Any] = {}
        for stat in ("mean", "std", "q01", "q99"):
            arr = feat.get(stat)
            if arr is None:
                raise NormStatsError(f"cannot write {p}: {key}.{stat} is missing")
            entry[stat] = [float(v) for v in arr]
        body[key] = entry
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"norm_stats": body}, indent=2) + "\n")
    return p


# ---- LeRobot dataset stats.json ----------------------------------------------------------------------------


def read_lerobot_stats_json(
    path: str | Path,
    state_names: tuple[str, ...] | None = None,
    action_names: tuple[str, ...] | None = None,
    state_key: str = LEROBOT_STATE_KEY,
    action_key: str = LEROBOT_ACTION_KEY,
) -> NormStats:
    """A LeRobot dataset's `meta/stats.json`; names (from info.json) are attached when given."""
    p = Path(path)
    raw = _object(load_json(p), str(p))
    feats: dict[str, FeatureNormStats] = {}
    for label, key, names in (("state", state_key, state_names), ("actions", action_key, action_names)):
        if key not in raw:
            raise NormStatsError(f"{p}: no stats for feature '{key}'; features are {sorted(raw)}")
        feats[label] = FeatureNormStats.from_mapping(_object(raw[key], f"{p}: {key}"), f"{p}: {key}", names)
    return NormStats(
        state=feats["state"], actions=feats["actions"], source=StatsSource("lerobot-dataset", str(p)),
        epsilon="lerobot",
    )


# ---- ours ------------------------------------------------------------------------------------------------


def _feature_json(feat: FeatureNormStats) -> dict[str, Any]:
    out: dict[str, Any] = {"names": None if feat.names is None else list(feat.names), "count": feat.count}
    for key in STAT_KEYS:
        arr = feat.get(key)
        if arr is not None:
            out[key] = [float(v) for v in arr]
    return out


def write_yam_norm_stats(path: str | Path, stats: NormStats, mode: NormMode, epsilon: str,
                         action_horizon: int | None = None) -> Path:
    """Write our format; mode and epsilon are required so a reader never has to guess them."""
    mode = parse_mode(mode, "mode", NormStatsError)
    if epsilon not in EPSILON_CONVENTIONS:
        raise NormStatsError(f"epsilon must be one of {EPSILON_CONVENTIONS}, got {epsilon!r}")
    doc = {
        "format": YAM_FORMAT,
        "version": YAM_VERSION,
        "mode": mode.value,
        "epsilon": epsilon,
        "action_delta_mask": None if stats.action_delta_mask is None else list(stats.action_delta_mask),
        "action_horizon": action_horizon,
        "state": _feature_json(stats.state),
        "actions": _feature_json(stats.actions),
        "provenance": dict(stats.provenance),
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2) + "\n")
    return p


def read_yam_norm_stats(path: str | Path) -> NormStats:
    p = Path(path)
    raw = _object(load_json(p), str(p))
    if raw.get("format") != YAM_FORMAT:
        raise NormStatsError(f"{p}: 'format' must be '{YAM_FORMAT}', got {raw.get('format')!r}")
    if raw.get("version") != YAM_VERSION:
        raise NormStatsError(f"{p}: unsupported version {raw.get('version')!r} (this reader knows {YAM_VERSION})")
    mode = parse_mode(raw.get("mode"), f"{p}: 'mode'", NormStatsError)
    eps = raw.get("epsilon")
    if eps not in EPSILON_CONVENTIONS:
        raise NormStatsError(f"{p}: 'epsilon' must be one of {EPSILON_CONVENTIONS}, got {eps!r}")
    mask_raw = raw.get("action_delta_mask")
    mask: tuple[bool, ...] | None = None
    if mask_raw is not None:
        if not isinstance(mask_raw, list) or not all(isinstance(v, bool) for v in mask_raw):
            raise NormStatsError(f"{p}: 'action_delta_mask' must be a list of true/false or null")
        mask = tuple(mask_raw)
    feats: dict[str, FeatureNormStats] = {}
    for key in ("state", "actions"):
        if key not in raw:
            raise NormStatsError(f"{p}: '{key}' missing")
        entry = _object(raw[key], f"{p}: {key}")
        names_raw = entry.get("names")
        names: tuple[str, ...] | None = None
        if names_raw is not None:
            if not isinstance(names_raw, list) or not all(isinstance(n, str) for n in names_raw):
                raise NormStatsError(f"{p}: {key}.names must be a list of strings or null")
            names = tuple(names_raw)
        feats[key] = FeatureNormStats.from_mapping(entry, f"{p}: {key}", names)
    prov_raw = raw.get("provenance", {})
    prov = {str(k): str(v) for k, v in _object(prov_raw, f"{p}: provenance").items()}
    return NormStats(
        state=feats["state"], actions=feats["actions"], source=StatsSource("yam", str(p)), mode=mode,
        epsilon=eps, action_delta_mask=mask, provenance=prov,
    )


def stats_arrays_equal(a: FeatureNormStats, b: FeatureNormStats, keys: tuple[str, ...]) -> list[str]:
    """Names of the stats among `keys` present in both that differ (exact float comparison)."""
    out: list[str] = []
    for key in keys:
        x, y = a.get(key), b.get(key)
        if x is not None and y is not None and (x.shape != y.shape or not np.array_equal(x, y)):
            out.append(key)
    return out


def read_stats_file(
    path: str | Path, state_names: tuple[str, ...] | None = None, action_names: tuple[str, ...] | None = None
) -> NormStats:
    """Any of the three JSON formats, recognized by content (never by the file's name or folder)."""
    p = Path(path)
    raw = load_json(p)
    if isinstance(raw, Mapping) and "norm_stats" in raw:
        return read_openpi_norm_stats(p)
    if isinstance(raw, Mapping) and raw.get("format") == YAM_FORMAT:
        return read_yam_norm_stats(p)
    if isinstance(raw, Mapping) and LEROBOT_STATE_KEY in raw and LEROBOT_ACTION_KEY in raw:
        return read_lerobot_stats_json(p, state_names, action_names)
    keys = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
    raise NormStatsError(
        f"{p}: not a norm stats file this layer reads (looked for 'norm_stats' (openpi), 'format': '{YAM_FORMAT}', "
        f"or '{LEROBOT_STATE_KEY}' + '{LEROBOT_ACTION_KEY}' (LeRobot stats.json)); top-level keys: {keys}"
    )
