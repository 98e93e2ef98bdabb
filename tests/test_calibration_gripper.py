"""`python -m calibration gripper` on emulated Damiao motors (python-can virtual buses) with mechanical stops, and
real calibration files.

Stated tolerance: the closed/open stops are recovered within 5e-3 motor rad (the emulated motor stalls exactly at
its stop; the feedback quantization is 3.8e-4 rad).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from calibration import gripper_cli, joints_cli
from robot_client.calfile import load_calibration
from tests.calibration_arm_helpers import SLOW_BUS, Bench, bench, run_cli

TOLERANCE = 5e-3
STOPS = (-6.3, 0.25)  # physical closed (upper: closing is the positive direction) and open stops
GRIPPER_ZERO = 1.0  # the gripper motor reports physical + 1.0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Bench]:
    # 5 ms of motion per command = the procedure's 5 ms cycle, so emulated time runs with the wall clock.
    yield from bench(tmp_path, calibration="rig_cal.toml", command_dt_s=0.005,
                     stops={"left_gripper": STOPS}, positions={"left_gripper": -3.0})


def _gripper(rig: Bench, *extra: str) -> tuple[int, str, str]:
    return run_cli(gripper_cli, "--config", str(rig.config_path), "--arm", "left", "--yes", *SLOW_BUS, *extra)


def _cal_path(rig: Bench) -> Path:
    return rig.config_path.parent / "rig_cal.toml"


def test_stops_are_recovered_while_the_joints_hold(rig: Bench) -> None:
    ids = rig.ids("left")
    left = rig.emus["left"]
    left.set_position_offset(ids["left_gripper"], GRIPPER_ZERO)
    left.set_position_offset(ids["left_joint2"], -0.5)  # a wrong joint zero: the driver refuses to enable
    code, _, err = _gripper(rig)
    assert code == 1 and "left_joint2: joint_limit_violation" in err and "calibration joints" in err, err
    assert not any(e.kind == "mit" for e in left.frame_log())
    assert run_cli(joints_cli, "--config", str(rig.config_path), "--arm", "left", "--yes", "--samples", "10",
                   "--interval", "0", *SLOW_BUS)[0] == 0

    left.set_position(ids["left_joint1"], 0.2)  # the arm somewhere other than on its stops: it must stay there
    code, out, err = _gripper(rig)
    assert code == 0, err
    cal = load_calibration(_cal_path(rig))
    grip = cal.gripper["left"]
    assert grip.closed == pytest.approx(STOPS[1] + GRIPPER_ZERO, abs=TOLERANCE)
    assert grip.open == pytest.approx(STOPS[0] + GRIPPER_ZERO, abs=TOLERANCE)
    assert "stall detection at 0.5 N m" in grip.measured.method
    assert "left" in cal.zero  # the joints' section is kept
    assert "closing stop" in out and "wrote left_gripper" in out
    for i in range(1, 7):  # held with their gains throughout (MIT frames), never moved
        mid = ids[f"left_joint{i}"]
        assert sum(e.kind == "mit" for e in left.frame_log(mid)) > 100
        assert left.snapshot(mid).physical_position == pytest.approx(0.2 if i == 1 else 0.0, abs=2e-3)
        assert not left.snapshot(mid).enabled  # limp again at the end
    assert rig.emus["right"].frame_count() == 0  # the other arm is not touched


def test_a_blocked_jaw_is_refused_naming_the_gripper_and_span(rig: Bench) -> None:
    assert run_cli(joints_cli, "--config", str(rig.config_path), "--arm", "left", "--yes", "--samples", "5",
                   "--interval", "0", *SLOW_BUS)[0] == 0
    before = _cal_path(rig).read_bytes()
    rig.emus["left"].set_mechanical_stops(rig.ids("left")["left_gripper"], -1.0, STOPS[1])  # object in the jaws
    code, _, err = _gripper(rig)
    assert code == 1
    assert re.search(r"left_gripper \(linear_4310\): span 1\.2\d\d motor rad .*implausibly small.*nominal 6\.57",
                     err), err
    assert "nothing was written" in err
    assert _cal_path(rig).read_bytes() == before


def test_pin_checks_the_span_and_moves_nothing(rig: Bench) -> None:
    code, _, err = _gripper(rig, "--pin", "0.0", "-1.0")
    assert code == 1 and "left_gripper (linear_4310): span 1.000 motor rad" in err, err
    assert not _cal_path(rig).exists()
    code, out, err = _gripper(rig, "--pin", "0.0", "-6.4")
    assert code == 0, err
    grip = load_calibration(_cal_path(rig)).gripper["left"]
    assert (grip.closed, grip.open) == (0.0, -6.4) and grip.measured.method == "pinned by hand (--pin)"
    assert all(emu.frame_count() == 0 for emu in rig.emus.values())


def test_no_stop_within_the_timeout_is_refused(rig: Bench) -> None:
    rig.emus["left"].set_mechanical_stops(rig.ids("left")["left_gripper"], None)
    code, _, err = _gripper(rig, "--timeout", "0.3")
    assert code == 1 and "left_gripper: no stop within 0.3 s closing at 0.5 N m" in err, err
    assert not _cal_path(rig).exists()
