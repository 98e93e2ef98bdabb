"""`python -m robot_client run` as a real process against a real server: sim, dry run, recording read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
from policy_server.server import PolicyServer, ServerConfig
from replay.open import open_dataset
from replay.recording import RecordingDataset
from tests.wire_helpers import REPO_ROOT, SAMPLE_DATASET


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robot_client", "run", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})


def test_run_sim_records_a_readable_episode(tmp_path: Path) -> None:
    policy = DatasetPolicy(DatasetPolicyConfig(dataset=SAMPLE_DATASET, action_horizon=30))
    with PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)) as server:
        out = tmp_path / "run.zarr"
        result = _run(["--server", f"127.0.0.1:{server.port}", "--robot", "sim", "--seconds", "2.0",
                       "--allow-far-start", "--prompt", "pick up the red cube with the left arm",
                       "--record", str(out), "--compare-dataset", str(SAMPLE_DATASET)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "episode 0:" in result.stdout and "vs demo ep" in result.stdout
    recording = open_dataset(out)
    assert isinstance(recording, RecordingDataset)
    index = recording.episode_indices()[0]
    episode = recording.episode(index)
    # One frame per policy step (30 fps) over the run, with images and regular timestamps.
    assert episode.length >= 45
    np.testing.assert_allclose(np.diff(episode.timestamps), 1 / 30, atol=0.006)
    assert set(episode.camera_names) == {"top", "left_wrist"}
    assert episode.images("top").shape[1:] == (240, 320, 3)
    extras = recording.extras(index)
    assert {"commanded", "chunk", "chunk_new", "chunk_delay_s", "holding", "norm_state_min", "live_ref",
            "live_chunk_l1"} <= set(extras)
    new = extras["chunk_new"][:, 0]
    assert new.sum() >= 3
    assert np.isfinite(extras["chunk"][new]).all() and np.isnan(extras["chunk"][~new]).all()
    assert (extras["live_ref"][new] >= 0).all()
    # The dataset policy's chunks come from the same dataset: the live comparison finds near-zero error.
    assert np.nanmedian(extras["live_chunk_l1"][new]) < 0.05


def test_real_arms_need_explicit_confirmation() -> None:
    result = _run(["--server", "127.0.0.1:1", "--robot", "yam"])
    assert result.returncode == 2
    assert "refusing to move real arms" in result.stderr
