"""Real-file fixtures for the normalization, stats-tool and doctor tests (plus a check that clean data is clean).

Datasets are written with the project's LeRobot and DP-zarr writers from the scripted YAM trajectories of the
sample generator (14 joints, state trailing the action by a few frames); checkpoints are written in openpi's
layout (`assets/<asset_id>/norm_stats.json` + `policy_config.json`). Nothing is mocked.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save_file

from policy_norm.formats import write_openpi_norm_stats
from policy_norm.stats import FeatureNormStats
from replay.cli import main
from replay.make_sample_dataset import JOINT_NAMES, SampleConfig, generate_episodes
from replay.stats_tool import ComputedStats, StatsRequest, compute_norm_stats
from robodata.lerobot_writer import EpisodeData, LeRobotWriterConfig, write_lerobot_dataset
from robodata.open import open_dataset
from robot_client.yam_limits import yam_limits

F64 = npt.NDArray[np.float64]
FPS = 30
YAM_MASK = (True,) * 6 + (False,) + (True,) * 6 + (False,)


@dataclass
class Episodes:
    """states/actions per episode, float64 [T, 14], freely editable before writing."""

    states: list[F64]
    actions: list[F64]

    def copy(self) -> Episodes:
        return Episodes([s.copy() for s in self.states], [a.copy() for a in self.actions])


def yam_episodes(num: int = 6, lag: int = 2, seed: int = 7) -> Episodes:
    eps = generate_episodes(SampleConfig(seed=seed, num_episodes=num, lag_frames=lag, min_length=110, max_length=130))
    return Episodes([e.states.astype(np.float64) for e in eps], [e.actions.astype(np.float64) for e in eps])


def write_lerobot(root: Path, eps: Episodes, names: Sequence[str] = JOINT_NAMES) -> Path:
    cfg = LeRobotWriterConfig(fps=FPS, state_names=tuple(names), action_names=tuple(names), robot_type="bi_yam")
    data = [EpisodeData(task="pick", states=s, actions=a) for s, a in zip(eps.states, eps.actions, strict=True)]
    return write_lerobot_dataset(root, cfg, data)


def computed_stats(dataset: Path, mask: tuple[bool, ...] | None = None, horizon: int = 1) -> ComputedStats:
    return compute_norm_stats(open_dataset(dataset), StatsRequest(delta_mask=mask, action_horizon=horizon,
                                                                  progress=False))


def policy_config(mode: str | None = "quantile", mask: Sequence[bool] = (False,) * 14, horizon: int | None = 1,
                  **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "mode": mode,
        "epsilon": "openpi",
        "state_names": list(JOINT_NAMES),
        "action_names": list(JOINT_NAMES),
        "action_delta_mask": list(mask),
        "action_horizon": horizon,
        "model_state_dim": 32,
        "model_action_dim": 32,
        "joint_limits": {name: list(limit) for name, limit in yam_limits(JOINT_NAMES).items()},
    }
    cfg.update(extra)
    return cfg


def openpi_checkpoint(root: Path, state: FeatureNormStats, actions: FeatureNormStats,
                      config: dict[str, Any] | None, asset_id: str = "yam") -> Path:
    write_openpi_norm_stats(root / "assets" / asset_id / "norm_stats.json", state, actions)
    if config is not None:
        (root / "policy_config.json").write_text(json.dumps({"normalization": config}, indent=2))
    return root


def lerobot_checkpoint(root: Path, state: FeatureNormStats, actions: FeatureNormStats, norm: str = "QUANTILES") -> Path:
    """A LeRobot policy dir's processor files: preprocessor normalizer (step 2) and postprocessor unnormalizer."""
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, npt.NDArray[np.float32]] = {}
    for key, feat in (("observation.state", state), ("action", actions)):
        for stat in feat.present():
            value = feat.get(stat)
            assert value is not None
            tensors[f"{key}.{stat}"] = value.astype(np.float32)
    norm_map = {"VISUAL": "IDENTITY", "STATE": norm, "ACTION": norm}
    feats = {"observation.state": {"type": "STATE", "shape": [state.dim]},
             "action": {"type": "ACTION", "shape": [actions.dim]}}
    steps: list[dict[str, Any]] = [{"registry_name": "rename_observations_processor", "config": {}},
                                   {"registry_name": "to_batch_processor", "config": {}}]
    steps.append({"registry_name": "normalizer_processor",
                  "config": {"eps": 1e-8, "features": feats, "norm_map": norm_map},
                  "state_file": "policy_preprocessor_step_2_normalizer_processor.safetensors"})
    (root / "policy_preprocessor.json").write_text(json.dumps({"name": "policy_preprocessor", "steps": steps}))
    save_file(tensors, str(root / "policy_preprocessor_step_2_normalizer_processor.safetensors"))
    post = {k: v for k, v in tensors.items() if k.startswith("action.")}
    save_file(post, str(root / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
    (root / "policy_postprocessor.json").write_text(json.dumps({"name": "policy_postprocessor", "steps": [
        {"registry_name": "unnormalizer_processor",
         "config": {"eps": 1e-8, "features": {"action": feats["action"]}, "norm_map": norm_map},
         "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors"}]}))
    return root


def feature(**stats: F64) -> FeatureNormStats:
    return FeatureNormStats.from_mapping({k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}, "test")


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = main(list(argv), out=out)
    return rc, out.getvalue()


def test_clean_dataset_and_matching_checkpoint_pass_the_doctor(tmp_path: Path) -> None:
    eps = yam_episodes()
    ds = write_lerobot(tmp_path / "ds", eps)
    stats = computed_stats(ds, YAM_MASK, horizon=10)
    ckpt = openpi_checkpoint(tmp_path / "ckpt", stats.feature("state"), stats.feature("actions"),
                             policy_config(mask=YAM_MASK, horizon=10))
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 0, out
    assert "ERROR" not in out and "WARNING" not in out, out
