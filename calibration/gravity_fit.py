"""Per-joint gravity factors of one real arm: hold still at several poses, fit the model's torque to the measured.

Why: the arm model's masses and centres of mass are the maker's CAD numbers; the real arm differs (cables, the
camera mount, a different gripper), and a factor too low leaves the arm sagging under PD while one too high
lifts it. The maker ships per-joint factors tuned by hand; this measures the arm's own.

The procedure:
- Enable holding where the arm is (`YamArm.enable_holding`), with the gravity feed-forward of the robot config
  on, so the arm does not drop at enable nor between poses.
- Visit each pose of `poses` (joint angles, zero offsets applied) along a straight line in joint space at
  `speed` rad/s, commanding every `cycle_s`; the gripper motor holds where it is.
- At each pose wait `settle_s`, then for `hold_s` average what each joint motor reports: its position and its
  torque. The motors report their total output torque (the current they drive), which at rest balances gravity
  whatever the split between kp x sag and feed-forward; so the feed-forward on during the hold changes nothing
  to the reading, and only keeps the sag (and the joints' own friction band) small. A joint that moved during
  the hold (velocity above `max_velocity`) refuses the pose: the reading is not static.
- Least squares per joint (`robot_client.gravity.fit_factors`) of the model's torque at the measured angles
  against the reported torque. A joint whose model torque stays small over the poses (joint 1 on a level base,
  the wrist roll) carries no information: it keeps its current factor, and the report says so. A fitted factor
  outside `factor_range` is refused (wrong zero offsets, a payload, a model that does not fit this arm).
- Back to where the arm started, at rest there, then the caller disables it (limp), as every calibration
  procedure ends.

Timing counts commanded cycles of `cycle_s` paced on the wall clock (the emulator advances motion per command).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from robot_client.calfile import CalibrationError
from robot_client.gravity import ARM_JOINTS, GravityModel, fit_factors
from robot_client.yam.arm import F64, YamArm
from robot_client.yam.gravity_ff import ArmGravity

# Still poses near home (rad, joints 1-6): joints 2 and 3 off their stops (a stop would carry part of the load),
# the forearm at different angles to gravity so joints 2-4 each see torques of both sizes (and joint 2 both
# signs), the wrist tilted a little. No pose reaches further than the forearm lifted to about horizontal.
DEFAULT_POSES: tuple[tuple[float, ...], ...] = (
    (0.0, 0.5, 0.5, 0.0, 0.0, 0.0),
    (0.0, 0.9, 0.6, 0.3, 0.0, 0.0),
    (0.0, 1.2, 1.0, -0.3, 0.0, 0.0),
    (0.0, 0.6, 1.1, 0.5, 0.0, 0.0),
    (0.3, 1.0, 0.7, 0.0, 0.4, 0.0),
    (-0.3, 0.8, 1.3, -0.4, -0.4, 0.0),
    (0.0, 0.4, 0.3, 0.5, 0.0, 0.0),
)


class GravityCalibrationFailed(CalibrationError):
    """The arm's torques could not be measured or do not fit the model; the message names the pose or joint."""


