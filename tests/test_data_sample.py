"""The committed sample dataset (data/sample_yam): small, realistic, readable, and regenerable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from replay.make_sample_dataset import (
    JOINT_NAMES,
    LOWER,
    TASKS,
    UPPER,
    SampleConfig,
    generate_episodes,
    main,
)
from robodata.open import open_dataset

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_yam"
MAX_BYTES = 10 * 1024 * 1024


def test_sample_is_small() -> None:
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert 0 < size < MAX_BYTES, f"sample dataset is {size / 1e6:.2f} MB"


def test_sample_contents() -> None:
    ds = open_dataset(SAMPLE)
    info = ds.info
    assert info.format == "lerobot-v3.0" and info.robot_type == "bi_yam" and info.fps == 30
    assert info.state_names == JOINT_NAMES == info.action_names
    assert JOINT_NAMES[0] == "left_joint1" and JOINT_NAMES[6] == "left_gripper" and JOINT_NAMES[13] == "right_gripper"
    assert info.tasks == TASKS
    assert [(c.name, c.height, c.width) for c in info.cameras] == [("top", 240, 320), ("left_wrist", 240, 320)]
    assert info.num_episodes == 4 and info.notes == ()
    assert info.stats is not None and "q01" in info.stats["action"]
    for i in ds.episode_indices():
        ep = ds.episode(i)
        assert 120 <= len(ep) <= 150
        assert np.all(ep.states >= LOWER.astype(np.float32)) and np.all(ep.states <= UPPER.astype(np.float32))
        assert np.all(ep.actions >= LOWER.astype(np.float32)) and np.all(ep.actions <= UPPER.astype(np.float32))
        # The state tracks the command two frames late (plus a few mrad of noise).
        lag_err = np.abs(ep.states[2:] - ep.actions[:-2])
        assert float(np.median(lag_err)) < 0.005
    assert {ds.episode(i).task for i in ds.episode_indices()} == set(TASKS)


def test_sample_video_decodes_and_moves() -> None:
    ds = open_dataset(SAMPLE, episodes=[1])
    ep = ds.episode(1)
    for cam in ("top", "left_wrist"):
        frames = ep.images(cam)
        assert frames.shape == (len(ep), 240, 320, 3)
        steps = np.abs(np.diff(frames[::10].astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
        assert np.count_nonzero(steps > 0.2) >= len(steps) // 2, f"{cam} barely changes: {steps}"


def test_numeric_data_regenerates_identically() -> None:
    table = pq.read_table(SAMPLE / "data/chunk-000/file-000.parquet")
    episodes = generate_episodes(SampleConfig())
    ds = open_dataset(SAMPLE)
    assert len(episodes) == len(ds)
    for i, src in enumerate(episodes):
        stored = ds.episode(i)
        np.testing.assert_array_equal(stored.states, src.states)
        np.testing.assert_array_equal(stored.actions, src.actions)
        assert stored.task == src.task
    assert table.num_rows == sum(len(e.actions) for e in episodes)


def test_script_regenerates_identical_files(tmp_path: Path) -> None:
    """Running the script again gives the same parquet rows and the same stats (mpeg4 here, for speed;
    the image stats are computed from the rendered frames, before encoding, so they match too)."""
    out = tmp_path / "sample"
    assert main(["--out", str(out), "--codec", "mpeg4"]) == 0
    for rel in ("data/chunk-000/file-000.parquet", "meta/tasks.parquet"):
        assert pq.read_table(out / rel).equals(pq.read_table(SAMPLE / rel)), rel
    assert json.loads((out / "meta/stats.json").read_text()) == json.loads((SAMPLE / "meta/stats.json").read_text())
    new_info = json.loads((out / "meta/info.json").read_text())
    old_info = json.loads((SAMPLE / "meta/info.json").read_text())
    for info in (new_info, old_info):
        for key in ("observation.images.top", "observation.images.left_wrist"):
            info["features"][key].pop("info")
    assert new_info == old_info


@pytest.mark.parametrize("seed", [1, 2])
def test_other_seeds_stay_in_limits(seed: int) -> None:
    for ep in generate_episodes(SampleConfig(seed=seed)):
        assert np.all(ep.states >= LOWER.astype(np.float32)) and np.all(ep.states <= UPPER.astype(np.float32))
        assert ep.states.shape == ep.actions.shape and ep.states.shape[1] == 14
