"""YamRobot against emulated motors on python-can virtual buses: real frames both ways, faults end in a safe stop."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import can
import numpy as np
import pytest
from can.interfaces.virtual import VirtualBus

from robot_client.config import ArmConfig, RobotConfig, RobotConfigError, load_robot_config
from robot_client.robot import RobotCommandError, RobotError, RobotFault
from robot_client.yam import protocol as dm
from robot_client.yam.arm import FaultsLatched, YamOptions
from robot_client.yam.bus import open_bus
from robot_client.yam.driver import BusFactory, YamRobot, open_arm
from robot_client.yam.emulator import EmulatorConfig, ManualClock, MotorEmulator, gravity_load
from robot_client.yam.gripper import GripperCalibrationError
from robot_client.yam.motor_model import OutputMode

# Generous timeouts: the emulator shares the interpreter with the test, and CI machines are slow. The servo loop's
# deadline is long here (tests wait on the emulator between commands); its own tests use the default.
OPTIONS = YamOptions(reply_timeout_s=0.05, retries=2, setup_retries=3, command_timeout_s=60.0)
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
              command_dt_s: float = 0.004, options: YamOptions = OPTIONS, wall_clock: bool = False,
              unanswered: frozenset[str] = frozenset(), ignored: frozenset[str] = frozenset()) -> Rig:
        """`wall_clock`: the emulated watchdogs run on real time (else on a ManualClock the test advances)."""
        cfg = config or make_config()
        clock = ManualClock()
        emu_config = EmulatorConfig(command_dt_s=command_dt_s, unanswered=unanswered, ignored=ignored)
        # The emulated arms carry their gravity with the configured factors: the driver's feed-forward cancels it.
        emus = {a.name: MotorEmulator.for_arm(a, positions=positions, clock=time.monotonic if wall_clock else clock,
                                              config=emu_config, load=_gravity(a)).start()
                for a in cfg.arms}
        robot = YamRobot(cfg, options=options, bus_factory=bus_factory)
        started.append((robot, list(emus.values())))
        if connect:
            robot.connect()
            if enable:
                robot.enable()
        return Rig(robot, emus, clock, cfg)

    yield build
    for robot, emus in started:
        robot.close()
        assert not robot.sender_running
        for emu in emus:
            emu.stop()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("yam-sender")]  # every sender joined


def _gravity(arm: ArmConfig) -> Any:
    return gravity_load(arm, arm.gravity_factors, arm.gripper_limits) if arm.gravity_compensation else None


def _all_motors(rig: Rig) -> list[tuple[str, int]]:
    return [(a.name, mid) for a in rig.config.arms for mid in a.motor_ids]


def _here(rig: Rig) -> np.ndarray:
    """Measured positions clipped into the limits (a joint at 0 on a [0, x] limit may read a hair outside)."""
    return rig.robot.read_state().positions.clip(*_limit_arrays(rig))


def _move(rig: Rig, target: np.ndarray, cycles: int) -> None:
    """Command `target`, then let the sender carry it for `cycles` frames to every motor (the emulated motion
    advances per frame, so this is a fixed amount of motion whatever the machine's speed)."""
    rig.robot.command(target)
    _wait_frames(rig, cycles)


def _wait_frames(rig: Rig, count: int) -> None:
    for emu in rig.emus.values():
        emu.wait_for_frames(count)


def _wait_fault(rig: Rig, timeout_s: float = 10.0) -> None:
    """Until the sender has latched a fault (it finds them on its own; command() raises them afterwards)."""
    deadline = time.monotonic() + timeout_s
    while not rig.robot.status().faults:
        assert time.monotonic() < deadline, "no fault latched"
        time.sleep(0.005)


# -- enable / command / read back ------------------------------------------------------------------------------
def test_connect_programs_watchdog_and_enable_holds_without_jump(make_rig: Any) -> None:
    positions = {"left_joint1": 0.3, "left_joint4": -0.2, "right_joint2": 0.7, "left_gripper": -3.285}
    rig = make_rig(positions=positions)
    _wait_frames(rig, 3)
    for arm, mid in _all_motors(rig):
        snap = rig.snap(arm, mid)
        assert snap.watchdog_s == pytest.approx(0.4)  # the factory 400 ms, written on purpose
        assert snap.enabled and snap.mode == OutputMode.MIT
        assert snap.command.position == pytest.approx(snap.position, abs=1e-3)  # held where it was
        assert snap.command.kp == pytest.approx(KP[mid], abs=0.2)
        kinds = [e.kind for e in rig.emus[arm].frame_log(mid)]
        # Clear-error three times (no answer needed), enable, the hold; then the sender's frames, all MIT.
        assert kinds[:6] == ["register_write", "clear_error", "clear_error", "clear_error", "enable", "mit"]
        assert set(kinds[6:]) == {"mit"} and len(kinds) >= 8
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
    _move(rig, target, 250)
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
    _wait_frames(rig, 3)
    assert rig.snap("left", 2).command.position == pytest.approx(-0.01, abs=1e-3)
    assert rig.robot.status().ok  # 0.01 rad out is well within the limit watch's margin


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
    _move(rig, target, 120)
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
    _wait_frames(rig, 2)
    before = {(arm, mid): rig.snap(arm, mid).command.position for arm, mid in _all_motors(rig)}
    with pytest.raises(RobotCommandError, match=name):
        rig.robot.command(target)
    with pytest.raises(RobotCommandError, match="14"):
        rig.robot.command(np.zeros(13))
    _wait_frames(rig, 3)
    # The sender goes on holding where the arms were: no part of a refused command reaches a motor.
    assert {(arm, mid): rig.snap(arm, mid).command.position for arm, mid in _all_motors(rig)} == before
    assert rig.robot.status().ok


def test_commands_before_enable_are_refused(make_rig: Any) -> None:
    rig = make_rig(enable=False)
    with pytest.raises(RobotCommandError, match="enable"):
        rig.robot.command(np.zeros(14))


# -- faults ----------------------------------------------------------------------------------------------------
# Fault tests run the emulated motors slowly (0.01 ms of motion per frame) so that, while the sender carries a far
# target until it finds the fault (an unknown number of frames), "holding the measured position" stays clearly
# distinguishable from the target.
SLOW = 0.00001
TARGET = np.full(14, 0.3)


def _start_motion(rig: Rig) -> np.ndarray:
    _move(rig, TARGET, 5)
    return TARGET


def _assert_safe_stop(rig: Rig, faulted: tuple[str, int] | None) -> None:
    """Faulted motor (if any) disabled; every other motor holds its measured position with the configured gains
    (after a move toward TARGET was started)."""
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
    _wait_fault(rig)
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


def test_one_unanswered_cycle_is_not_yet_a_dead_motor(make_rig: Any) -> None:
    """Three attempts of 10 ms unanswered (a host that was late, a frame lost) is asked again on the next cycles;
    only silence for silence_timeout_s (0.1 s) is a fault."""
    rig = make_rig(options=YamOptions(reply_timeout_s=0.01, command_timeout_s=60.0))
    target = _here(rig)
    _move(rig, target, 3)
    rig.emus["left"].drop_replies(3, count=3)
    _wait_frames(rig, 10)
    assert rig.robot.status().ok
    rig.emus["left"].drop_replies(3)  # for good now
    _wait_fault(rig)
    first = rig.robot.status().faults[0]
    assert (first.joint, first.code) == ("left_joint3", "no_reply")
    silent_s = float(first.message.split("(no reply for ")[1].split(" s)")[0])
    assert silent_s >= 0.1 and "3 attempts of 10 ms" in first.message


def test_late_replies_within_the_timeout_are_tolerated(make_rig: Any) -> None:
    rig = make_rig()
    rig.emus["left"].delay_replies(2, 0.02)
    target = _here(rig)
    _move(rig, target, 5)
    rig.emus["left"].delay_replies(2, 0.08, count=1)  # misses one attempt, the resend is answered
    _move(rig, target, 3)
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
    _wait_frames(rig, 3)
    assert FlakyBus.failures == 0 and rig.robot.status().ok
    FlakyBus.failures = 10_000
    _wait_fault(rig)
    with pytest.raises(RobotFault, match=r"no_reply: .*send error: CanOperationError"):
        rig.robot.command(target)
    FlakyBus.failures = 0


@pytest.mark.parametrize("code", [0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE])
def test_each_error_code_is_named_and_stops_safely(make_rig: Any, code: int) -> None:
    rig = make_rig(command_dt_s=SLOW)
    target = _start_motion(rig)
    rig.emus["left"].set_error(4, code)
    name = dm.status_name(code)
    _wait_fault(rig)
    with pytest.raises(RobotFault, match=rf"left_joint4: {name}: .*status 0x{code:X}: .*motor id 4, MOSFET") as info:
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
    _wait_fault(rig)
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
    rig.clock.advance(0.5)  # the motors heard nothing for longer than watchdog_ms = 400 (as for a dead host)
    _wait_fault(rig)
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
    here = _here(rig)
    rig.emus["right"].drop_replies(5)
    _wait_fault(rig)
    with pytest.raises(RobotFault, match="right_joint5: no_reply"):
        rig.robot.command(here)
    rig.robot.disable()
    rig.robot.disable()
    assert not any(rig.snap(arm, mid).enabled for arm, mid in _all_motors(rig))


# -- the background sender: servo loop stalls, the motor watchdog, setup turns --------------------------------------
# The servo loop's deadline at its default (1 s); the emulated watchdogs on real time, as a real motor's.
# The stall tests run on the wall clock beside in-process emulators: a silence allowance near the watchdog keeps a
# starved emulator thread on a loaded CI machine from reading as dead motors (what these tests check is the servo
# deadline, not silence detection, which has tests of its own).
DEFAULT_DEADLINE = YamOptions(reply_timeout_s=0.05, retries=2, setup_retries=3, silence_timeout_s=0.35)


def _mit_frames(rig: Rig) -> dict[tuple[str, int], int]:
    return {(arm, mid): rig.emus[arm].frames_received(mid) for arm, mid in _all_motors(rig)}


@pytest.mark.parametrize("send_mode", ["thread", "tick"])
@pytest.mark.parametrize("stall_s", [0.3, 0.6])
def test_a_short_servo_stall_keeps_every_motor_enabled_and_holding(make_rig: Any, stall_s: float,
                                                                   send_mode: str) -> None:
    """0.3 s: a slow camera read or a GC pause. 0.6 s outlasts the motors' 400 ms watchdog: only the sender's
    frames keep them out of damping mode. Both stay under the servo deadline: no fault, nothing stops. In tick
    mode the stalled loop was the one sending: the background sender takes over once the gap passes."""
    rig = make_rig(options=replace(DEFAULT_DEADLINE, send_mode=send_mode), wall_clock=True)
    target = _here(rig)
    target[0] += 0.1
    _move(rig, target, 5)
    before = _mit_frames(rig)
    time.sleep(stall_s)  # the servo loop stalls: no command(), no hold()
    after = _mit_frames(rig)
    assert rig.robot.status().ok and not rig.robot.status().faults
    for key, count in after.items():
        assert count > before[key], key  # fed during the stall
        snap = rig.snap(*key)
        assert snap.enabled and snap.mode == OutputMode.MIT and snap.status == dm.StatusCode.ENABLED, key
    assert rig.snap("left", 1).command.position == pytest.approx(target[0], abs=1e-3)  # still the last target
    _move(rig, target, 3)  # the loop resumes as if nothing happened
    assert rig.robot.status().ok


@pytest.mark.parametrize("send_mode", ["thread", "tick"])
def test_a_2s_servo_stall_stops_safely_and_names_the_cause(make_rig: Any, send_mode: str) -> None:
    rig = make_rig(options=replace(DEFAULT_DEADLINE, send_mode=send_mode), wall_clock=True, command_dt_s=SLOW)
    target = _start_motion(rig)
    time.sleep(2.0)  # the servo loop stalls for 2 s
    faults = rig.robot.status().faults
    assert {(f.joint, f.code) for f in faults} == {("left", "servo_loop_stalled"), ("right", "servo_loop_stalled")}
    assert "no command() for 1.0" in faults[0].message and "command_timeout_s 1 s" in faults[0].message
    _assert_safe_stop(rig, None)  # every motor holds where it was, none dropped, none left on the old target
    before = _mit_frames(rig)
    _wait_frames(rig, 3)
    assert all(n > before[key] for key, n in _mit_frames(rig).items())  # the stop pose is still being fed
    for call in (lambda: rig.robot.command(target), rig.robot.read_state, rig.robot.hold):
        with pytest.raises(FaultsLatched, match=r"left: servo_loop_stalled: .*no command\(\) for"):
            call()
    rig.robot.clear_faults()
    rig.robot.enable()
    rig.robot.command(_here(rig))
    assert rig.robot.status().ok


# -- tick mode: the servo loop's thread sends (robot_client.servo_process) ---------------------------------------
TICK = replace(OPTIONS, send_mode="tick", keepalive_gap_s=0.2)


def _background_cycles(robot: YamRobot) -> int:
    return robot.sender_cycles - robot.caller_cycles


def test_tick_mode_sends_from_the_caller_while_the_sender_sleeps(make_rig: Any) -> None:
    """Each command() is one cycle of frames to every motor, sent from the calling thread; the next read_state()
    takes in the replies that have arrived, without waiting. The background sender, which fed the hold between
    enable() and the first command(), does nothing while the caller keeps sending (the gap is 0.2 s here, far
    above a loaded CI machine's pauses of a 5 ms loop)."""
    rig = make_rig(options=TICK, wall_clock=True)
    _wait_frames(rig, 3)  # the sender feeds the enabled hold
    assert _background_cycles(rig.robot) > 0 and rig.robot.caller_cycles == 0
    target = _here(rig)
    target[[0, 8]] += [0.2, 0.1]
    for _ in range(5):  # the sender may finish the cycle it had begun when the caller took over
        rig.robot.command(target)
        time.sleep(0.005)
    background = _background_cycles(rig.robot)
    before = _mit_frames(rig)
    for _ in range(100):
        rig.robot.command(target)
        time.sleep(0.005)
        rig.robot.read_state()  # takes in what has arrived, never waits (a reply may miss a tick under load)
    assert rig.robot.caller_cycles == 105
    assert _background_cycles(rig.robot) <= background + 1  # asleep: a 250 Hz sender would have added ~100
    _wait_frames(rig, 0)
    assert all(n - before[key] >= 100 for key, n in _mit_frames(rig).items())  # every command reached every motor
    np.testing.assert_allclose(rig.robot.read_state().positions[[0, 8]], target[[0, 8]], atol=0.02)
    sent_at = time.monotonic()
    rig.robot.command(target)
    time.sleep(0.2)  # the emulator's thread has answered long before
    assert rig.robot.read_state().timestamp > sent_at  # the replies to that command, taken in by read_state()
    assert rig.robot.caller_cycles == 106 and rig.robot.status().ok


def test_tick_mode_hold_sends_too_and_a_failed_bus_is_named(make_rig: Any) -> None:
    rig = make_rig(options=TICK)
    rig.robot.command(_here(rig))
    rig.robot.hold()
    assert rig.robot.caller_cycles == 2
    rig.robot.read_state()
    rig.robot._buses[0].shutdown()  # the left arm's link dies under the loop
    # Named by whoever met the dead bus first: the loop (nearly always) or, on a stalled machine, the gap-filler.
    who = r"(the bus I/O of (command|read_state)\(\) \(tick mode\)|the background sender)"
    with pytest.raises(FaultsLatched, match=rf"sender_failed: .*fault latched \({who} stopped \(CanOperationError"):
        for _ in range(3):
            rig.robot.command(_here(rig))
            rig.robot.read_state()
    codes = {f.code for f in rig.robot.status().faults}
    assert codes == {"sender_failed"}
    with pytest.raises(RobotError, match=r"disable could not reach the motors \(arm 'left': CanOperationError"):
        rig.robot.close()  # the right arm is still disabled, and every bus closed
    assert rig.emus["right"].snapshot(1).enabled is False


def test_send_mode_is_checked() -> None:
    with pytest.raises(ValueError, match=r"YamOptions.send_mode must be one of \['thread', 'tick'\], got 'loop'"):
        YamOptions(send_mode="loop")
    with pytest.raises(ValueError, match=r"YamOptions.keepalive_gap_s must lie in \[0.001, 0.2\]"):
        YamOptions(keepalive_gap_s=1.0)


def test_a_deliberate_hold_has_no_deadline_and_the_next_command_rearms_it(make_rig: Any) -> None:
    """After enable() or hold() the motors keep a pose the caller chose (between episodes, during a blocking first
    policy query): safe indefinitely, so no stall fault; the deadline guards a moving target only."""
    rig = make_rig(options=YamOptions(reply_timeout_s=0.05, command_timeout_s=0.3), wall_clock=True)
    time.sleep(0.6)  # enabled, never commanded
    assert rig.robot.status().ok
    rig.robot.command(_here(rig))
    rig.robot.hold()
    time.sleep(0.6)  # held deliberately: twice the deadline
    assert rig.robot.status().ok
    before = _mit_frames(rig)
    _wait_frames(rig, 3)
    assert all(n > before[key] for key, n in _mit_frames(rig).items())  # the hold is still being fed
    rig.robot.command(_here(rig))
    time.sleep(0.6)  # tracking, then silence
    assert [f.code for f in rig.robot.status().faults] == ["servo_loop_stalled"] * 2


def test_the_motor_watchdog_is_set_to_the_factory_400_ms(make_rig: Any) -> None:
    assert ArmConfig.watchdog_ms == 400.0
    assert all(a.watchdog_ms == 400.0 for a in load_robot_config("bimanual_yam").arms)
    assert dm.watchdog_register_value(400.0) == 8000  # register 9, 50 us units: the value the maker's tool writes
    rig = make_rig(enable=False)
    for arm, mid in _all_motors(rig):
        assert [e.kind for e in rig.emus[arm].frame_log(mid)] == ["register_write"]
        assert rig.snap(arm, mid).watchdog_s == pytest.approx(0.4)  # what the motor now holds in register 9
    with pytest.raises(RobotConfigError, match=r"watchdog_ms must be 0 \(off\) or lie in \[50, 10000\]"):
        replace(rig.config.arms[0], watchdog_ms=20.0)


@pytest.mark.parametrize(("arm", "motor", "offset", "joint", "side"), [
    ("left", 1, 3.5, "left_joint1", "upper limit +3.14159"),
    ("right", 2, -0.3, "right_joint2", "lower limit +0.00000"),
])
def test_limit_watch_stops_with_the_joint_named(make_rig: Any, arm: str, motor: int, offset: float, joint: str,
                                                side: str) -> None:
    rig = make_rig(command_dt_s=SLOW)
    target = _start_motion(rig)
    rig.emus[arm].set_position_offset(motor, offset)  # the joint now reads far beyond its limit
    _wait_fault(rig)
    faults = rig.robot.status().faults
    assert (faults[0].joint, faults[0].code) == (joint, "joint_limit_violation")
    assert f"measured {offset:+.1f}" in faults[0].message and side in faults[0].message
    # Every motor still enabled and holding where it was, the violating one included (limp would let it fall).
    for arm_cfg in rig.config.arms:
        for mid in arm_cfg.motor_ids:
            snap = rig.snap(arm_cfg.name, mid)
            assert snap.enabled and snap.mode == OutputMode.MIT, (arm_cfg.name, mid)
            assert snap.command.position == pytest.approx(snap.position, abs=0.01), (arm_cfg.name, mid)
    with pytest.raises(FaultsLatched, match=rf"{joint}: joint_limit_violation: .*beyond its"):
        rig.robot.command(target)


def test_limit_watch_leaves_a_joint_within_the_margin_alone(make_rig: Any) -> None:
    rig = make_rig(positions={"left_joint2": -0.08})  # 0.08 rad under its lower limit: within the 0.1 margin
    rig.robot.hold()
    _wait_frames(rig, 10)
    assert rig.robot.status().ok


def test_silent_clear_error_firmware_still_enables(make_rig: Any) -> None:
    rig = make_rig(unanswered=frozenset({"clear_error"}), enable=False, positions={"left_joint2": 0.7})
    rig.emus["left"].set_error(4, 0xD)  # left over from a dead host: lost communication
    rig.robot.enable()
    _wait_frames(rig, 3)
    assert rig.robot.status().ok
    for arm, mid in _all_motors(rig):
        assert rig.snap(arm, mid).mode == OutputMode.MIT
        kinds = [e.kind for e in rig.emus[arm].frame_log(mid)]
        # Three blind clears, then a frame that changes nothing (disable, to a disabled motor) tells its state.
        assert kinds[1:6] == ["clear_error"] * 3 + ["disable", "enable"]
    assert rig.robot.read_state().positions[1] == pytest.approx(0.7, abs=2e-3)


def test_silent_clear_error_firmware_still_names_a_lasting_error(make_rig: Any) -> None:
    rig = make_rig(unanswered=frozenset({"clear_error"}), enable=False)
    rig.emus["right"].set_temperature(6, rotor_c=130.0)
    with pytest.raises(RobotFault, match=r"right_joint6: motor_overtemperature: status 0xC: .*motor id 6"):
        rig.robot.enable()
    # That arm refused before enabling any of its motors; the arm enabled before it holds.
    assert not any(rig.snap("right", mid).enabled for mid in rig.config.arms[1].motor_ids)
    assert all(rig.snap("left", mid).mode == OutputMode.MIT for mid in rig.config.arms[0].motor_ids)


def test_enable_retries_while_the_reply_shows_an_error(make_rig: Any) -> None:
    """A motor whose error survives the first clears (the reply to enable still shows it) is cleared and enabled
    again, as the maker's driver loops."""
    rig = make_rig(enable=False)
    emu: MotorEmulator = rig.emus["left"]
    # The error re-latches when the first enable arrives (e.g. a brown-out as the motor powers up).
    relatched = threading.Event()
    original = emu._motors[5].on_special

    def on_special(command: dm.SpecialCommand, now: float) -> bytes:
        if command == dm.SpecialCommand.ENABLE and not relatched.is_set():
            relatched.set()
            emu._motors[5].latch(dm.StatusCode.UNDER_VOLTAGE)
        return original(command, now)

    emu._motors[5].on_special = on_special  # type: ignore[method-assign]
    rig.robot.enable()
    kinds = [e.kind for e in emu.frame_log(5)]
    first = kinds.index("enable")
    assert kinds.count("enable") == 2 and kinds[first + 1:first + 4] == ["clear_error"] * 3  # cleared, retried
    assert rig.robot.status().ok and rig.snap("left", 5).mode == OutputMode.MIT


def test_setup_frames_never_interleave_with_the_sender(make_rig: Any) -> None:
    rig = make_rig()
    _wait_frames(rig, 5)
    start = {key: len(rig.emus[key[0]].frame_log(key[1])) for key in _all_motors(rig)}
    rig.robot.enable()  # again, while the sender is feeding every motor
    _wait_frames(rig, 3)
    for arm_cfg in rig.config.arms:
        for k, mid in enumerate(arm_cfg.motor_ids):
            kinds = [e.kind for e in rig.emus[arm_cfg.name].frame_log(mid)][start[(arm_cfg.name, mid)]:]
            first = kinds.index("clear_error")
            enable = kinds.index("enable")
            assert kinds[first:first + 3] == ["clear_error"] * 3
            # Between its clears and its enable, a motor hears only the enable procedure: the hold sent to every
            # enabled motor after each of the k motors before it. One sender cycle in between would add a frame.
            assert kinds[first + 3:enable] == ["mit"] * k, (arm_cfg.name, mid)
            assert set(kinds[:first]) <= {"mit"} and set(kinds[enable + 1:]) == {"mit"}


def _zero_bench(unanswered: frozenset[str] = frozenset(),
                ignored: frozenset[str] = frozenset()) -> tuple[RobotConfig, MotorEmulator]:
    config = make_config()
    arm = config.arms[0]
    emu = MotorEmulator.for_arm(arm, positions={"left_joint1": 0.4, "left_joint3": 0.9},
                                config=EmulatorConfig(unanswered=unanswered, ignored=ignored)).start()
    return config, emu


def test_save_zero_without_an_answer_is_tolerated_and_checked_by_reading_back() -> None:
    config, emu = _zero_bench(unanswered=frozenset({"save_zero"}))
    try:
        with open_arm(config, "left", options=OPTIONS) as arm:
            arm.read_limp()
            arm.save_motor_zero(arm.config.joints)
            np.testing.assert_allclose(arm.read_limp()[:6], 0.0, atol=1e-3)
        assert emu.frames_received(1, "save_zero") == 2  # unanswered: sent, then once more, never required
    finally:
        emu.stop()


def test_save_zero_that_does_not_take_is_a_named_fault() -> None:
    config, emu = _zero_bench(ignored=frozenset({"save_zero"}))
    try:
        with open_arm(config, "left", options=OPTIONS) as arm:
            arm.read_limp()
            with pytest.raises(RobotFault, match=r"left_joint1: save_zero_failed: reads \+0\.4000 rad after"):
                arm.save_motor_zero(arm.config.joints)
            assert {f.joint for f in arm.faults} == {"left_joint1", "left_joint3"}
    finally:
        emu.stop()


def test_bad_options_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"YamOptions.send_hz must lie in \[10, 500\]"):
        YamOptions(send_hz=0.0)
    with pytest.raises(ValueError, match=r"YamOptions.command_timeout_s"):
        YamOptions(command_timeout_s=math.nan)
    with pytest.raises(ValueError, match=r"EmulatorConfig.unanswered: unknown frame kinds \['clear'\]"):
        EmulatorConfig(unanswered=frozenset({"clear"}))


