"""`python -m calibration gravity` on emulated Damiao motors (python-can virtual buses) that carry the arm model's
gravity scaled by known "true" factors, with real calibration files.

Stated tolerance: the fitted factors of joints 2-4 (the joints gravity loads) are within 0.02 of the true ones
(the feedback torque quantization is 0.014 N m on a DM4340, 0.005 N m on a DM4310; a still hold reads the load
exactly otherwise). Joints 1, 5 and 6 see almost no gravity torque at these poses and keep their factor.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from calibration import gravity_cli
from calibration.cli import build_parser
from robot_client.calfile import load_calibration
from robot_client.config import RobotConfig, load_robot_config
from robot_client.yam.arm import YamOptions
from robot_client.yam.driver import YamRobot
from robot_client.yam.emulator import EmulatorConfig, ManualClock, MotorEmulator, gravity_load
from tests.calibration_arm_helpers import SLOW_BUS, write_config

TRUE = (1.0, 1.15, 0.92, 1.3, 1.0, 1.0)
TOLERANCE = 0.02
# Fewer, quicker poses than the defaults. The emulator advances 10 ms per command, twice the procedure's 5 ms
# cycle, so the 0.3 s settle is 0.6 s of emulated time (the slowest joint, 4, settles with ~0.14 s).
POSES = ("0,0.5,0.5,0,0,0", "0,1.0,0.6,0.3,0,0", "0,1.2,1.0,-0.3,0,0", "0,0.6,1.1,0.5,0,0")
FAST = ("--speed", "1.0", "--settle", "0.3", "--hold", "0.1", *[a for p in POSES for a in ("--pose", p)])


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Path, RobotConfig, dict[str, MotorEmulator]]]:
    path = write_config(tmp_path, calibration="rig_cal.toml", gripper_limits=(0.0, -6.57))
    config = load_robot_config(path)
    clock = ManualClock()
    emus = {a.name: MotorEmulator.for_arm(a, clock=clock, config=EmulatorConfig(command_dt_s=0.01),
                                          load=gravity_load(a, TRUE, (0.0, -6.57))).start() for a in config.arms}
    try:
        yield path, config, emus
    finally:
        for emu in emus.values():
            emu.stop()


def _run(path: Path, *extra: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    gravity_cli.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    args = parser.parse_args(["--config", str(path), "--arm", "left", "--yes", *SLOW_BUS, *extra])
    code = gravity_cli.run(args, out=out, err=err, sleep=lambda s: None)  # cycles back to back (no pacing)
    return code, out.getvalue(), err.getvalue()


def test_the_command_is_registered() -> None:
    args = build_parser().parse_args(["gravity", "--arm", "left"])
    assert args.command == "gravity" and not args.write and not args.measure


def test_dry_run_by_default_touches_nothing(rig: tuple[Path, RobotConfig, dict[str, MotorEmulator]]) -> None:
    path, _, emus = rig
    code, out, err = _run(path)
    assert code == 0, err
    assert "pose 7: [0.0, 0.4, 0.3, 0.5, 0.0, 0.0]" in out and "dry run" in out
    assert all(e.frame_count() == 0 for e in emus.values())
    assert not (path.parent / "rig_cal.toml").exists()


def test_the_true_factors_are_recovered_and_written(rig: tuple[Path, RobotConfig, dict[str, MotorEmulator]]) -> None:
    path, config, emus = rig
    t0 = time.monotonic()
    code, out, err = _run(path, *FAST, "--write")
    assert code == 0, err
    elapsed = time.monotonic() - t0
    cal = load_calibration(path.parent / "rig_cal.toml")
    grav = cal.gravity["left"]
    for j in (2, 3, 4):
        assert grav.factors[f"left_joint{j}"] == pytest.approx(TRUE[j - 1], abs=TOLERANCE), out
        assert grav.residual_nm[f"left_joint{j}"] < 0.05
    for j in (1, 5, 6):  # no gravity torque to fit: the config's factor stays
        assert grav.factors[f"left_joint{j}"] == pytest.approx(config.arms[0].gravity_factors[j - 1])
        assert f"left_joint{j}" in out and "kept" in out
    assert "least squares over 4 still poses" in grav.measured.method
    assert "wrote gravity factors of arm left" in out
    left = emus["left"]
    for mid in range(1, 7):  # back where it started (off by what the config's factors miss of the load), limp
        assert left.snapshot(mid).physical_position == pytest.approx(0.0, abs=0.025)
        assert not left.snapshot(mid).enabled
    assert emus["right"].frame_count() == 0
    print(f"gravity calibration on the emulator: {elapsed:.1f} s")

    # The driver now prefers the file's factors over the config's, and with them the loaded arm holds still.
    robot = YamRobot(config, options=YamOptions(reply_timeout_s=0.1))
    robot.connect()
    try:
        gravity = robot.arms[0].feedforward
        assert gravity is not None
        assert gravity.config.factors[2] == pytest.approx(grav.factors["left_joint3"])  # type: ignore[attr-defined]
    finally:
        robot.close()


def test_measure_only_writes_nothing(rig: tuple[Path, RobotConfig, dict[str, MotorEmulator]]) -> None:
    path, _, emus = rig
    code, out, err = _run(path, *FAST[:6], "--pose", POSES[0], "--pose", POSES[2], "--measure")
    assert code == 0, err
    assert "factor" in out and "unchanged" in out
    assert emus["left"].frame_count() > 0
    assert not (path.parent / "rig_cal.toml").exists()


def test_an_implausible_factor_is_refused(rig: tuple[Path, RobotConfig, dict[str, MotorEmulator]]) -> None:
    path, _, emus = rig
    # A "payload" far beyond the model: joint 3 carries three times the model's load and the fit is implausible.
    # (The arm starts lifted: resting at 0, the extra load would sag joint 3 past its limit and trip the watch.)
    emus["left"].set_position(2, 0.5)
    emus["left"].set_position(3, 0.5)
    emus["left"].set_load(gravity_load(next(a for a in load_robot_config(path).arms if a.name == "left"),
                                       (1.0, 1.0, 3.0, 1.0, 1.0, 1.0), (0.0, -6.57)))
    code, _, err = _run(path, *FAST[:6], "--pose", POSES[0], "--pose", POSES[2], "--write")
    assert code == 1
    assert "implausible gravity factors left_joint3" in err and "nothing was written" in err
    assert not (path.parent / "rig_cal.toml").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (("--pose", "0,0.5,0.5,0,0,0"), "at least 2"),
    (("--pose", "0,-0.5,0.5,0,0,0", "--pose", "0,0.5,0.5,0,0,0"), "left_joint2 = -0.500 rad outside"),
    (("--speed", "2"), "speed must lie in"),
])
def test_bad_options_are_usage_errors(rig: tuple[Path, RobotConfig, dict[str, MotorEmulator]],
                                      extra: tuple[str, ...], message: str) -> None:
    path, _, emus = rig
    code, _, err = _run(path, *extra, "--write")
    assert code == 2 and message in err, err
    assert all(e.frame_count() == 0 for e in emus.values())


def test_the_gravity_section_round_trips_and_is_checked(tmp_path: Path) -> None:
    from robot_client.calfile import (
        CalibrationError,
        GravityFactors,
        Measured,
        RigCalibration,
        check_against_config,
        save_calibration,
        with_gravity,
    )

    joints = [f"left_joint{i}" for i in range(1, 7)]
    section = GravityFactors({j: 1.0 + i / 10 for i, j in enumerate(joints)}, {j: 0.01 for j in joints},
                             Measured("2026-01-01T00:00:00+00:00", "test"))
    cal = with_gravity(RigCalibration(rig="bimanual_yam"), "left", section)
    path = tmp_path / "cal.toml"
    save_calibration(cal, path)
    back = load_calibration(path)
    assert back.gravity["left"].factors == section.factors and "arm.left.gravity" in back.sections()
    fit = check_against_config(back, "bimanual_yam", [("left", joints[:5])])
    assert any("arm.left.gravity.factors: joints ['left_joint6'] are not joints" in e for e in fit.errors)
    path.write_text(path.read_text().replace("left_joint3 = 1.2", "left_joint3 = 7.0"))
    with pytest.raises(CalibrationError, match=r"arm\.left\.gravity\.factors\.left_joint3: expected a factor in "
                                               r"\[0, 3\], got 7\.0"):
        load_calibration(path)
