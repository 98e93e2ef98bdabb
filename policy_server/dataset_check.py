"""`serve --checkpoint DIR --dataset PATH`: check the dataset the robot will reproduce against the checkpoint's
norm stats before serving (the startup self-test of the normalization package), and refuse on a mismatch.

This is the seed failure of this stack: a checkpoint whose stats do not describe the data (never normalized,
stats of another dataset, double normalization) makes the first action fly. Refusing needs an explicit
`--allow-stats-mismatch`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from policy_norm.pipeline import NormalizationPipeline
from policy_norm.selftest import SelfTestResult, startup_selftest
from robodata.open import open_dataset

log = logging.getLogger(__name__)
MAX_EPISODES = 50


def check_dataset_against_policy(
    pipeline: NormalizationPipeline, dataset: Path, *, allow_mismatch: bool, max_episodes: int = MAX_EPISODES
) -> SelfTestResult:
    """Normalize (a sample of) the dataset with the serving pipeline; raises SelfTestError unless it fits."""
    ds = open_dataset(dataset)
    indices = ds.episode_indices()[:max_episodes]
    episodes = [ds.episode(i) for i in indices]
    result = startup_selftest(pipeline, episodes, allow_data_mismatch=allow_mismatch)
    if result.data is not None and not result.data.ok:
        log.warning("serving although %s does not fit the checkpoint's stats (--allow-stats-mismatch):\n%s",
                    dataset, result.data.summary())
    else:
        log.info("dataset %s (%d episodes checked) fits the checkpoint's norm stats", dataset, len(episodes))
    return result