@dataclass(frozen=True)
class GravityProcedure:
    poses: tuple[tuple[float, ...], ...] = DEFAULT_POSES
    speed: float = 0.3  # rad/s along the joint-space line between poses
    settle_s: float = 1.0
    hold_s: float = 1.0
    cycle_s: float = 0.005
    max_velocity: float = 0.05  # rad/s: any joint faster than this during a hold is not still
    min_signal_nm: float = 0.3  # rms model torque over the poses below this: the joint is not fitted
    factor_range: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        if len(self.poses) < 2:
            raise ValueError(f"poses: at least 2 still poses are needed, got {len(self.poses)}")
        for i, pose in enumerate(self.poses):
            if len(pose) != ARM_JOINTS or not all(math.isfinite(v) for v in pose):
                raise ValueError(f"poses[{i}]: expected {ARM_JOINTS} finite joint angles (rad), got {list(pose)}")
        checks = {"speed": (self.speed, 0.0, 1.0), "settle_s": (self.settle_s, 0.0, 30.0),
                  "hold_s": (self.hold_s, 0.0, 30.0), "cycle_s": (self.cycle_s, 0.0, 0.05),
                  "max_velocity": (self.max_velocity, 0.0, 1.0), "min_signal_nm": (self.min_signal_nm, 0.0, 10.0)}
        for name, (value, low, high) in checks.items():
            if not (math.isfinite(value) and low < value <= high):
                raise ValueError(f"{name} must lie in ({low:g}, {high:g}], got {value}")
        if self.hold_s < self.cycle_s:
            raise ValueError(f"hold_s ({self.hold_s}) must cover at least one cycle ({self.cycle_s} s)")
        low, high = self.factor_range
        if not 0 < low < 1 < high <= 3:
            raise ValueError(f"factor_range must satisfy 0 < low < 1 < high <= 3, got {self.factor_range}")

    def check_limits(self, lower: Sequence[float], upper: Sequence[float], names: Sequence[str]) -> None:
        """Refuse poses outside the joints' limits (names the pose and the joint)."""
        for i, pose in enumerate(self.poses):
            for j, value in enumerate(pose):
                if not lower[j] <= value <= upper[j]:
                    raise ValueError(f"poses[{i}]: {names[j]} = {value:+.3f} rad outside its limits "
                                     f"[{lower[j]:+.3f}, {upper[j]:+.3f}]")

    @property
    def method(self) -> str:
        return (f"least squares over {len(self.poses)} still poses ({self.settle_s:g} s settle, {self.hold_s:g} s "
                f"averaged), motors' reported torque vs the arm model's gravity")


@dataclass(frozen=True)
class PoseReading:
    joints: F64  # mean joint angles (rad, zero offsets applied) over the hold
    torques: F64  # mean reported torque per joint (N m)
    gripper_motor: float  # gripper motor position (rad)
    peak_velocity: float  # largest |velocity| of any joint during the hold


@dataclass(frozen=True)
class GravityFit:
    factors: F64  # per joint: fitted, or the current factor where not fitted
    residual_nm: F64  # rms misfit per joint with those factors
    fitted: tuple[bool, ...]
    signal_nm: F64  # rms model torque per joint over the poses
    raw: F64  # [K, 6] model torque at the measured poses
    measured: F64  # [K, 6] reported torque

    def lines(self, names: Sequence[str]) -> list[str]:
        out = []
        for j, name in enumerate(names):
            why = "fitted" if self.fitted[j] else "kept (model torque too small to fit)"
            out.append(f"{name:<16} factor {self.factors[j]:.3f}  residual {self.residual_nm[j]:.3f} N m rms  "
                       f"(model {self.signal_nm[j]:.2f} N m rms)  {why}")
        return out


def _pace(deadline: float, cycle_s: float, sleep: Callable[[float], None], clock: Callable[[], float]) -> float:
    deadline += cycle_s
    delay = deadline - clock()
    if delay > 0:
        sleep(delay)
        return deadline
    return clock()  # running late: keep the period from here, never burst


def _command(arm: YamArm, joints: F64, gripper_motor: float) -> None:
    target = np.append(joints + arm.zero_offsets[:ARM_JOINTS], gripper_motor)
    arm.command_motors(target)


