"""Shared helpers for tests that talk to a real policy server over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
from policy_server.server import PolicyServer, ServerConfig
from robodata.dataset import Dataset
from robodata.open import open_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATASET = REPO_ROOT / "data" / "sample_yam"


def sample_dataset() -> Dataset:
    return open_dataset(SAMPLE_DATASET)


def observation_for(dataset: Dataset, episode: int, step: int, *, images: bool = True) -> dict[str, Any]:
    """The dataset's own observation at (episode, step), in the client dict convention."""
    ep = dataset.episode(episode)
    frame = ep.frame(step, with_images=images)
    obs: dict[str, Any] = {
        "state": frame.state.copy(),
        "prompt": frame.task,
        "timestamp": float(frame.timestamp),
        "episode_index": episode,
        "step_index": step,
    }
    if images:
        obs["images"] = {k: v.copy() for k, v in frame.images.items()}
    return obs


def blank_images(dataset: Dataset) -> dict[str, np.ndarray]:
    return {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in dataset.info.cameras}


@contextmanager
def running_server(
    dataset_path: Path = SAMPLE_DATASET, *, horizon: int = 50, **config: Any
) -> Iterator[PolicyServer]:
    policy = DatasetPolicy(DatasetPolicyConfig(dataset=dataset_path, action_horizon=horizon))
    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=config.pop("port", 0), **config))
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=0.2)
