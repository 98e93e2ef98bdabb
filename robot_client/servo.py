"""Jerk-limited servo: turns a (possibly jumping) stream of action targets into a smooth joint trajectory.

Each servo tick (e.g. 200 Hz) runs one step of ruckig's online trajectory generation (Community edition:
streaming targets, no waypoints -- setting intermediate positions would call a cloud API) from the servo's own
kinematic state (position, velocity, acceleration) toward the current target, under per-joint velocity,
acceleration and jerk limits. Position limits are ours to enforce (Community ruckig has none):
- the target is clamped into [lower, upper] (every clamp is reported by joint);
- the allowed velocity towards a limit shrinks to what can still be braked at max acceleration
  (v <= sqrt(2 a d)), so the trajectory cannot overshoot a limit while chasing a target at it;
- a final clamp of the output position exists as a last guard and is reported as a fault-level event.

`stop()` switches to ruckig's velocity interface with target velocity 0: a jerk-limited stop where the arm is,
without returning to a stale target (how we hold on server loss or e-stop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from ruckig import ControlInterface, InputParameter, OutputParameter, Result, Ruckig, RuckigError

from robot_client.config import RobotConfig

F64 = npt.NDArray[np.float64]


class ServoError(RuntimeError):
    """The trajectory generator rejected its input (names the reason) or the servo was misused."""


@dataclass(frozen=True)
class ServoStep:
    position: F64
    velocity: F64
    acceleration: F64
    jerk: F64
    # Joint names whose target had to be clamped into the position limits this tick.
    target_clamped: tuple[str, ...] = ()
    # Joint names whose *output* had to be clamped (should never happen; reported loudly).
    output_clamped: tuple[str, ...] = ()
    stopping: bool = False


@dataclass
class ServoLimits:
    lower: F64
    upper: F64
    velocity: F64
    acceleration: F64
    jerk: F64
    names: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, config: RobotConfig, scale_velocity: float = 1.0) -> ServoLimits:
        arrays = config.limit_arrays()
        return cls(
            lower=np.asarray(arrays["lower"], dtype=np.float64),
            upper=np.asarray(arrays["upper"], dtype=np.float64),
            velocity=np.asarray(arrays["velocity"], dtype=np.float64) * scale_velocity,
            acceleration=np.asarray(arrays["acceleration"], dtype=np.float64),
            jerk=np.asarray(arrays["jerk"], dtype=np.float64),
            names=config.joint_names,
        )


class JerkLimitedServo:
    def __init__(self, limits: ServoLimits, period_s: float) -> None:
        if not 0 < period_s < 0.1:
            raise ServoError(f"servo period must be in (0, 0.1) s, got {period_s}")
        self.limits = limits
        self.period_s = period_s
        self.dof = len(limits.lower)
        self._otg = Ruckig(self.dof, period_s)
        self._inp = InputParameter(self.dof)
        self._out = OutputParameter(self.dof)
        self._inp.max_acceleration = limits.acceleration.tolist()
        self._inp.max_jerk = limits.jerk.tolist()
        self._initialized = False
        self._stopping = False
        self._velocity_scale = 1.0

    # -- state ----------------------------------------------------------------------------------------------
    def reset(self, position: F64, velocity: F64 | None = None) -> None:
        """Start from a measured state (acceleration assumed 0)."""
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (self.dof,) or not np.all(np.isfinite(position)):
            raise ServoError(f"servo reset needs {self.dof} finite positions, got {position}")
        self._inp.current_position = position.tolist()
        self._inp.current_velocity = (np.zeros(self.dof) if velocity is None else np.asarray(velocity)).tolist()
        self._inp.current_acceleration = [0.0] * self.dof
        self._inp.target_position = position.tolist()
        self._inp.target_velocity = [0.0] * self.dof
        self._inp.target_acceleration = [0.0] * self.dof
        self._inp.control_interface = ControlInterface.Position
        self._stopping = False
        self._initialized = True

    @property
    def position(self) -> F64:
        return np.asarray(self._inp.current_position, dtype=np.float64)

    @property
    def velocity(self) -> F64:
        return np.asarray(self._inp.current_velocity, dtype=np.float64)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def is_still(self, tolerance: float = 1e-4) -> bool:
        return bool(np.all(np.abs(self.velocity) < tolerance))

    def set_velocity_scale(self, scale: float) -> None:
        """Scale the velocity limits (e.g. a slow ramp to the first action); 1.0 = configured limits."""
        if not 0 < scale <= 1.0:
            raise ServoError(f"velocity scale must be in (0, 1], got {scale}")
        self._velocity_scale = scale

    # -- control --------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Decelerate to rest where the arm is (jerk-limited), ignoring targets until `resume()`."""
        self._stopping = True

    def resume(self) -> None:
        self._stopping = False

    def step(self, target: F64) -> ServoStep:
        """One tick toward `target` (ignored while stopping). Returns the command for this tick."""
        if not self._initialized:
            raise ServoError("servo not initialized: call reset() with the measured state first")
        lim = self.limits
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (self.dof,) or not np.all(np.isfinite(target)):
            bad = [lim.names[i] if lim.names else str(i) for i in np.flatnonzero(~np.isfinite(target))]
            raise ServoError(f"servo target must be {self.dof} finite values; non-finite: {bad}")
        clamped_target = np.clip(target, lim.lower, lim.upper)
        target_clamped = self._names(np.abs(clamped_target - target) > 1e-12)
        pos = self.position
        vmax = lim.velocity * self._velocity_scale
        # Never faster towards a limit than can be braked before reaching it.
        room_up = np.maximum(lim.upper - pos, 0.0)
        room_down = np.maximum(pos - lim.lower, 0.0)
        self._inp.max_velocity = np.minimum(vmax, np.sqrt(2 * lim.acceleration * room_up) + 1e-6).tolist()
        self._inp.min_velocity = (-np.minimum(vmax, np.sqrt(2 * lim.acceleration * room_down) + 1e-6)).tolist()
        if self._stopping:
            self._inp.control_interface = ControlInterface.Velocity
            self._inp.target_velocity = [0.0] * self.dof
        else:
            self._inp.control_interface = ControlInterface.Position
            self._inp.target_position = clamped_target.tolist()
            self._inp.target_velocity = [0.0] * self.dof
        self._inp.target_acceleration = [0.0] * self.dof
        try:
            result = self._otg.update(self._inp, self._out)
        except RuckigError as exc:
            raise ServoError(f"trajectory generation failed: {exc}") from exc
        if result not in (Result.Working, Result.Finished):
            raise ServoError(f"trajectory generation returned {result}")
        new_pos = np.asarray(self._out.new_position, dtype=np.float64)
        safe_pos = np.clip(new_pos, lim.lower, lim.upper)
        output_clamped = self._names(np.abs(safe_pos - new_pos) > 1e-9)
        step = ServoStep(
            position=safe_pos,
            velocity=np.asarray(self._out.new_velocity, dtype=np.float64),
            acceleration=np.asarray(self._out.new_acceleration, dtype=np.float64),
            jerk=np.asarray(self._out.new_jerk, dtype=np.float64),
            target_clamped=target_clamped,
            output_clamped=output_clamped,
            stopping=self._stopping,
        )
        self._out.pass_to_input(self._inp)
        if output_clamped:
            self._inp.current_position = safe_pos.tolist()
        return step

    def _names(self, mask: npt.NDArray[np.bool_]) -> tuple[str, ...]:
        idx = np.flatnonzero(mask)
        names = self.limits.names
        return tuple(names[i] if names else str(i) for i in idx)


def braking_distance(velocity: float, acceleration: float) -> float:
    """Distance to stop from `velocity` at constant `acceleration` (jerk ignored; a lower bound)."""
    return velocity * velocity / (2 * acceleration) if acceleration > 0 else math.inf
