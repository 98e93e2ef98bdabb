"""Gripper closed/open motor positions by driving the gripper motor into both stops at low torque.

The procedure, after i2rt's `detect_gripper_limits` (see the YAM fact sheet, section 5):
- The arm is enabled holding every motor where it is (`YamArm.enable_holding`); the joints keep their configured
  gains and hold their measured position throughout, so the arm does not sag or go limp while the gripper moves.
- The gripper motor gets MIT frames with kp = 0, a small kd (damping, so it does not slam into the stop) and a
  feed-forward torque of +-`torque` (0.5 N m by default: enough to move the jaw, far too little to hurt).
- A stop is declared when the gripper position changes by less than `still_rad` (0.01 rad) over `still_checks`
  (3) consecutive checks `check_s` (50 ms) apart. No stop within `timeout_s` (2 s) is an error: the position
  where the time ran out is not a stop.
- Closing first, then opening. Closing is the positive motor direction for the YAM grippers (closed = the larger
  motor position, open the smaller, e.g. closed 0, open -6.57), except `flexible_4310`, whose motor is mounted
  reversed (motor_direction -1 in i2rt).

Timing is counted in commanded cycles of `cycle_s` (paced on the wall clock), so "3 checks 50 ms apart" is the
same on the real arm and in the emulator, where motion advances per command received.

The measured span must look like the gripper type's stroke (`check_span`): a jaw blocked by an object, or a stop
that was never reached, gives a span far below the nominal 6.57 motor rad of the linear grippers, and limits like
that would make the driver's 0..1 opening map onto a fraction of the stroke. Such a result is refused and nothing
is written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robot_client.calfile import CalibrationError
from robot_client.yam.arm import F64, YamArm


class GripperCalibrationFailed(CalibrationError):
    """No usable gripper range: no stop reached, or an implausible span; names the gripper."""


@dataclass(frozen=True)
class GripperType:
    stroke_rad: float  # nominal motor travel from closed to open
    closing_sign: int  # +1: closing drives the motor position up (closed = max), -1: down


# Fact sheet section 5. crank_4310's stroke is the span of its former hard-coded limits [0, -2.7] (inferred).
GRIPPER_TYPES: dict[str, GripperType] = {
    "linear_4310": GripperType(6.57, +1),
    "linear_3507": GripperType(6.57, +1),
    "flexible_4310": GripperType(6.57, -1),
    "crank_4310": GripperType(2.7, +1),
}
MIN_SPAN_FRACTION = 0.6  # of the nominal stroke: below it the jaw was blocked or a stop was missed
MAX_SPAN_FRACTION = 1.5  # above it the config names the wrong gripper type (or the motor slipped)


def gripper_type(name: str) -> GripperType:
    try:
        return GRIPPER_TYPES[name]
    except KeyError:
        raise GripperCalibrationFailed(f"unknown gripper_type {name!r}; known {sorted(GRIPPER_TYPES)}") from None


@dataclass(frozen=True)
class StallConfig:
    torque: float = 0.5  # N m, feed-forward into the stops
    kd: float = 0.05  # N m s / rad on the gripper motor while it is driven
    cycle_s: float = 0.005  # command period (the motor watchdog needs a frame well within watchdog_ms)
    check_s: float = 0.05
    still_rad: float = 0.01
    still_checks: int = 3
    timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.torque <= 2.0:
            raise ValueError(f"torque must be in (0, 2] N m (a low-torque procedure), got {self.torque}")
        if not 0 <= self.kd <= 1.0:
            raise ValueError(f"kd must be in [0, 1], got {self.kd}")
        if not (0 < self.cycle_s <= self.check_s and self.still_rad > 0 and self.still_checks >= 1
                and self.timeout_s > self.check_s * self.still_checks):
            raise ValueError(f"inconsistent stall settings {self}")

    @property
    def method(self) -> str:
        return (f"stall detection at {self.torque:g} N m (kd {self.kd:g}; stop = change < {self.still_rad:g} rad over "
                f"{self.still_checks} checks {self.check_s * 1e3:.0f} ms apart)")


@dataclass(frozen=True)
class StopReading:
    position: float  # motor rad where the gripper stalled
    start: float  # motor rad where this direction started
    elapsed_s: float  # commanded cycles x cycle_s


def drive_to_stop(arm: YamArm, hold: F64, direction: int, cfg: StallConfig,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> StopReading:
    """Push the gripper with `direction` x torque until it stalls; the joints hold at `hold` (motor rad).

    The arm must be enabled (`enable_holding`). Raises GripperCalibrationFailed when no stop is reached.
    """
    g = arm.gripper_index
    n = len(arm.motors)
    kp = np.array([m.kp for m in arm.motors])
    kd = np.array([m.kd for m in arm.motors])
    kp[g], kd[g] = 0.0, cfg.kd
    extra = np.zeros(n)
    extra[g] = math.copysign(cfg.torque, direction)
    every = max(1, round(cfg.check_s / cfg.cycle_s))
    cycles = math.ceil(cfg.timeout_s / cfg.cycle_s)
    p_max = arm.motors[g].limits.p_max
    start = last = position = float(arm.motor_positions()[g])
    still = 0
    deadline = clock()
    for cycle in range(1, cycles + 1):
        target = hold.copy()
        target[g] = min(p_max, max(-p_max, position))  # irrelevant with kp = 0, but must be representable
        arm.command_motors(target, kp=kp, kd=kd, extra_torque=extra)
        position = float(arm.motor_positions()[g])
        if cycle % every == 0:
            still = still + 1 if abs(position - last) < cfg.still_rad else 0
            last = position
            if still >= cfg.still_checks:
                return StopReading(position, start, cycle * cfg.cycle_s)
        deadline += cfg.cycle_s
        delay = deadline - clock()
        if delay > 0:
            sleep(delay)
        else:
            deadline = clock()  # running late (slow bus): keep the period from here, never burst
    word = "closing" if direction * gripper_type_sign(arm) > 0 else "opening"
    raise GripperCalibrationFailed(
        f"{arm.config.gripper}: no stop within {cfg.timeout_s:g} s {word} at {cfg.torque:g} N m (moved from "
        f"{start:+.3f} to {position:+.3f} motor rad); check that the jaw moves freely and that gripper_type "
        f"{arm.config.gripper_type!r} is right, or raise --timeout")


def gripper_type_sign(arm: YamArm) -> int:
    return gripper_type(arm.config.gripper_type).closing_sign


def measure_gripper(arm: YamArm, cfg: StallConfig, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> tuple[float, float]:
    """(closed, open) motor positions: enable holding, close into the stop, open into the stop.

    The caller disables the arm afterwards (`open_arm` does on exit).
    """
    sign = gripper_type_sign(arm)
    arm.enable_holding()
    hold = arm.motor_positions()
    closed = drive_to_stop(arm, hold, +sign, cfg, sleep, clock)
    opened = drive_to_stop(arm, hold, -sign, cfg, sleep, clock)
    return closed.position, opened.position


def check_span(gripper: str, type_name: str, closed: float, opened: float, p_max: float = 12.5) -> None:
    """Refuse limits that cannot be this gripper's stroke (names the gripper, the span and the expected range)."""
    gtype = gripper_type(type_name)
    for label, value in (("closed", closed), ("open", opened)):
        if not (math.isfinite(value) and abs(value) <= p_max):
            raise GripperCalibrationFailed(f"{gripper}: {label} = {value} motor rad is outside the motor's "
                                           f"+-{p_max} rad range")
    span = abs(opened - closed)
    low, high = MIN_SPAN_FRACTION * gtype.stroke_rad, MAX_SPAN_FRACTION * gtype.stroke_rad
    if span < low:
        raise GripperCalibrationFailed(
            f"{gripper} ({type_name}): span {span:.3f} motor rad (closed {closed:+.3f}, open {opened:+.3f}) is "
            f"implausibly small: below {MIN_SPAN_FRACTION:.0%} of the nominal {gtype.stroke_rad:g} rad stroke "
            f"({low:.2f}); the jaw was blocked or did not reach a stop. Clear the jaws and rerun; nothing was "
            f"written")
    if span > high:
        raise GripperCalibrationFailed(
            f"{gripper} ({type_name}): span {span:.3f} motor rad (closed {closed:+.3f}, open {opened:+.3f}) is "
            f"implausibly large: above {MAX_SPAN_FRACTION:.0%} of the nominal {gtype.stroke_rad:g} rad stroke "
            f"({high:.2f}); check gripper_type in the robot config; nothing was written")
