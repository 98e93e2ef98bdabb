"""YamRobot against emulated motors on python-can virtual buses: real frames both ways, faults end in a safe stop."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import can
import numpy as np
import pytest
from can.interfaces.virtual import VirtualBus

from robot_client.config import ArmConfig, RobotConfig, load_robot_config
from robot_client.robot import RobotCommandError, RobotFault
from robot_client.yam import protocol as dm
from robot_client.yam.arm import FaultsLatched, YamOptions
from robot_client.yam.bus import open_bus
from robot_client.yam.driver import BusFactory, YamRobot
from robot_client.yam.emulator import EmulatorConfig, ManualClock, MotorEmulator
from robot_client.yam.gripper import GripperCalibrationError
from robot_client.yam.motor_model import OutputMode

# Generous timeouts: the emulator shares the interpreter with the test, and CI machines are slow.
OPTIONS = YamOptions(reply_timeout_s=0.05, retries=2, setup_retries=3)
GRIPPER = (0.0, -6.57)
KP = {1: 80.0, 2: 80.0, 3: 80.0, 4: 10.0, 5: 10.0, 6: 10.0, 7: 20.0}
_channels = itertools.count()


def make_config(gripper_limits: tuple[float, float] | None = GRIPPER) -> RobotConfig:
    base = load_robot_config("bimanual_yam")
    prefix = f"yam-driver-{next(_channels)}"
    arms = tuple(replace(a, can_interface="virtual", can_channel=f"{prefix}-{a.name}", gripper_limits=gripper_limits)
                 for a in base.arms)
    return replace(base, arms=arms)


@dataclass
class Rig:
    robot: YamRobot
    emus: dict[str, MotorEmulator]
    clock: ManualClock
    config: RobotConfig

    def snap(self, arm: str, motor_id: int) -> Any:
        return self.emus[arm].snapshot(motor_id)

    def frames(self) -> int:
        return sum(e.frame_count() for e in self.emus.values())


@pytest.fixture
def make_rig() -> Iterator[Any]:
    started: list[tuple[YamRobot, list[MotorEmulator]]] = []

    def build(config: RobotConfig | None = None, positions: Mapping[str, float] | None = None,
              bus_factory: BusFactory = open_bus, connect: bool = True, enable: bool = True,
              command_dt_s: float = 0.004) -> Rig:
        cfg = config or make_config()
        clock = ManualClock()
        emu_config = EmulatorConfig(command_dt_s=command_dt_s)
        emus = {a.name: MotorEmulator.for_arm(a, positions=positions, clock=clock, config=emu_config).start()
                for a in cfg.arms}
        robot = YamRobot(cfg, options=OPTIONS, bus_factory=bus_factory)
        started.append((robot, list(emus.values())))
        if connect:
            robot.connect()
            if enable:
                robot.enable()
        return Rig(robot, emus, clock, cfg)

    yield build
    for robot, emus in started:
        robot.close()
        for emu in emus:
            emu.stop()


def _all_motors(rig: Rig) -> list[tuple[str, int]]:
    return [(a.name, mid) for a in rig.config.arms for mid in a.motor_ids]


def _here(rig: Rig) -> np.ndarray:
    """Measured positions clipped into the limits (a joint at 0 on a [0, x] limit may read a hair outside)."""
    return rig.robot.read_state().positions.clip(*_limit_arrays(rig))


def _move(robot: YamRobot, target: np.ndarray, cycles: int) -> None:
    for _ in range(cycles):
        robot.command(target)


# -- enable / command / read back ------------------------------------------------------------------------------
def test_connect_programs_watchdog_and_enable_holds_without_jump(make_rig: Any) -> None:
    positions = {"left_joint1": 0.3, "left_joint4": -0.2, "right_joint2": 0.7, "left_gripper": -3.285}
    rig = make_rig(positions=positions)
    for arm, mid in _all_motors(rig):
        snap = rig.snap(arm, mid)
        assert snap.watchdog_s == pytest.approx(0.1)
        assert snap.enabled and snap.mode == OutputMode.MIT
        assert snap.command.position == pytest.approx(snap.position, abs=1e-3)  # held where it was
        assert snap.command.kp == pytest.approx(KP[mid], abs=0.2)
        kinds = [e.kind for e in rig.emus[arm].frame_log(mid)]
        assert kinds == ["register_write", "clear_error", "enable", "mit"]
    state = rig.robot.read_state()
    assert state.names == rig.config.joint_names
    expected = np.zeros(14)
    expected[[0, 3, 8]] = [0.3, -0.2, 0.7]
    expected[6] = 0.5  # -3.285 rad on a (0, -6.57) gripper
    expected[13] = 0.0
    np.testing.assert_allclose(state.positions, expected, atol=2e-3)
    status = rig.robot.status()
    assert status.ok and set(status.temperatures_c) == set(rig.config.joint_names)


def test_command_moves_the_arms_toward_the_target(make_rig: Any) -> None:
    rig = make_rig()
    target = np.array([0.4, 0.5, 0.6, -0.3, 0.2, -0.4, 0.8, -0.4, 1.0, 0.3, 0.3, -0.2, 0.5, 0.25])
    _move(rig.robot, target, 250)
    state = rig.robot.read_state()
    np.testing.assert_allclose(state.positions, target, atol=0.02)
    assert rig.snap("left", 7).command.position == pytest.approx(0.8 * -6.57, abs=1e-3)
    assert rig.snap("right", 1).physical_position == pytest.approx(-0.4, abs=0.02)
    assert rig.robot.status().ok


def test_hold_keeps_a_joint_resting_just_outside_its_limit(make_rig: Any) -> None:
    rig = make_rig(positions={"left_joint2": -0.01})  # on its lower stop
    with pytest.raises(RobotCommandError, match="left_joint2"):
        rig.robot.command(rig.robot.read_state().positions)
    rig.robot.hold()
    assert rig.snap("left", 2).command.position == pytest.approx(-0.01, abs=1e-3)


# -- gripper ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("limits", "opening", "motor"), [
    ((0.0, -6.57), 1.0, -6.57), ((0.0, -6.57), 0.25, -1.6425), ((0.0, -6.57), 0.0, 0.0),
    ((-6.57, 0.0), 1.0, 0.0), ((-6.57, 0.0), 0.25, -4.9275), ((-6.57, 0.0), 0.0, -6.57),
])
def test_gripper_mapping_both_directions(make_rig: Any, limits: tuple[float, float], opening: float,
                                         motor: float) -> None:
    rig = make_rig(config=make_config(limits))
    target = _here(rig)
    target[6] = opening
    _move(rig.robot, target, 120)
    assert rig.snap("left", 7).command.position == pytest.approx(motor, abs=1e-3)
    assert rig.robot.read_state().positions[6] == pytest.approx(opening, abs=0.02)


def test_uncalibrated_gripper_refuses_to_enable(make_rig: Any) -> None:
    rig = make_rig(config=make_config(None), enable=False)
    with pytest.raises(GripperCalibrationError, match=r"left_gripper.*calibrat"):
        rig.robot.enable()
    kinds = {e.kind for emu in rig.emus.values() for e in emu.frame_log()}
    assert kinds == {"register_write"}  # nothing was enabled or moved


# -- command refusal -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("index", "value", "name"), [
    (2, 3.5, "left_joint3"), (8, -0.2, "right_joint2"), (6, 1.2, "left_gripper"), (4, math.nan, "left_joint5"),
    (11, math.inf, "right_joint5"),
])
def test_refused_targets_name_the_joint_and_send_nothing(make_rig: Any, index: int, value: float,
                                                         name: str) -> None:
    rig = make_rig()
    target = _here(rig)
    target[index] = value
    before = rig.frames()
    with pytest.raises(RobotCommandError, match=name):
        rig.robot.command(target)
    with pytest.raises(RobotCommandError, match="14"):
        rig.robot.command(np.zeros(13))
    assert rig.frames() == before
    assert rig.robot.status().ok


def test_commands_before_enable_are_refused(make_rig: Any) -> None:
    rig = make_rig(enable=False)
    with pytest.raises(RobotCommandError, match="enable"):
        rig.robot.command(np.zeros(14))


# -- faults ----------------------------------------------------------------------------------------------------
# Fault tests run the emulated motors slowly (0.5 ms of motion per command) so that, a few cycles into a move
# toward a far target, "holding the measured position" is clearly distinguishable from the target.
SLOW = 0.0005
TARGET = np.full(14, 0.3)


def _start_motion(rig: Rig) -> np.ndarray:
    _move(rig.robot, TARGET, 5)
    return TARGET


def _assert_safe_stop(rig: Rig, faulted: tuple[str, int]) -> None:
    """Faulted motor disabled; every other motor holds its measured position with the configured gains."""
    for arm_cfg in rig.config.arms:
        for i, mid in enumerate(arm_cfg.motor_ids):
            snap = rig.snap(arm_cfg.name, mid)
            if (arm_cfg.name, mid) == faulted:
                assert not snap.enabled
                continue
            target = 0.3 if mid < 7 else 0.3 * (GRIPPER[1] - GRIPPER[0]) + GRIPPER[0]
            assert snap.enabled and snap.mode == OutputMode.MIT, (arm_cfg.name, mid)
            assert snap.command.position == pytest.approx(snap.position, abs=0.01), (arm_cfg.name, mid)
            assert abs(snap.command.position - target) > 0.2, (arm_cfg.name, mid)
            assert snap.command.kp == pytest.approx(KP[mid], abs=0.2)
            assert snap.command.kd == pytest.approx(([*arm_cfg.kd, arm_cfg.gripper_kd])[i], abs=0.01)


def _assert_refused_until_cleared(rig: Rig, joint: str, code: str) -> None:
    robot = rig.robot
    assert not robot.status().enabled
    assert any(f.joint == joint and f.code == code for f in robot.status().faults)
    for call in (lambda: robot.command(np.zeros(14)), robot.read_state, robot.hold, robot.enable):
        with pytest.raises(FaultsLatched, match=rf"{joint}: {code}:.*clear_faults"):
            call()


def _recover(rig: Rig) -> None:
    rig.robot.clear_faults()
    with pytest.raises(RobotCommandError, match="not enabled"):  # clearing alone never resumes motion
        rig.robot.command(np.zeros(14))
    rig.robot.enable()
    rig.robot.command(_here(rig))
    assert rig.robot.status().ok


def _limit_arrays(rig: Rig) -> tuple[np.ndarray, np.ndarray]:
    arrays = rig.config.limit_arrays()
    return np.array(arrays["lower"]), np.array(arrays["upper"])


def test_silent_motor_is_a_no_reply_fault_after_retries(make_rig: Any) -> None:
    rig = make_rig(command_dt_s=SLOW)
    target = _start_motion(rig)
    rig.emus["left"].drop_replies(3)
    before = rig.emus["left"].frame_count(3)
    with pytest.raises(RobotFault, match=r"left_joint3: no_reply: .*3 attempts") as info:
        rig.robot.command(target)
    assert info.value.joint == "left_joint3" and info.value.code == "no_reply"
    kinds = [e.kind for e in rig.emus["left"].frame_log(3)][before:]
    assert kinds[:3] == ["mit"] * 3 and "disable" in kinds  # retried, then told to stop
    _assert_safe_stop(rig, ("left", 3))
    _assert_refused_until_cleared(rig, "left_joint3", "no_reply")
    with pytest.raises(RobotFault, match="left_joint3: no_reply"):  # still silent: enable fails, no recovery
        rig.robot.clear_faults()
        rig.robot.enable()
    rig.emus["left"].clear_injections()
    _recover(rig)


def test_late_replies_within_the_timeout_are_tolerated(make_rig: Any) -> None:
    rig = make_rig()
    rig.emus["left"].delay_replies(2, 0.02)
    target = _here(rig)
    _move(rig.robot, target, 5)
    rig.emus["left"].delay_replies(2, 0.08, count=1)  # misses one attempt, the resend is answered
    _move(rig.robot, target, 3)
    assert rig.robot.status().ok


def test_can_send_errors_are_retried(make_rig: Any) -> None:
    class FlakyBus(VirtualBus):
        failures = 0

        def send(self, msg: can.Message, timeout: float | None = None) -> None:
            if FlakyBus.failures > 0:
                FlakyBus.failures -= 1
                raise can.CanOperationError("[Errno 105] No buffer space available")
            super().send(msg, timeout)

    def factory(arm: ArmConfig) -> can.BusABC:
        return FlakyBus(channel=arm.can_channel)

    rig = make_rig(bus_factory=factory)
    target = _here(rig)
    FlakyBus.failures = 2
    rig.robot.command(target)
    assert rig.robot.status().ok
    FlakyBus.failures = 10_000
    with pytest.raises(RobotFault, match=r"no_reply: .*send error: CanOperationError"):
        rig.robot.command(target)
    FlakyBus.failures = 0


@pytest.mark.parametrize("code", [0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE])
def test_each_error_code_is_named_and_stops_safely(make_rig: Any, code: int) -> None:
    rig = make_rig(command_dt_s=SLOW)
    target = _start_motion(rig)
    rig.emus["left"].set_error(4, code)
    name = dm.status_name(code)
    with pytest.raises(RobotFault, match=rf"left_joint4: {name}: status 0x{code:X}: ") as info:
        rig.robot.command(target)
    assert (info.value.joint, info.value.code) == ("left_joint4", name)
    _assert_safe_stop(rig, ("left", 4))
    _assert_refused_until_cleared(rig, "left_joint4", name)
    _recover(rig)  # enable clears the latched error on the motor


@pytest.mark.parametrize(("kwargs", "code"), [({"rotor_c": 130.0}, "motor_overtemperature"),
                                              ({"mosfet_c": 125.0}, "mosfet_overtemperature")])
def test_overtemperature_faults_until_cooled(make_rig: Any, kwargs: dict[str, float], code: str) -> None:
    rig = make_rig(command_dt_s=SLOW)
    target = _start_motion(rig)
    rig.emus["right"].set_temperature(2, **kwargs)
    with pytest.raises(RobotFault, match=f"right_joint2: {code}"):
        rig.robot.command(target)
    _assert_safe_stop(rig, ("right", 2))
    assert rig.robot.status().temperatures_c["right_joint2"] >= 125
    rig.robot.clear_faults()
    with pytest.raises(RobotFault, match=f"right_joint2: {code}"):  # still hot: clear error does not stick
        rig.robot.enable()
    rig.emus["right"].set_temperature(2, rotor_c=40.0, mosfet_c=40.0)
    _recover(rig)


def test_watchdog_trip_is_reported_as_damping(make_rig: Any) -> None:
    rig = make_rig()
    target = _here(rig)
    rig.robot.command(target)
    rig.clock.advance(0.25)  # the host went quiet for longer than watchdog_ms = 100
    with pytest.raises(RobotFault, match=r"left_joint1: lost_communication: .*damping mode"):
        rig.robot.command(target)
    for arm, mid in _all_motors(rig):
        assert rig.snap(arm, mid).mode == OutputMode.DAMPING
    faults = rig.robot.status().faults
    assert {f.joint for f in faults} >= {"left_joint1", "left_gripper"}
    assert all(f.code == "lost_communication" for f in faults)
    rig.robot.clear_faults()
    rig.robot.enable()
    for arm, mid in _all_motors(rig):
        assert rig.snap(arm, mid).mode == OutputMode.MIT


def test_wrong_zero_offset_refuses_to_enable(make_rig: Any) -> None:
    rig = make_rig(enable=False)
    rig.emus["left"].set_position_offset(2, -0.5)
    with pytest.raises(RobotFault, match=r"left_joint2: joint_limit_violation: .*zero offset"):
        rig.robot.enable()
    assert not any(rig.snap(arm, mid).enabled for arm, mid in _all_motors(rig))


def test_disable_is_safe_after_a_fault_and_repeatable(make_rig: Any) -> None:
    rig = make_rig()
    rig.emus["right"].drop_replies(5)
    with pytest.raises(RobotFault, match="right_joint5: no_reply"):
        rig.robot.command(_here(rig))
    rig.robot.disable()
    rig.robot.disable()
    assert not any(rig.snap(arm, mid).enabled for arm, mid in _all_motors(rig))
