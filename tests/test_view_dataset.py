"""`python -m replay view` on datasets: the written .rrd holds cameras, named joint series, the 3D arms and the
episode's text log; generic joint names skip the arms with a note; several episodes give one file each."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from replay.cli import main
from replay.view.rrd_read import read_rrd
from robodata.lerobot_writer import CameraFeature, EpisodeData, LeRobotWriterConfig, write_lerobot_dataset

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample_yam"


def _view(*argv: str) -> str:
    out = io.StringIO()
    assert main(["view", *argv, "--no-progress"], out=out) == 0
    return out.getvalue()


def test_sample_dataset_has_every_panel(tmp_path: Path) -> None:
    rrd = tmp_path / "sample.rrd"
    text = _view(str(SAMPLE), "--episode", "1", "--save", str(rrd), "--max-frames", "12")
    assert "episode 1: 12 frames" in text and str(rrd) in text
    content = read_rrd(rrd)
    assert content.recordings == ["sample_yam/episode_000001"] and content.blueprints == 1

    for cam in ("top", "left_wrist"):
        images = content[f"/cameras/{cam}"]
        assert len(images.values("EncodedImage:blob")) == 12
        assert images.values("EncodedImage:media_type")[0] == ["image/jpeg"]

    state = content["/joints/left_joint1/state"]
    assert state.static["SeriesLines:names"] == ["left_joint1 state"]
    assert len(state.values("Scalars:scalars")) == 12
    assert content["/joints/right_gripper/action"].static["SeriesLines:names"] == ["right_gripper action"]
    steps = content["/joints/right_gripper/action"].times("Scalars:scalars", "step")
    assert steps == list(range(12))
    seconds = content["/joints/right_gripper/action"].times("Scalars:scalars")
    np.testing.assert_allclose(seconds, np.arange(12) / 30.0, atol=1e-6)

    link6 = content["/robot/left_link6"]
    assert len(link6.values("Transform3D:translation")) == 12
    assert "Boxes3D:half_sizes" in content["/robot/left_link6/box"].static
    assert "Capsules3D:lengths" in content["/robot/left_link2/capsule"].static
    assert "/robot/table" in content and not any("cube" in p for p in content.under("/robot"))

    events = [t[0] for t in content["/events"].values("TextLog:text")]
    assert any(t.startswith("episode 1 (12 of") for t in events)


def test_generic_names_skip_the_arms_with_a_note(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cfg = LeRobotWriterConfig(fps=10, state_names=("a", "b"), action_names=("a", "b"),
                              cameras=(CameraFeature("cam", 16, 16),), camera_storage="image")
    images = {"cam": rng.integers(0, 255, size=(5, 16, 16, 3), dtype=np.uint8)}
    root = write_lerobot_dataset(tmp_path / "tiny", cfg, [
        EpisodeData("t", rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), images=images),
        EpisodeData("u", rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), images={"cam": images["cam"][:4]}),
    ])
    rrd = tmp_path / "tiny.rrd"
    text = _view(str(root), "--episode", "0", "1", "--save", str(rrd))
    assert "3D view skipped" in text
    first, second = tmp_path / "tiny_episode_000000.rrd", tmp_path / "tiny_episode_000001.rrd"
    content = read_rrd(first)
    assert content["/joints/b/state"].static["SeriesLines:names"] == ["b state"]
    assert len(content["/joints/a/action"].values("Scalars:scalars")) == 5
    assert len(content["/cameras/cam"].values("EncodedImage:blob")) == 5
    assert not content.under("/robot")
    assert any("3D view skipped" in t[0] for t in content["/events"].values("TextLog:text"))
    assert len(read_rrd(second)["/joints/a/action"].values("Scalars:scalars")) == 4


def test_default_sink_is_a_file_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = _view(str(SAMPLE), "--max-frames", "3", "--no-robot")
    assert (tmp_path / "sample_yam.rrd").is_file() and "rerun " in text
    assert not read_rrd(tmp_path / "sample_yam.rrd").under("/robot")


def test_bad_episode_and_bad_address_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(SAMPLE), "--episode", "99", "--save", str(tmp_path / "x.rrd")]) == 2
    assert "episodes [99] not readable" in capsys.readouterr().err
    assert main(["view", str(SAMPLE), "--connect", "nowhere", "--max-frames", "1"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
