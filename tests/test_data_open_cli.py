"""open_dataset format detection and the `python -m replay info` command."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from replay.cli import main
from robodata.dataset import DatasetError
from robodata.lerobot_writer import EpisodeData, LeRobotWriterConfig, write_lerobot_dataset
from robodata.open import detect_format, open_dataset
from robodata.recording import RecordingSpec, RecordingWriter
from robodata.zarr_dp_writer import write_dp_zarr

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample_yam"


def _lerobot(root: Path) -> Path:
    cfg = LeRobotWriterConfig(fps=10, state_names=("a", "b"), action_names=("a", "b"))
    rng = np.random.default_rng(0)
    eps = [EpisodeData(task="t", states=rng.normal(size=(n, 2)), actions=rng.normal(size=(n, 2))) for n in (4, 6)]
    return write_lerobot_dataset(root, cfg, eps)


def _dp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_dp_zarr(path, [{"action": rng.normal(size=(n, 2)), "qpos": rng.normal(size=(n, 3))} for n in (3, 5)])


def _recording(path: Path) -> Path:
    spec = RecordingSpec(fps=20.0, state_names=("a",), action_names=("a",))
    with RecordingWriter(path, spec) as writer:
        writer.start_episode("wave")
        for i in range(5):
            writer.append(i * 0.05, [float(i)], [float(i)])
    return path  # leaving the `with` block ends the open episode as complete


def test_detects_every_format(tmp_path: Path) -> None:
    assert detect_format(_lerobot(tmp_path / "lr")) == "lerobot"
    assert detect_format(_dp(tmp_path / "dp.zarr")) == "dp-zarr"
    assert detect_format(_dp(tmp_path / "dp.zarr.zip")) == "dp-zarr"
    assert detect_format(_recording(tmp_path / "rec")) == "recording-zarr"
    assert open_dataset(tmp_path / "lr", episodes=[1]).episode_indices() == [1]
    assert open_dataset(tmp_path / "dp.zarr.zip", fps=50).info.fps == 50.0
    assert open_dataset(tmp_path / "dp.zarr", state_key="qpos").info.state_dim == 3
    assert open_dataset(tmp_path / "rec", include_incomplete=True).info.num_frames == 5


def test_unknown_path_lists_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"meta/info.json .*yam-recording.* meta/episode_ends"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="not a dataset this stack reads"):
        open_dataset(tmp_path / "notes.txt")
    with pytest.raises(DatasetError, match="no such file or directory"):
        open_dataset(tmp_path / "missing")


def test_options_are_checked(tmp_path: Path) -> None:
    root = _lerobot(tmp_path / "lr")
    with pytest.raises(DatasetError, match=r"option\(s\) \['fps'\] do not apply to a lerobot dataset"):
        open_dataset(root, fps=30)
    with pytest.raises(DatasetError, match="episodes must be a list of integers"):
        open_dataset(root, episodes=["x"])


def test_info_command_in_process(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["info", "--dataset", str(_dp(tmp_path / "dp.zarr")), "--episodes", "1"], out=out) == 0
    text = out.getvalue()
    assert "format    dp-zarr" in text and "reading 1 of 2 episodes" in text and "state_0" in text
    out = io.StringIO()
    assert main(["info", "--dataset", str(_recording(tmp_path / "rec"))], out=out) == 0
    assert "wave" in out.getvalue()


def test_info_command_on_sample_dataset() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "replay", "info", "--dataset", str(SAMPLE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "lerobot-v3.0" in text and "bi_yam" in text
    for name in ("left_joint1", "left_gripper", "right_joint6", "right_gripper"):
        assert name in text
    assert "pick up the red cube with the left arm" in text
    assert "top" in text and "240x320" in text and "q99" in text


def test_info_command_bad_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "replay", "info", "--dataset", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr
