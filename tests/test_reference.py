"""`replay compare-reference` on datasets LeRobot 0.6.1 wrote: the clean dataset against itself is clean; the
dataset whose frames were handed to LeRobot as BGR (red and blue exchanged, metadata saying RGB) is named per
camera; a dataset at another resolution, fps and unit is named too."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from replay.cli import main
from replay.reference import CameraStats, ReferenceOptions, SourceSummary, camera_stats, compare

GOLDEN = Path(__file__).resolve().parent / "golden" / "lerobot" / "datasets"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


def _compare(dataset: str, reference: str, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["compare-reference", "--dataset", str(GOLDEN / dataset), "--reference", str(GOLDEN / reference),
                 "--max-episodes", "2", "--frames-per-episode", "8", *extra], out)
    return code, out.getvalue()


def test_clean_against_itself_is_clean() -> None:
    code, text = _compare("clean", "clean")
    assert code == 0, text
    assert "ERROR" not in text and "WARNING" not in text


def test_rb_swap_is_named_per_camera() -> None:
    code, text = _compare("rb_swap", "clean")
    assert code == 2
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert len(errors) == len(MANIFEST["clean"]["cameras"])
    for camera in MANIFEST["clean"]["cameras"]:
        line = next(e for e in errors if f"camera {camera}:" in e)
        assert "camera_channel_order" in line and "red and blue look exchanged" in line
    # The numbers are the same recording's: nothing else differs.
    assert "WARNING" not in text


def _summary(label: str, frames: np.ndarray, fps: float, states: np.ndarray, size: tuple[int, int]) -> SourceSummary:
    names = ("left_joint1", "left_gripper")
    cams = {"top": CameraStats("top", size[0], size[1], camera_stats(frames), len(frames))}
    rng = np.percentile(states, [1, 99], axis=0)
    return SourceSummary(label, label, fps, cams, names, names, rng, rng, states[:3])


def test_resolution_fps_and_units_are_named() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 24, 32, 3), dtype=np.uint8)
    states = np.stack([rng.uniform(-1.0, 1.0, 200), rng.uniform(0, 1, 200)], axis=1)
    ref = _summary("ref", frames, 30.0, states, (24, 32))
    degrees = states * np.array([180 / np.pi, 1.0])
    data = _summary("data", frames, 15.0, degrees, (48, 64))
    found = compare(data, ref, ReferenceOptions())
    findings = {f.code: f for f in found}
    assert findings["fps"].message == "15 fps vs the reference's 30"
    assert findings["camera_resolution"].message == "64x48 vs the reference's 32x24"
    units = [f for f in found if f.code == "joint_range_unit"]
    assert [f.where for f in units] == ["state left_joint1", "action left_joint1"]  # not the gripper
    assert all(f.severity == "error" and "degrees" in f.message for f in units)
    assert "camera_channel_order" not in findings  # random colours have no red/blue asymmetry to go by
