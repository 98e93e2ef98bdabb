"""Servable dummy Pi0.5 checkpoints (random weights, real stats of the sample dataset, a real tokenizer)."""

from __future__ import annotations

from pathlib import Path

from policy_norm.config import NormalizationConfig
from policy_norm.numeric import make_bool_mask
from policy_server.checkpoint.bundle import write_servable_checkpoint
from policy_server.checkpoint.writer import WriteOptions
from policy_server.model.config import Pi05Config
from policy_server.policy_config import Pi05PolicyConfig
from policy_server.tokenizer_build import build_sentencepiece_model_bytes
from replay.stats_tool import StatsRequest, compute_norm_stats
from robot_client.yam_limits import yam_limits
from tests.model_helpers import random_model
from tests.wire_helpers import sample_dataset

DELTA_MASK = make_bool_mask(6, -1, 6, -1)


def policy_config_for(cfg: Pi05Config, names: tuple[str, ...], **norm_changes: object) -> Pi05PolicyConfig:
    norm = NormalizationConfig(
        state_names=names, action_names=names, action_delta_mask=DELTA_MASK, model_state_dim=cfg.action_dim,
        model_action_dim=cfg.action_dim, mode="quantile", action_horizon=cfg.action_horizon,
        **{"joint_limits": yam_limits(names), **norm_changes},  # type: ignore[arg-type]
    )
    return Pi05PolicyConfig(cameras={"top": cfg.image_keys[0], "left_wrist": cfg.image_keys[1]}, normalization=norm,
                            control_fps=30.0)


def make_servable_checkpoint(directory: Path, layout: str = "openpi", seed: int = 0, preset_name: str = "dummy",
                             model_changes: dict[str, object] | None = None, **norm_changes: object) -> Path:
    """`model_changes` change the preset's model config (the first two image slots get the dataset's cameras)."""
    model = random_model(preset_name, seed=seed, **(model_changes or {}))
    ds = sample_dataset()
    stats = compute_norm_stats(ds, StatsRequest(delta_mask=DELTA_MASK, action_horizon=model.cfg.action_horizon,
                                                progress=False))
    config = policy_config_for(model.cfg, ds.info.state_names, **norm_changes)
    if layout == "lerobot":
        config = Pi05PolicyConfig(
            cameras={"top": f"observation.images.{model.cfg.image_keys[0]}",
                     "left_wrist": f"observation.images.{model.cfg.image_keys[1]}"},
            normalization=config.normalization, control_fps=30.0,
        )
    return write_servable_checkpoint(
        model, directory, state_stats=stats.feature("state"), action_stats=stats.feature("actions"),
        policy_config=config, tokenizer_model=build_sentencepiece_model_bytes(vocab_size=model.cfg.vocab_size),
        options=WriteOptions(layout=layout),  # type: ignore[arg-type]
    )
