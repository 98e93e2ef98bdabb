"""`python -m calibration check` on real dataset files: the sample dataset is clean against the sim rig, and each
injected mismatch is flagged with its exit code and the joint, camera or field named.

Fixture datasets are LeRobot v3.0 written with robodata.lerobot_writer (PNG image columns, 32x24 frames so
writing costs nothing) from the sample generator's numbers (replay.make_sample_dataset: 2 episodes of 60..70
frames at 30 fps, the state trailing the action by 2 frames = 67 ms). They run against the bundled
bimanual_yam config plus [[camera]] tables for top and left_wrist at 32x24, and a complete calibration file
(zero offsets, gripper ranges, 32x24 intrinsics, command-to-motion latency 60 ms), so the baseline is clean
(exit 0) and each test changes one thing. Expected: 0..100 gripper, a start pose beyond a limit, renamed
joints, a missing camera, a different aspect ratio and a different fps are errors (exit 2); an inverted or
never-closing gripper, the same aspect ratio at another size, and a lag more than max(50 ms, 1 frame) from the
calibration's latency are warnings (exit 1).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calibration import check_cli
from replay.make_sample_dataset import JOINT_NAMES, SampleConfig, generate_episodes
from robodata.lerobot_writer import CameraFeature, EpisodeData, LeRobotWriterConfig, write_lerobot_dataset
from robot_client.calfile import (
    CameraCalibration,
    GripperRange,
    JointZero,
    Latency,
    Measured,
    RigCalibration,
    now_iso,
    save_calibration,
)
from robot_client.config import CONFIG_DIR, load_robot_config

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_yam"
H, W = 24, 32
CONFIG = load_robot_config("bimanual_yam")
EPISODES = generate_episodes(SampleConfig(num_episodes=2, min_length=60, max_length=70))


def _dataset(root: Path, *, states: list[np.ndarray] | None = None, actions: list[np.ndarray] | None = None,
             cameras: tuple[tuple[str, int, int], ...] = (("top", H, W), ("left_wrist", H, W)), fps: int = 30,
             names: tuple[str, ...] = JOINT_NAMES) -> Path:
    specs = tuple(CameraFeature(n, h, w) for n, h, w in cameras)
    episodes = []
    for i, ep in enumerate(EPISODES):
        s = ep.states if states is None else states[i]
        a = ep.actions if actions is None else actions[i]
        images = {c.name: np.full((len(s), c.height, c.width, 3), 40 * i, dtype=np.uint8) for c in specs}
        episodes.append(EpisodeData(ep.task, s, a, images))
    config = LeRobotWriterConfig(fps=fps, state_names=names, action_names=names, cameras=specs,
                                 camera_storage="image", robot_type="bi_yam")
    return write_lerobot_dataset(root, config, episodes)


def _scaled(column: int, scale: float, offset: float = 0.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    states, actions = [], []
    for ep in EPISODES:
        s, a = ep.states.copy(), ep.actions.copy()
        s[:, column] = s[:, column] * scale + offset
        a[:, column] = a[:, column] * scale + offset
        states.append(s)
        actions.append(a)
    return states, actions


@pytest.fixture(scope="module")
def rig_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A robot config with the two cameras at 32x24, and a complete calibration for it."""
    root = tmp_path_factory.mktemp("rig")
    config = root / "rig.toml"
    config.write_text((CONFIG_DIR / "bimanual_yam.toml").read_text() + "".join(
        f'\n[[camera]]\nname = "{n}"\ndevice = {i}\nwidth = {W}\nheight = {H}\nfps = 30\n'
        for i, n in enumerate(("top", "left_wrist"))))
    measured = Measured(now_iso(), "test fixture")
    intrinsics = CameraCalibration(W, H, np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]]), np.zeros(5), 0.2,
                                   measured)
    cal = RigCalibration(
        rig="bimanual_yam",
        zero={a.name: JointZero({j: 0.0 for j in a.joints}, measured) for a in CONFIG.arms},
        gripper={a.name: GripperRange(0.0, -6.5, measured) for a in CONFIG.arms},
        cameras={"top": intrinsics, "left_wrist": intrinsics},
        latency=Latency(60.0, {"top": 40.0, "left_wrist": 35.0}, measured),
    )
    save_calibration(cal, root / "cal.toml")
    return config, root / "cal.toml"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset(tmp_path_factory.mktemp("data") / "base")


def _check(capsys: pytest.CaptureFixture[str], dataset: Path, rig_files: tuple[Path, Path] | None, *extra: str
           ) -> tuple[int, str]:
    argv = ["--dataset", str(dataset), *extra]
    if rig_files is not None:
        argv += ["--config", str(rig_files[0]), "--calibration", str(rig_files[1])]
    parser = argparse.ArgumentParser()
    check_cli.add_arguments(parser)
    code = check_cli.run(parser.parse_args(argv))
    return code, capsys.readouterr().out


def _lines(out: str, severity: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(severity.upper())]