def move_to(arm: YamArm, goal: F64, proc: GravityProcedure, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> None:
    """Straight line in joint space from the measured pose to `goal` at `proc.speed`, the gripper holding."""
    state = arm.motor_positions()
    start = state[:ARM_JOINTS] - arm.zero_offsets[:ARM_JOINTS]
    gripper = float(state[ARM_JOINTS])
    distance = float(np.max(np.abs(goal - start)))
    cycles = max(1, math.ceil(distance / proc.speed / proc.cycle_s))
    deadline = clock()
    for k in range(1, cycles + 1):
        _command(arm, start + (goal - start) * (k / cycles), gripper)
        deadline = _pace(deadline, proc.cycle_s, sleep, clock)


def hold_and_read(arm: YamArm, pose: F64, proc: GravityProcedure, sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> PoseReading:
    """Hold `pose`, wait `settle_s`, then average positions and reported torques for `hold_s`."""
    gripper = float(arm.motor_positions()[ARM_JOINTS])
    settle = math.ceil(proc.settle_s / proc.cycle_s)
    hold = max(1, math.ceil(proc.hold_s / proc.cycle_s))
    joints, torques, peak = np.zeros(ARM_JOINTS), np.zeros(ARM_JOINTS), 0.0
    deadline = clock()
    for k in range(settle + hold):
        _command(arm, pose, gripper)
        if k >= settle:
            joints += arm.motor_positions()[:ARM_JOINTS] - arm.zero_offsets[:ARM_JOINTS]
            fbs = [arm.motors[j].feedback for j in range(ARM_JOINTS)]
            torques += np.array([fb.torque if fb is not None else math.nan for fb in fbs])
            peak = max(peak, max(abs(fb.velocity) if fb is not None else math.inf for fb in fbs))
        deadline = _pace(deadline, proc.cycle_s, sleep, clock)
    return PoseReading(joints / hold, torques / hold, gripper, peak)


def measure_arm(arm: YamArm, proc: GravityProcedure, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic,
                progress: Callable[[str], None] | None = None) -> list[PoseReading]:
    """Enable holding, visit every pose and read it, return to the start pose. The caller disables the arm."""
    arm.enable_holding()
    start = arm.motor_positions()[:ARM_JOINTS] - arm.zero_offsets[:ARM_JOINTS]
    readings = []
    try:
        for i, pose in enumerate(proc.poses):
            goal = np.asarray(pose, dtype=np.float64)
            move_to(arm, goal, proc, sleep, clock)
            reading = hold_and_read(arm, goal, proc, sleep, clock)
            if progress is not None:
                progress(f"pose {i + 1}/{len(proc.poses)} {np.round(goal, 2).tolist()}: torques "
                         f"{np.round(reading.torques, 3).tolist()} N m")
            if not reading.peak_velocity <= proc.max_velocity:
                raise GravityCalibrationFailed(
                    f"pose {i + 1} {list(pose)}: the arm moved while held (peak joint speed "
                    f"{reading.peak_velocity:.3f} rad/s > {proc.max_velocity:g}); keep it clear and untouched, or "
                    f"raise --settle")
            readings.append(reading)
    finally:
        if arm.enabled:
            move_to(arm, start, proc, sleep, clock)
            hold_and_read(arm, start, proc, sleep, clock)  # come to rest there before the caller goes limp
    return readings


def fit_arm(readings: Sequence[PoseReading], gravity: ArmGravity, current: Sequence[float],
            proc: GravityProcedure, names: Sequence[str]) -> GravityFit:
    """Fit the factors (see the module docstring); GravityCalibrationFailed names an implausible joint."""
    model: GravityModel = gravity.model
    raw = np.array([model.raw(r.joints, gravity.opening(r.gripper_motor)) for r in readings])
    measured = np.array([r.torques for r in readings])
    if not np.isfinite(measured).all():
        raise GravityCalibrationFailed("a joint reported no torque during a hold")
    factors, _ = fit_factors(raw, measured)
    signal = np.sqrt((raw ** 2).mean(axis=0))
    fitted = tuple(bool(s >= proc.min_signal_nm) for s in signal)
    chosen = np.where(fitted, factors, np.asarray(current, dtype=np.float64))
    residual = np.sqrt(((raw * chosen - measured) ** 2).mean(axis=0))
    low, high = proc.factor_range
    bad = [f"{names[j]} {chosen[j]:.3f}" for j in range(ARM_JOINTS) if fitted[j] and not low <= chosen[j] <= high]
    if bad:
        raise GravityCalibrationFailed(
            f"implausible gravity factors {', '.join(bad)} (expected [{low:g}, {high:g}]): check the zero offsets "
            f"(`python -m calibration joints --check`), that nothing rests on or hangs from the arm, and that the "
            f"arm is the model's; nothing was written")
    return GravityFit(chosen, residual, fitted, signal, raw, measured)
