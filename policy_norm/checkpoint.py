"""Find a checkpoint's norm stats and normalization config, and build its pipeline.

Why explicit rules: openpi reads `<checkpoint>/assets/<asset_id>/norm_stats.json` with an asset id that comes
from the training config, and conversions are known to copy the wrong `assets/` folder; LeRobot keeps stats in
processor safetensors. Guessing the asset from a path string or silently picking one of several candidates
would serve wrong stats, so the rules are:

1. `stats_file` in the config (relative to the checkpoint) wins;
2. else `asset_id` (argument or config) selects `assets/<asset_id>/norm_stats.json`;
3. else exactly one candidate must exist among: openpi assets with a norm_stats.json (exactly one asset
   dir), LeRobot processor files, our `norm_stats.yam.json`; none or several is an error listing them.

The config is `config` when given, else the "normalization" object of `<checkpoint>/policy_config.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy_norm.config import NormalizationConfig
from policy_norm.errors import NormConfigError, NormStatsError
from policy_norm.formats import OPENPI_FILE, load_json, read_openpi_norm_stats, read_stats_file
from policy_norm.lerobot_processor import PREPROCESSOR_FILE, read_lerobot_processor_stats
from policy_norm.pipeline import NormalizationPipeline
from policy_norm.stats import NormStats

POLICY_CONFIG_FILE = "policy_config.json"
YAM_STATS_FILE = "norm_stats.yam.json"
ASSETS_DIR = "assets"


def openpi_asset_candidates(checkpoint_dir: Path) -> list[Path]:
    assets = checkpoint_dir / ASSETS_DIR
    if not assets.is_dir():
        return []
    return sorted(p for p in assets.glob(f"*/{OPENPI_FILE}") if p.is_file())


def find_openpi_norm_stats(checkpoint_dir: str | Path, asset_id: str | None = None) -> Path:
    """`assets/<asset_id>/norm_stats.json`; without an asset id, the one asset dir that has the file."""
    root = Path(checkpoint_dir)
    candidates = openpi_asset_candidates(root)
    listing = [p.parent.name for p in candidates]
    if asset_id is not None:
        if "/" in asset_id or asset_id in ("", ".", ".."):
            raise NormConfigError(f"asset_id must be a single folder name, got {asset_id!r}")
        path = root / ASSETS_DIR / asset_id / OPENPI_FILE
        if not path.is_file():
            raise NormStatsError(
                f"{path}: norm stats file not found for asset_id '{asset_id}'; asset dirs with {OPENPI_FILE}: {listing}"
            )
        return path
    if not candidates:
        raise NormStatsError(f"{root / ASSETS_DIR}: no <asset_id>/{OPENPI_FILE} found")
    if len(candidates) > 1:
        raise NormStatsError(
            f"{root / ASSETS_DIR}: several assets have {OPENPI_FILE}: {listing}; set \"asset_id\" in the normalization "
            f"config (or pass asset_id) to choose one"
        )
    return candidates[0]


def stats_candidates(checkpoint_dir: str | Path) -> list[str]:
    """Human-readable list of the stats sources present in a checkpoint dir."""
    root = Path(checkpoint_dir)
    found = [f"openpi {p.relative_to(root)}" for p in openpi_asset_candidates(root)]
    if (root / PREPROCESSOR_FILE).is_file():
        found.append(f"lerobot {PREPROCESSOR_FILE}")
    if (root / YAM_STATS_FILE).is_file():
        found.append(f"yam {YAM_STATS_FILE}")
    return found


def load_checkpoint_stats(
    checkpoint_dir: str | Path,
    asset_id: str | None = None,
    stats_file: str | None = None,
    names: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> NormStats:
    """The checkpoint's stats by the rules in the module docstring. `names` = (state, action) names to attach
    to sources that carry none (LeRobot stats.json)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise NormStatsError(f"{root}: checkpoint directory not found")
    state_names, action_names = names if names is not None else (None, None)
    if stats_file is not None:
        path = Path(stats_file)
        if path.is_absolute() or ".." in path.parts:
            raise NormConfigError(f"stats_file must be a path inside the checkpoint dir, got {stats_file!r}")
        return read_stats_file(root / path, state_names, action_names)
    if asset_id is not None:
        path = find_openpi_norm_stats(root, asset_id)
        return read_openpi_norm_stats(path, detail=f"asset '{asset_id}'")
    openpi = openpi_asset_candidates(root)
    has_lerobot = (root / PREPROCESSOR_FILE).is_file()
    has_yam = (root / YAM_STATS_FILE).is_file()
    kinds = int(bool(openpi)) + int(has_lerobot) + int(has_yam)
    if kinds == 0:
        raise NormStatsError(
            f"{root}: no norm stats found; looked for {ASSETS_DIR}/<asset_id>/{OPENPI_FILE} (openpi), "
            f"{PREPROCESSOR_FILE} + normalizer safetensors (LeRobot) and {YAM_STATS_FILE}"
        )
    if kinds > 1 or len(openpi) > 1:
        raise NormStatsError(
            f"{root}: several norm stats sources: {stats_candidates(root)}; set \"asset_id\" or \"stats_file\" in the "
            f"normalization config to choose one"
        )
    if openpi:
        return read_openpi_norm_stats(openpi[0], detail=f"asset '{openpi[0].parent.name}' (the only one)")
    if has_lerobot:
        return read_lerobot_processor_stats(root)
    return read_stats_file(root / YAM_STATS_FILE, state_names, action_names)


def read_policy_config(checkpoint_dir: str | Path) -> NormalizationConfig | None:
    """The "normalization" object of `<checkpoint>/policy_config.json`, or None when there is no such file."""
    path = Path(checkpoint_dir) / POLICY_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        raw: Any = load_json(path)
    except NormStatsError as err:
        raise NormConfigError(str(err)) from err
    if not isinstance(raw, dict) or "normalization" not in raw:
        raise NormConfigError(f"{path}: expected an object with a \"normalization\" key")
    return NormalizationConfig.from_dict(raw["normalization"], where=f"{path}: normalization")


@dataclass(frozen=True)
class CheckpointNormalization:
    """A checkpoint's stats and the config to serve them with, plus where the config came from."""

    checkpoint_dir: Path
    config: NormalizationConfig
    stats: NormStats
    config_where: str

    def pipeline(self) -> NormalizationPipeline:
        return NormalizationPipeline(self.config, self.stats, self.config_where)


def load_checkpoint_normalization(
    checkpoint_dir: str | Path, config: NormalizationConfig | None = None, asset_id: str | None = None
) -> CheckpointNormalization:
    root = Path(checkpoint_dir)
    where = "the given normalization config"
    if config is None:
        config = read_policy_config(root)
        where = f"{root / POLICY_CONFIG_FILE} (\"normalization\")"
        if config is None:
            raise NormConfigError(
                f"{root}: no normalization config; write {POLICY_CONFIG_FILE} with a \"normalization\" object "
                f"(mode, state_names, action_names, action_delta_mask, model dims, ...) or pass one"
            )
    aid = asset_id if asset_id is not None else config.asset_id
    stats = load_checkpoint_stats(root, aid, config.stats_file, (config.state_names, config.action_names))
    return CheckpointNormalization(root, config, stats, where)


def build_pipeline(
    checkpoint_dir: str | Path, config: NormalizationConfig | None = None, asset_id: str | None = None
) -> NormalizationPipeline:
    """The pipeline a server runs for a checkpoint (stats validated against the config; raises on problems)."""
    return load_checkpoint_normalization(checkpoint_dir, config, asset_id).pipeline()
