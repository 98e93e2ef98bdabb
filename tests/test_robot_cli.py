"""`python -m robot_client run` as a real process against a real server: sim, dry run, recording read back."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
from policy_server.server import PolicyServer, ServerConfig
from replay.cli import main as replay_main
from replay.view.rrd_read import read_rrd
from robodata.open import open_dataset
from robodata.recording import RecordingDataset
from tests.wire_helpers import REPO_ROOT, SAMPLE_DATASET


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robot_client", "run", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})


@dataclass(frozen=True)
class RecordedRun:
    result: subprocess.CompletedProcess[str]
    recording: Path
    rrd: Path


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    """One 2 s closed-loop run in the sim against the dataset policy, recorded and logged live to an .rrd."""
    root = tmp_path_factory.mktemp("run")
    policy = DatasetPolicy(DatasetPolicyConfig(dataset=SAMPLE_DATASET, action_horizon=30))
    with PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)) as server:
        result = _run(["--server", f"127.0.0.1:{server.port}", "--robot", "sim", "--seconds", "2.0",
                       "--allow-far-start", "--prompt", "pick up the red cube with the left arm",
                       "--record", str(root / "run.zarr"), "--compare-dataset", str(SAMPLE_DATASET),
                       "--rerun-save", str(root / "live.rrd")])
    assert result.returncode == 0, result.stderr[-3000:]
    return RecordedRun(result, root / "run.zarr", root / "live.rrd")


def test_run_sim_records_a_readable_episode(recorded_run: RecordedRun) -> None:
    result, out = recorded_run.result, recorded_run.recording
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


def test_live_view_is_logged_and_reads_back(recorded_run: RecordedRun) -> None:
    summary = next(line for line in recorded_run.result.stdout.splitlines() if line.startswith("live view:"))
    assert "dropped" not in summary and "logging errors" not in summary, summary
    content = read_rrd(recorded_run.rrd)
    # ~29 Hz of the 200 Hz servo loop over 2 s, the chunks as fans, both cameras, the episode-start event.
    assert len(content["/joints/left_joint2/state"].values("Scalars:scalars")) >= 40
    assert content.under("/chunks/left_joint2/chunk")
    assert content.under("/cameras/top") and content.under("/cameras/left_wrist")
    events = [row[0] for row in content["/events"].values("TextLog:text")]
    assert any(e.startswith("episode 0 starts") for e in events)


def test_recording_replays_in_sim_and_passes_the_oracle(recorded_run: RecordedRun, tmp_path: Path) -> None:
    """A live run's recording is a dataset like any other: its actions replay on the sim arms through the same
    guard and servo, and served by the dataset policy it reproduces itself exactly under the oracle."""
    out = io.StringIO()
    code = replay_main(["sim", "--dataset", str(recorded_run.recording), "--episode", "0", "--allow-far-start",
                        "--no-plots", "--max-gripper-error", "0.7", "--out", str(tmp_path / "sim")], out)
    assert code == 0, out.getvalue()
    assert "result: PASS" in out.getvalue()
    policy = DatasetPolicy(DatasetPolicyConfig(dataset=recorded_run.recording, action_horizon=10))
    with PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)) as server:
        out = io.StringIO()
        code = replay_main(["oracle", "--dataset", str(recorded_run.recording), "--server",
                            f"127.0.0.1:{server.port}", "--no-plots", "--no-progress", "--fail-above", "1e-6",
                            "--out", str(tmp_path / "oracle")], out)
    assert code == 0, out.getvalue()


def test_real_arms_need_explicit_confirmation() -> None:
    result = _run(["--server", "127.0.0.1:1", "--robot", "yam"])
    assert result.returncode == 2
    assert "refusing to move real arms" in result.stderr