# -- velocity feed-forward (v_des) -------------------------------------------------------------------------------
def test_planned_velocities_reach_the_motors_as_v_des_and_go_stale_to_zero(make_rig: Any) -> None:
    """The servo's planned velocity is each arm motor's v_des (the gripper's stays 0: its force limiter owns it)
    while fresh; once the servo loop is late, the repeated frames hold the target with v_des 0."""
    rig = make_rig(options=replace(OPTIONS, velocity_fresh_s=0.15))
    here = _here(rig)
    velocities = np.array([0.3, -0.2, 0.1, 0.4, -0.5, 0.6, 0.9, -0.3, 0.2, -0.1, 0.25, 0.35, -0.45, 0.7])
    rig.robot.command(here, velocities)
    _wait_frames(rig, 2)
    step = {m: dm.lsb(-dm.MOTOR_LIMITS[t].v_max, dm.MOTOR_LIMITS[t].v_max, 12)
            for m, t in zip(range(1, 8), rig.config.arms[0].motor_types, strict=True)}
    for a, arm in enumerate(rig.config.arms):
        for k, mid in enumerate(arm.motor_ids):
            expected = 0.0 if k == len(arm.motor_ids) - 1 else velocities[7 * a + k]
            assert rig.snap(arm.name, mid).command.velocity == pytest.approx(expected, abs=step[k + 1]), (arm.name, mid)
    time.sleep(0.5)  # no command: the servo loop is "late"
    _wait_frames(rig, 2)
    for arm in rig.config.arms:
        for k, mid in enumerate(arm.motor_ids):
            assert rig.snap(arm.name, mid).command.velocity == pytest.approx(0.0, abs=step[k + 1])
    rig.robot.command(here, velocities)
    rig.robot.hold()
    _wait_frames(rig, 2)
    assert rig.snap("left", 1).command.velocity == pytest.approx(0.0, abs=step[1])


@pytest.mark.parametrize(("velocities", "match"), [
    (np.full(13, 0.1), "expected 14 joint velocities"),
    (np.array([0.0] * 3 + [np.nan] + [0.0] * 10), r"velocities\[3\] \(left_joint4\)"),
    (np.array([0.0] * 9 + [100.0] + [0.0] * 4), r"velocities\[9\] \(right_joint3\)"),
])
def test_bad_planned_velocities_are_refused_naming_the_joint(make_rig: Any, velocities: np.ndarray,
                                                             match: str) -> None:
    rig = make_rig()
    with pytest.raises(RobotCommandError, match=match):
        rig.robot.command(_here(rig), velocities)
    assert rig.robot.status().ok