def test_sample_dataset_is_clean_against_the_sim_rig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "check.md"
    code, out = _check(capsys, SAMPLE, None, "--robot", "sim", "--fps", "30", "--report", str(report))
    assert code == 0, out
    assert not _lines(out, "error") and not _lines(out, "warning")
    assert "camera_unused  camera right_wrist" in out  # the sim has a third camera the data does not use
    text = report.read_text()
    assert "Verdict: **clean** (exit 0)" in text and "| left_joint2 | 0 .. 3.66519 |" in text


def test_sample_dataset_against_the_bundled_real_rig_lacks_cameras(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(capsys, SAMPLE, None, "--robot", "yam")
    assert code == 2
    assert any("camera_missing  camera top" in line for line in _lines(out, "error"))


def test_fixture_dataset_is_clean(base: Path, rig_files: tuple[Path, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(capsys, base, rig_files, "--fps", "30")
    assert code == 0, out
    assert "latency_match" in out and "67 ms" in out


def test_gripper_in_percent_is_an_error(tmp_path: Path, rig_files: tuple[Path, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    states, actions = _scaled(6, 100.0)
    code, out = _check(capsys, _dataset(tmp_path / "d", states=states, actions=actions), rig_files)
    assert code == 2
    errors = _lines(out, "error")
    assert any("gripper_convention  action left_gripper" in e and "0..100" in e for e in errors), out
    assert not any("right_gripper" in e for e in errors)


@pytest.mark.parametrize(("scale", "offset", "code_name"), [(-1.0, 1.0, "gripper_inverted"),
                                                            (0.5, 0.5, "gripper_never_closes")])
def test_inverted_or_never_closing_gripper_is_a_warning(tmp_path: Path, rig_files: tuple[Path, Path],
                                                        capsys: pytest.CaptureFixture[str], scale: float,
                                                        offset: float, code_name: str) -> None:
    states, actions = _scaled(13, scale, offset)
    code, out = _check(capsys, _dataset(tmp_path / "d", states=states, actions=actions), rig_files)
    assert code == 1, out
    assert any(f"{code_name}" in w and "right_gripper" in w for w in _lines(out, "warning")), out


def test_start_pose_beyond_a_limit_is_an_error(tmp_path: Path, rig_files: tuple[Path, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    states = [ep.states.copy() for ep in EPISODES]
    states[1][:3, 1] = -0.3  # left_joint2's lower limit is 0
    code, out = _check(capsys, _dataset(tmp_path / "d", states=states), rig_files)
    assert code == 2
    assert any("start_pose_beyond_limits  episode 1 start left_joint2" in e for e in _lines(out, "error")), out
    assert any("range_beyond_limits  state left_joint2" in e for e in _lines(out, "error"))


def test_renamed_joints_are_an_error(tmp_path: Path, rig_files: tuple[Path, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    names = tuple(n.replace("left_joint1", "left_shoulder_pan") for n in JOINT_NAMES)
    code, out = _check(capsys, _dataset(tmp_path / "d", names=names), rig_files)
    assert code == 2
    assert any("joint_names  state names" in e and "left_shoulder_pan" in e and "left_joint1" in e
               for e in _lines(out, "error")), out


def test_renamed_camera_is_an_error(tmp_path: Path, rig_files: tuple[Path, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    cameras = (("overhead", H, W), ("left_wrist", H, W))
    code, out = _check(capsys, _dataset(tmp_path / "d", cameras=cameras), rig_files)
    assert code == 2
    assert any("camera_missing  camera overhead" in e for e in _lines(out, "error")), out
    assert "camera_unused  camera top" in out


@pytest.mark.parametrize(("size", "expected"), [((48, 64), 1), ((32, 32), 2)])
def test_other_resolution_is_flagged(tmp_path: Path, rig_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                                     size: tuple[int, int], expected: int) -> None:
    cameras = (("top", *size), ("left_wrist", H, W))
    code, out = _check(capsys, _dataset(tmp_path / "d", cameras=cameras), rig_files)
    assert code == expected, out
    severity = "warning" if expected == 1 else "error"
    assert any("camera_resolution  camera top" in line and f"{size[1]}x{size[0]}" in line
               for line in _lines(out, severity)), out
    assert any("calibration_camera_size  calibration camera.top" in w for w in _lines(out, "warning"))


def test_other_fps_is_an_error(tmp_path: Path, rig_files: tuple[Path, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(capsys, _dataset(tmp_path / "d", fps=15), rig_files, "--fps", "30")
    assert code == 2
    assert any("fps_mismatch  fps" in e and "15 fps" in e and "30 fps" in e for e in _lines(out, "error")), out
    # The rig's cameras (30 fps) are not slower than the data, so only the control rate is flagged.
    assert not any("camera_fps" in line for line in out.splitlines())


def test_lag_far_from_the_rig_latency_is_a_warning(base: Path, rig_files: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from robot_client.calfile import load_calibration

    cal = load_calibration(rig_files[1])
    assert cal.latency is not None
    slow = tmp_path / "slow.toml"
    save_calibration(replace(cal, latency=replace(cal.latency, command_to_motion_ms=250.0)), slow)
    code, out = _check(capsys, base, (rig_files[0], slow))
    assert code == 1, out
    warnings = _lines(out, "warning")
    assert any("latency_mismatch  latency.command_to_motion_ms" in w and "67 ms" in w and "250 ms" in w
               for w in warnings), out
