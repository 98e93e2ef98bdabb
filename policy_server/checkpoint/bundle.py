"""A servable checkpoint directory: weights + config.json + norm stats + tokenizer + policy_config.json.

Tests, benchmarks and the bundled demo policy all produce their checkpoints through this, in the same layouts
users bring (openpi: `assets/<asset_id>/norm_stats.json`; LeRobot: processor pipelines with stats safetensors),
so serving is always exercised through the real loaders.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from policy_norm.formats import write_openpi_norm_stats
from policy_norm.lerobot_processor import write_lerobot_processor_stats
from policy_norm.stats import FeatureNormStats, NormStats, StatsSource
from policy_server.checkpoint.writer import WriteOptions, write_checkpoint
from policy_server.model.pi05 import Pi05Model
from policy_server.policy_config import FILE_NAME, Pi05PolicyConfig

TOKENIZER_PATH = "assets/tokenizer.model"


def write_servable_checkpoint(
    model: Pi05Model,
    directory: Path,
    *,
    state_stats: FeatureNormStats,
    action_stats: FeatureNormStats,
    policy_config: Pi05PolicyConfig,
    tokenizer_model: bytes,
    options: WriteOptions | None = None,
    asset_id: str = "yam",
) -> Path:
    """Write everything `serve --checkpoint` needs; returns the directory."""
    options = options or WriteOptions()
    norm = policy_config.normalization
    mode = norm.mode
    if mode is None:
        raise ValueError("policy_config.normalization.mode must be explicit when writing a checkpoint")
    write_checkpoint(model, directory, replace(options, robot_state_dim=norm.state_dim,
                                               robot_action_dim=norm.action_dim))
    if options.layout == "openpi":
        write_openpi_norm_stats(directory / "assets" / asset_id / "norm_stats.json", state_stats, action_stats)
        norm = replace(norm, asset_id=asset_id)
    else:
        stats = NormStats(state=state_stats, actions=action_stats, source=StatsSource("written", str(directory)))
        write_lerobot_processor_stats(directory, stats, mode)
    (directory / TOKENIZER_PATH).parent.mkdir(parents=True, exist_ok=True)
    (directory / TOKENIZER_PATH).write_bytes(tokenizer_model)
    replace(policy_config, normalization=norm, tokenizer=TOKENIZER_PATH).save(directory / FILE_NAME)
    return directory
