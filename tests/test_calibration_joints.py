"""`python -m calibration joints` and the driver applying its result, on emulated Damiao motors over python-can
virtual buses and real calibration files.

Stated tolerance: injected zero offsets are recovered within 1e-3 rad per joint (the feedback quantization is
3.8e-4 rad, so a motor at rest reads within 1.9e-4 of its true value; averaging does not add error). Joint angles
reported by YamRobot with the calibration applied match the physical angles within 2e-3 rad.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from calibration import gripper_cli, joints_cli
from robot_client.calfile import (
    GripperRange,
    JointZero,
    Measured,
    RigCalibration,
    load_calibration,
    now_iso,
    save_calibration,
)
from robot_client.config import load_robot_config
from robot_client.yam.arm import YamOptions
from robot_client.yam.driver import YamRobot
from robot_client.yam.emulator import gravity_load
from robot_client.yam.gripper import GripperCalibrationError
from robot_client.yam.rig_calibration import RigCalibrationError
from tests.calibration_arm_helpers import SLOW_BUS, Bench, bench, run_cli

TOLERANCE = 1e-3
OFFSETS = {
    "left": [0.12, -0.31, 0.05, 0.41, -0.22, 0.003],
    "right": [-0.08, 0.27, -0.44, 0.0, 0.19, -0.35],
}
FAST = ("--samples", "20", "--interval", "0", *SLOW_BUS)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Bench]:
    yield from bench(tmp_path, calibration="rig_cal.toml")


def _inject(rig: Bench, offsets: dict[str, list[float]]) -> None:
    for arm, values in offsets.items():
        ids = rig.ids(arm)
        for i, value in enumerate(values):
            rig.emus[arm].set_position_offset(ids[f"{arm}_joint{i + 1}"], value)
    for arm in offsets:  # the grippers' zero is arbitrary too; the joint procedure must ignore it
        rig.emus[arm].set_position_offset(rig.ids(arm)[f"{arm}_gripper"], 2.5)


def _cal_path(rig: Bench) -> Path:
    return rig.config_path.parent / "rig_cal.toml"


def _joints(rig: Bench, *extra: str) -> tuple[int, str, str]:
    return run_cli(joints_cli, "--config", str(rig.config_path), "--yes", *FAST, *extra)


def test_recovers_injected_offsets_without_moving_anything(rig: Bench) -> None:
    _inject(rig, OFFSETS)
    code, out, err = _joints(rig)
    assert code == 0, err
    cal = load_calibration(_cal_path(rig))  # the path came from the config's [robot] calibration
    assert cal.rig == "bimanual_yam" and "readings averaged" in cal.zero["left"].measured.method
    errors = [abs(cal.zero[arm].offsets[f"{arm}_joint{i + 1}"] - v) for arm, vs in OFFSETS.items()
              for i, v in enumerate(vs)]
    assert max(errors) < TOLERANCE, errors
    assert set(cal.zero["left"].offsets) == {f"left_joint{i}" for i in range(1, 7)}  # no gripper offset
    assert "left_joint4" in out and "wrote zero offsets" in out
    for emu in rig.emus.values():  # read limp: watchdog set, then only disable frames; nothing energized
        assert {e.kind for e in emu.frame_log()} == {"register_write", "disable"}
        for mid in range(1, 8):
            assert emu.snapshot(mid).physical_position == 0.0 and not emu.snapshot(mid).enabled


def test_waits_for_the_operator_and_aborts_on_q(rig: Bench) -> None:
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return "q"

    code, out, _ = run_cli(joints_cli, "--config", str(rig.config_path), *FAST, ask=ask)
    assert code == 1 and prompts and "ZERO POSE" in out and "aborted" in out
    assert not _cal_path(rig).exists()
    assert all(emu.frame_count() == 0 for emu in rig.emus.values())


def test_refuses_a_joint_far_from_zero_and_names_it(rig: Bench) -> None:
    _inject(rig, OFFSETS)
    rig.emus["left"].set_position(rig.ids("left")["left_joint4"], 0.9)  # wrist turned, not at the zero pose
    code, _, err = _joints(rig)
    assert code == 1
    assert re.search(r"left_joint4: reads \+1\.310\d rad at the zero pose, beyond \+-0\.5", err), err
    assert "left_joint3" not in err
    assert not _cal_path(rig).exists()  # nothing written, not even the arms that passed


def test_check_passes_after_calibration_and_names_a_joint_that_moved(rig: Bench) -> None:
    _inject(rig, OFFSETS)
    assert _joints(rig, "--arm", "left")[0] == 0
    before = _cal_path(rig).read_bytes()
    code, out, err = _joints(rig, "--arm", "left", "--check")
    assert code == 0, err
    assert "check passed" in out and out.count(" ok") == 6
    rig.emus["left"].set_position_offset(rig.ids("left")["left_joint2"], OFFSETS["left"][1] + 0.05)
    code, out, err = _joints(rig, "--arm", "left", "--check")
    assert code == 1
    assert re.search(r"left_joint2 reads \+0\.0[45]\d\d rad at the zero pose", out + err), out + err
    assert "left_joint1 reads" not in out + err
    assert _cal_path(rig).read_bytes() == before  # --check writes nothing


def test_check_without_offsets_for_the_arm_is_a_usage_error(rig: Bench) -> None:
    assert _joints(rig, "--arm", "left")[0] == 0
    code, _, err = _joints(rig, "--arm", "right", "--check")
    assert code == 2 and "no zero offsets for arms ['right']" in err


def test_yam_robot_reports_angles_corrected_by_the_offsets(rig: Bench, caplog: pytest.LogCaptureFixture) -> None:
    _inject(rig, OFFSETS)
    assert _joints(rig)[0] == 0
    for arm in ("left", "right"):
        assert run_cli(gripper_cli, "--config", str(rig.config_path), "--arm", arm, "--pin", "2.5", "-4.07")[0] == 0
    physical = {"left_joint1": 0.3, "left_joint3": 0.6, "left_joint5": -0.4, "right_joint2": 0.8}
    for name, q in physical.items():
        arm = name.split("_")[0]
        rig.emus[arm].set_position(rig.ids(arm)[name], q)
    caplog.set_level(logging.INFO, logger="robot_client.yam.rig_calibration")
    config = load_robot_config(rig.config_path)
    for arm_cfg in config.arms:  # the arms carry their gravity, which the driver's feed-forward cancels
        rig.emus[arm_cfg.name].set_load(gravity_load(arm_cfg, arm_cfg.gravity_factors, (2.5, -4.07)))
    robot = YamRobot(config, options=YamOptions(reply_timeout_s=0.1))
    try:
        robot.connect()
        robot.enable()
        state = robot.read_state()
        expected = np.array([physical.get(n, 0.0) for n in robot.joint_names])
        expected[[6, 13]] = 0.0  # grippers physically at 0 = motor 2.5 = the pinned closed position
        np.testing.assert_allclose(state.positions, expected, atol=2e-3)
        target = expected.copy()
        target[0], target[9] = 0.1, 0.5  # left_joint1, right_joint3
        robot.command(target)  # the driver's sender carries it: 300 frames of emulated motion
        for emu in rig.emus.values():
            emu.wait_for_frames(300)
        assert rig.emus["left"].snapshot(1).physical_position == pytest.approx(0.1, abs=0.02)
        assert rig.emus["right"].snapshot(3).physical_position == pytest.approx(0.5, abs=0.02)
        command = rig.emus["right"].snapshot(3).command  # motor target = joint target + offset
        assert command is not None and command.position == pytest.approx(0.5 + OFFSETS["right"][2], abs=1e-3)
    finally:
        robot.close()
    assert "left_gripper: gripper limits closed=2.500 open=-4.070 from" in caplog.text
    assert "arm 'left': zero offsets from" in caplog.text


def test_a_file_that_does_not_fit_refuses_before_any_frame(rig: Bench) -> None:
    stamp = Measured(now_iso(), "test")
    offsets = {f"left_joint{i}": 0.0 for i in range(1, 7)} | {"left_joint7": 0.0}
    save_calibration(RigCalibration("bimanual_yam", zero={"left": JointZero(offsets, stamp)},
                                    gripper={"left": GripperRange(0.0, -0.2, stamp)}), _cal_path(rig))
    robot = YamRobot(load_robot_config(rig.config_path))
    with pytest.raises(RigCalibrationError, match=r"rig_cal.toml does not fit.*nothing was moved") as info:
        robot.connect()
    assert "left_joint7" in str(info.value) and "arm.left.gripper: span 0.200" in str(info.value)
    assert all(emu.frame_count() == 0 for emu in rig.emus.values())


def test_no_calibration_and_no_pinned_limits_names_what_to_run(tmp_path: Path) -> None:
    for b in bench(tmp_path):
        robot = YamRobot(b.config, options=YamOptions(reply_timeout_s=0.1))
        try:
            robot.connect()
            with pytest.raises(GripperCalibrationError, match=r"left_gripper: .*`python -m calibration gripper"):
                robot.enable()
        finally:
            robot.close()
        assert not any(e.kind == "enable" for emu in b.emus.values() for e in emu.frame_log())


def test_save_motor_zero_needs_its_flag_then_rezeroes_the_joint_motors(rig: Bench) -> None:
    _inject(rig, OFFSETS)
    code, _, err = _joints(rig, "--arm", "left", "--save-motor-zero")
    assert code == 2 and "--i-understand-this-writes-motor-flash" in err
    assert rig.emus["left"].frame_count() == 0
    code, _, err = _joints(rig, "--arm", "left", "--save-motor-zero", "--i-understand-this-writes-motor-flash")
    assert code == 0, err
    ids = rig.ids("left")
    for i in range(1, 7):
        assert rig.emus["left"].snapshot(ids[f"left_joint{i}"]).position == pytest.approx(0.0, abs=1e-9)
    assert rig.emus["left"].snapshot(ids["left_gripper"]).offset == 2.5  # the gripper's zero is left alone
    kinds = [e.kind for e in rig.emus["left"].frame_log(ids["left_joint1"])]
    assert "save_zero" in kinds and "enable" not in kinds and "mit" not in kinds
    cal = load_calibration(_cal_path(rig))
    assert max(abs(v) for v in cal.zero["left"].offsets.values()) < TOLERANCE
    assert "motor zero saved" in cal.zero["left"].measured.method
    assert _joints(rig, "--arm", "left", "--check")[0] == 0
