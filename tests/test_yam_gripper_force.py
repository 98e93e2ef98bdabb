"""The real driver's gripper force limit and gravity feed-forward against emulated motors on virtual CAN buses.

The emulated gripper motor closes on an obstacle (a stiff wall) and reports the MIT law's torque there; the
emulated joints carry the arm model's gravity. Stated tolerance: after the stall is detected the gripper's
effort stays within 10% of the configured cap (the maker's 50 N, about 1.03 N m at the motor), at the driver's
250 Hz sender, with the grasping frames running pure torque (kp = kd = 0, the cap as torque).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from robot_client.config import RobotConfig, load_robot_config
from robot_client.gripper_force import GripperForceConfig
from robot_client.yam import protocol as dm
from robot_client.yam.arm import YamOptions
from robot_client.yam.driver import YamRobot
from robot_client.yam.emulator import EmulatorConfig, ManualClock, MotorEmulator, MotorSpec, gravity_load

OPTIONS = YamOptions(reply_timeout_s=0.05, retries=2, setup_retries=3)
GRIPPER = (0.0, -6.57)  # closed, open: closing drives the motor position up
GRIPPER_ID = 7
OBSTACLE = -3.0  # the object: the jaws stop here, about half open
POSE = {"left_joint2": 0.6, "left_joint3": 0.6, "right_joint2": 0.6, "right_joint3": 0.6,
        "left_gripper": -5.5, "right_gripper": -5.5}
CAP = GripperForceConfig().max_torque_nm
_channels = itertools.count()


def _config(**arm_changes: Any) -> RobotConfig:
    base = load_robot_config("bimanual_yam")
    prefix = f"yam-force-{next(_channels)}"
    arms = tuple(replace(a, can_interface="virtual", can_channel=f"{prefix}-{a.name}", gripper_limits=GRIPPER,
                         **arm_changes) for a in base.arms)
    return replace(base, arms=arms)


@dataclass
class Rig:
    robot: YamRobot
    left: MotorEmulator


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    started: list[tuple[YamRobot, list[MotorEmulator]]] = []

    def build(**arm_changes: Any) -> Rig:
        cfg = _config(**arm_changes)
        clock = ManualClock()
        emus = [MotorEmulator.for_arm(a, positions=POSE, clock=clock, config=EmulatorConfig(),
                                      load=gravity_load(a, a.gravity_factors, GRIPPER)).start() for a in cfg.arms]
        robot = YamRobot(cfg, options=OPTIONS)
        started.append((robot, emus))
        robot.connect()
        robot.enable()
        return Rig(robot, emus[0])

    yield build
    for robot, emus in started:
        robot.close()
        for emu in emus:
            emu.stop()


def _cycles(rig: Rig, target: np.ndarray | None, cycles: int) -> None:
    """Command `target` (None: hold), then let the robot's sender carry it for `cycles` frames."""
    for _ in range(cycles):
        if target is None:
            rig.robot.hold()
        else:
            rig.robot.command(target)
        rig.left.wait_for_frames(1, motor_ids=[GRIPPER_ID])


def _close_on_obstacle(rig: Rig, cycles: int) -> list[tuple[bool, float, float, dm.MitCommand | None]]:
    """Command the left gripper closed (everything else where it is); per sender cycle: (grasping seen before
    the cycle, the gripper's effort, its position, the last MIT frame it ran)."""
    rig.left.set_obstacle(GRIPPER_ID, OBSTACLE, +1)
    target = rig.robot.read_state().positions.copy()
    target[6] = 0.0  # left: closed
    arm = rig.robot.arms[0]
    trace = []
    for _ in range(cycles):
        _cycles(rig, target, 1)
        snap = rig.left.snapshot(GRIPPER_ID)
        assert arm.gripper_limiter is not None
        trace.append((arm.gripper_limiter.grasping, snap.torque, snap.physical_position, snap.command))
    return trace


def test_a_gripper_closing_on_an_object_is_capped_after_detection(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    trace = _close_on_obstacle(rig, 250)
    detected = next((i for i, (grasping, _, _, _) in enumerate(trace) if grasping), None)
    assert detected is not None, "the stall was never detected"
    after = [abs(tau) for _, tau, _, _ in trace[detected + 2:]]  # frames built once the detection was seen
    before = [cmd for _, _, _, cmd in trace[:detected]]
    assert all(c is not None and c.kp == pytest.approx(20.0, abs=0.2) and c.kd == pytest.approx(0.5, abs=0.01)
               for c in before)  # the configured law while closing
    for _, _, _, cmd in trace[detected + 2:]:  # pure torque toward the object (closing drives the position up)
        assert cmd is not None and cmd.kp == 0.0 and cmd.kd == 0.0
        assert cmd.torque == pytest.approx(CAP, abs=0.01)
    assert len(after) > 100
    assert max(after) <= 1.10 * CAP, f"effort {max(after):.3f} N m after detection, cap {CAP:.3f}"
    assert after[-1] >= 0.8 * CAP  # still pressing on the object, with the capped force
    assert trace[-1][2] == pytest.approx(OBSTACLE)
    report = rig.robot.actuation_report()
    assert report is not None
    left = next(g for g in report.grippers if g.gripper == "left_gripper")
    assert left.grasping and left.grasps == 1 and left.cap_nm == pytest.approx(CAP)
    # From detection on: the limiter's grasp peak counts every reading that answers a frame it capped, the first
    # one included (the trace above skips two cycles because the sender runs on its own thread).
    assert left.peak_grasp_effort_nm <= 1.10 * CAP < left.peak_effort_nm  # it pushed harder before detection
    right = next(g for g in report.grippers if g.gripper == "right_gripper")
    assert not right.grasping and right.grasps == 0


def test_without_the_limit_the_grasp_pushes_with_the_motors_range(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(gripper_force_limit=False)
    rig.left.set_obstacle(GRIPPER_ID, OBSTACLE, +1)
    target = rig.robot.read_state().positions.copy()
    target[6] = 0.0
    _cycles(rig, target, 150)
    assert rig.robot.arms[0].gripper_limiter is None
    assert abs(rig.left.snapshot(GRIPPER_ID).torque) > 5 * CAP  # kp 20 x 3 rad, clipped at 10 N m


def test_a_hold_keeps_the_grasp_and_opening_releases_it(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    _close_on_obstacle(rig, 200)
    arm = rig.robot.arms[0]
    assert arm.gripper_limiter is not None and arm.gripper_limiter.grasping
    _cycles(rig, None, 100)
    tau = abs(rig.left.snapshot(GRIPPER_ID).torque)
    assert 0.5 * CAP <= tau <= 1.10 * CAP  # still holding the object, not letting go, not crushing it
    target = rig.robot.read_state().positions.copy()
    target[6] = 1.0  # open
    _cycles(rig, target, 150)
    assert not arm.gripper_limiter.grasping
    assert rig.left.snapshot(GRIPPER_ID).physical_position < OBSTACLE - 2.0  # moved well away, opening


def test_an_object_taken_from_the_grasp_releases_it_by_the_motion(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    _close_on_obstacle(rig, 200)
    arm = rig.robot.arms[0]
    assert arm.gripper_limiter is not None and arm.gripper_limiter.grasping
    rig.left.set_obstacle(GRIPPER_ID, None)  # the object is gone: the capped torque runs the jaws on
    target = rig.robot.read_state().positions.copy()
    target[6] = 0.0
    released = None
    for k in range(150):
        _cycles(rig, target, 1)
        if released is None and not arm.gripper_limiter.grasping:
            released = k
    assert released is not None and released < 25  # within 0.1 s of frames, not left pushing at the cap
    cmd = rig.left.snapshot(GRIPPER_ID).command
    assert cmd is not None and cmd.kp == pytest.approx(20.0, abs=0.2) and cmd.kd == pytest.approx(0.5, abs=0.01)
    assert rig.left.snapshot(GRIPPER_ID).physical_position == pytest.approx(0.0, abs=0.02)  # closed on nothing
    assert abs(rig.left.snapshot(GRIPPER_ID).torque) < 0.2 * CAP
    assert not arm.gripper_limiter.grasping


def test_gravity_feed_forward_holds_the_loaded_arm_and_is_reported(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.robot.actuation_report(reset=True)
    target = rig.robot.read_state().positions.copy()
    _cycles(rig, target, 100)
    state = rig.robot.read_state()
    np.testing.assert_allclose(state.positions[:6], target[:6], atol=2e-3)  # no sag: the feed-forward carries it
    report = rig.robot.actuation_report()
    assert report is not None
    j3 = report.joints.index("left_joint3")
    expected = 1.1 * gravity_load(rig.robot.arms[0].config, (1.0,) * 6, GRIPPER)(
        {1: 0.0, 2: 0.6, 3: 0.6, 4: 0.0, 5: 0.0, 6: 0.0, 7: -5.5})[3]
    assert report.feedforward_mean_nm[j3] == pytest.approx(expected, rel=0.02)
    assert report.feedforward_max_nm[j3] == pytest.approx(expected, rel=0.02)
    assert report.feedforward_max_nm[report.joints.index("left_joint1")] < 0.05
    assert "gravity feed-forward max |tau|" in report.describe()


def test_without_compensation_the_loaded_arm_sags(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(gravity_compensation=False)
    target = rig.robot.read_state().positions.copy()
    target[:6] = [0.0, 0.6, 0.6, 0.0, 0.0, 0.0]
    _cycles(rig, target, 150)
    state = rig.robot.read_state()
    sag = np.abs(state.positions[:6] - target[:6])
    assert sag[2] > 0.05  # joint 3 carries ~6.5 N m on kp 80: ~0.08 rad low
    report = rig.robot.actuation_report()
    assert report is not None and max(report.feedforward_max_nm) == 0.0


# -- the emulated motor's physics that these tests rely on -------------------------------------------------------
def test_an_emulated_motor_holding_a_load_sags_by_load_over_kp_and_reports_the_load() -> None:
    from robot_client.yam import protocol as dm
    from robot_client.yam.motor_model import EmulatedMotor, MotorPhysics

    motor = EmulatedMotor(3, "DM4340", MotorPhysics.for_type("DM4340"), q=0.5, load_nm=6.5)
    motor.on_special(dm.SpecialCommand.ENABLE, 0.0)
    hold = dm.pack_mit_command("DM4340", 0.5, 0.0, 80.0, 5.0, 0.0)
    for _ in range(500):
        motor.on_mit(hold, 0.0, 0.004)
    assert motor.q == pytest.approx(0.5 - 6.5 / 80.0, abs=2e-3)  # sagged: kp x error balances the load
    assert motor.tau == pytest.approx(6.5, abs=0.05)
    carried = dm.pack_mit_command("DM4340", 0.5, 0.0, 80.0, 5.0, 6.5)  # with the load as feed-forward
    for _ in range(500):
        motor.on_mit(carried, 0.0, 0.004)
    assert motor.q == pytest.approx(0.5, abs=2e-3) and motor.tau == pytest.approx(6.5, abs=0.05)


def test_an_emulated_motor_against_an_obstacle_reports_the_mit_law_there() -> None:
    from robot_client.yam import protocol as dm
    from robot_client.yam.motor_model import EmulatedMotor, MotorPhysics

    motor = EmulatedMotor(7, "DM4310", MotorPhysics.for_type("DM4310"), q=-5.0, obstacle=(-3.0, +1))
    motor.on_special(dm.SpecialCommand.ENABLE, 0.0)
    push = dm.pack_mit_command("DM4310", -2.9, 0.0, 20.0, 0.5, 0.0)  # 0.1 rad past the wall
    for _ in range(300):
        motor.on_mit(push, 0.0, 0.004)
    assert motor.q == -3.0 and motor.v == 0.0
    assert motor.tau == pytest.approx(20.0 * 0.1, abs=0.02)  # kp (p_des - p), not the moving law's estimate
    far = dm.pack_mit_command("DM4310", 0.0, 0.0, 20.0, 0.5, 0.0)
    motor.on_mit(far, 0.0, 0.004)
    assert motor.tau == pytest.approx(10.0)  # clipped to the DM4310's range
    back = dm.pack_mit_command("DM4310", -4.0, 0.0, 20.0, 0.5, 0.0)
    for _ in range(300):
        motor.on_mit(back, 0.0, 0.004)
    assert motor.q == pytest.approx(-4.0, abs=2e-3)  # the wall holds one way only


def test_an_obstacle_must_be_ahead_of_the_motor() -> None:
    emu = MotorEmulator("yam-force-obstacle", [MotorSpec(7, "DM4310", position=-2.0)])
    with pytest.raises(ValueError, match="already past an obstacle at -3.000"):
        emu.set_obstacle(7, -3.0, +1)
    with pytest.raises(ValueError, match="side must be"):
        emu.set_obstacle(7, -1.0, 0)
    emu.set_obstacle(7, -1.0, +1)
    assert emu.snapshot(7).physical_position == -2.0


# -- configuration ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "message"), [
    ("gravity_factors = [1.0, 1.1]", "gravity_factors must be 6 numbers in [0, 3]"),
    ("gravity_factors = [1.0, 1.1, 1.1, 1.2, 1.0, 4.0]", "gravity_factors must be 6 numbers in [0, 3]"),
    ("gravity_clip_nm = 0", "gravity_clip_nm must lie in (0, 28]"),
    ("gravity_compensation = 1", "gravity_compensation: expected true or false"),
    ("gripper_max_force_n = -5", "gripper_max_force_n must lie in (0, 200]"),
    ("gripper_max_force_n = \"50\"", "gripper_max_force_n: expected a number"),
])
def test_bad_gravity_and_force_settings_are_refused_naming_the_key(tmp_path: Any, line: str, message: str) -> None:
    from robot_client.config import CONFIG_DIR, RobotConfigError

    key = line.split(" =")[0]
    text = (CONFIG_DIR / "bimanual_yam.toml").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} =")]
    at = lines.index('name = "left"')
    lines.insert(at + 1, line)
    path = tmp_path / "robot.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RobotConfigError) as info:
        load_robot_config(path)
    assert message in str(info.value) and "arm" in str(info.value)


def test_the_bundled_config_turns_both_on_with_the_makers_numbers() -> None:
    for arm in load_robot_config("bimanual_yam").arms:
        assert arm.gravity_compensation and arm.gravity_factors == (1.0, 1.1, 1.1, 1.2, 1.0, 1.0)
        assert arm.gravity_clip_nm == 20.0  # not LeRobot's 10: robot_client.config.ArmConfig says why
        assert arm.gripper_force_limit and arm.gripper_max_force_n == 50.0
