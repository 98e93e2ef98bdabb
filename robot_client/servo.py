"""Jerk-limited servo: turns a (possibly jumping) stream of action targets into a smooth joint trajectory.

Each servo tick (e.g. 200 Hz) runs one step of ruckig's online trajectory generation (Community edition:
streaming targets, no waypoints -- setting intermediate positions would call a cloud API) from the servo's own
kinematic state (position, velocity, acceleration) toward the current target, under per-joint velocity,
acceleration and jerk limits. Position limits are ours to enforce (Community ruckig has none):
- the target is clamped into [lower, upper] (every clamp is reported by joint);
- the allowed velocity towards a limit shrinks to what can still be braked at max acceleration
  (v <= sqrt(2 a d)), so the trajectory cannot overshoot a limit while chasing a target at it;
- a one-tick look-ahead plans the fastest jerk-limited stop from every new state and brakes a joint now when
  that stop would end past its limit (the bound above alone ignores the acceleration a joint already has);
- a final clamp of the output position exists as a last guard and is reported as a fault-level event.

Two modes: a fixed target is reached time-optimally and the arm rests there (position interface: ramps, moves
to a pose); a moving target with its velocity (a chunk's interpolated actions) is tracked in the velocity
interface with v = v_target + k (p_target - p), which follows a motion instead of stopping at every sample.

`stop()` switches to ruckig's velocity interface with target velocity 0: a jerk-limited stop where the arm is,
without returning to a stale target (how we hold on server loss or e-stop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from ruckig import (
    ControlInterface,
    InputParameter,
    OutputParameter,
    Result,
    Ruckig,
    RuckigError,
    Synchronization,
    Trajectory,
)

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
    # Position feedback of the tracking mode (1/s): 5 tracks the sample dataset's motions with mean errors of
    # 2-11 mrad where stopping at every target gave 15-38 mrad; 10 and above start to ring under the jerk limits.
    tracking_gain = 5.0

    def __init__(self, limits: ServoLimits, period_s: float) -> None:
        if not 0 < period_s < 0.1:
            raise ServoError(f"servo period must be in (0, 0.1) s, got {period_s}")
        self.limits = limits
        self.period_s = period_s
        self.dof = len(limits.lower)
        self._otg = Ruckig(self.dof, period_s)
        self._inp = InputParameter(self.dof)
        self._out = OutputParameter(self.dof)
        # A second generator that only plans "brake now" trajectories (never stepped) for the limit look-ahead.
        self._brake_otg = Ruckig(self.dof)
        self._brake_inp = InputParameter(self.dof)
        self._brake_inp.control_interface = ControlInterface.Velocity
        self._brake_inp.synchronization = Synchronization.No
        self._brake_inp.target_velocity = [0.0] * self.dof
        self._brake_inp.max_velocity = (limits.velocity * 10).tolist()
        self._brake_inp.max_acceleration = limits.acceleration.tolist()
        self._brake_inp.max_jerk = limits.jerk.tolist()
        self._brake_trajectory = Trajectory(self.dof)
        self._inp.max_acceleration = limits.acceleration.tolist()
        self._inp.max_jerk = limits.jerk.tolist()
        self._initialized = False
        self._stopping = False
        self._velocity_scale = 1.0
        # Ticks on which ruckig's synchronized solve failed numerically and a fallback step was used.
        self.fallbacks = 0
        # Ticks on which the limit look-ahead replaced a joint's step by an immediate jerk-limited brake.
        self.limit_brakes = 0

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

    def step(self, target: F64, target_velocity: F64 | None = None) -> ServoStep:
        """One tick toward `target` (ignored while stopping). Returns the command for this tick.

        Without `target_velocity` the servo reaches a (fixed) target time-optimally and comes to rest there (ramps,
        moves to a pose). With it, the target is a moving one (a chunk's interpolated actions): the servo tracks it
        in ruckig's velocity interface with v = v_target + k_p (p_target - p), so it does not plan to stop at every
        sample (which trails a moving target by 0.1-0.3 s); limits apply the same way in both modes.
        """
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
        # Tracking mode has no target position for ruckig to stop at, so it needs the jerk-aware bound; in
        # position mode ruckig plans the stop itself and the plain v = sqrt(2 a d) bound only guards against a
        # target jumping to a limit while moving fast (a stricter bound there makes ruckig ring around the limit).
        tracking = target_velocity is not None and not self._stopping
        jerk = lim.jerk if tracking else None
        self._inp.max_velocity = np.minimum(vmax, braking_velocity(room_up, lim.acceleration, jerk)).tolist()
        self._inp.min_velocity = (-np.minimum(vmax, braking_velocity(room_down, lim.acceleration, jerk))).tolist()
        if self._stopping:
            self._inp.control_interface = ControlInterface.Velocity
            self._inp.target_velocity = [0.0] * self.dof
        elif target_velocity is not None:
            feedforward = np.asarray(target_velocity, dtype=np.float64)
            if feedforward.shape != (self.dof,) or not np.all(np.isfinite(feedforward)):
                raise ServoError(f"target velocity must be {self.dof} finite values")
            # A target held at a limit must not be pushed through it by the velocity of the (unclamped) motion.
            at_upper = (clamped_target >= lim.upper) & (feedforward > 0)
            at_lower = (clamped_target <= lim.lower) & (feedforward < 0)
            feedforward = np.where(at_upper | at_lower, 0.0, feedforward)
            wanted = feedforward + self.tracking_gain * (clamped_target - pos)
            low, high = np.asarray(self._inp.min_velocity), np.asarray(self._inp.max_velocity)
            self._inp.control_interface = ControlInterface.Velocity
            self._inp.target_velocity = np.clip(wanted, low, high).tolist()
        else:
            self._inp.control_interface = ControlInterface.Position
            self._inp.target_position = clamped_target.tolist()
            self._inp.target_velocity = [0.0] * self.dof
        self._inp.target_acceleration = [0.0] * self.dof
        self._update(clamped_target, pos)
        if not self._stopping:
            self._brake_where_a_limit_would_be_crossed(clamped_target, pos)
        new_pos = np.asarray(self._out.new_position, dtype=np.float64)
        safe_pos = np.clip(new_pos, lim.lower, lim.upper)
        # Overshoots below a micro-radian (floating-point residue of a start exactly at a limit) are clamped
        # silently: a thousandth of the motors' encoder resolution.
        output_clamped = self._names(np.abs(safe_pos - new_pos) > 1e-6)
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

    def _brake_where_a_limit_would_be_crossed(self, clamped_target: F64, pos: F64) -> None:
        """Look-ahead that makes the position limits hold under the jerk limit, whatever the targets do.

        After the tentative step, plan for each joint the fastest jerk-limited stop from the new state; a joint
        whose stop would end past its limit is re-stepped braking now instead. Braking from a state that passed
        this check the tick before always fits (it is the very stop that was checked), so by induction the limits
        hold from any start at rest. A velocity bound alone cannot promise that: it ignores the acceleration
        the joint already has when the bound is crossed."""
        lim = self.limits
        new = (np.asarray(self._out.new_position), np.asarray(self._out.new_velocity),
               np.asarray(self._out.new_acceleration))
        reach_high, reach_low = self._stopping_reach(*new)
        crossing = (reach_high > lim.upper + 1e-7) | (reach_low < lim.lower - 1e-7)
        if not np.any(crossing):
            return
        if self._inp.control_interface == ControlInterface.Position:
            low, high = np.asarray(self._inp.min_velocity), np.asarray(self._inp.max_velocity)
            wanted = np.clip(self.tracking_gain * (clamped_target - pos), low, high)
        else:
            wanted = np.asarray(self._inp.target_velocity, dtype=np.float64)
        self._inp.control_interface = ControlInterface.Velocity
        self._inp.target_velocity = np.where(crossing, 0.0, wanted).tolist()
        self._update(clamped_target, pos)
        self.limit_brakes += 1

    def _stopping_reach(self, position: F64, velocity: F64, acceleration: F64) -> tuple[F64, F64]:
        """Highest and lowest position each joint passes through when braking to rest right now.

        Each joint is mirrored so that it moves upwards and only the trajectory's maxima are read (the
        upward extremum of a velocity-interface plan is the one this check relies on)."""
        down = (velocity < 0) | ((velocity == 0) & (acceleration < 0))
        sign = np.where(down, -1.0, 1.0)
        inp = self._brake_inp
        inp.current_position = (sign * position).tolist()
        inp.current_velocity = (sign * velocity).tolist()
        inp.current_acceleration = (sign * acceleration).tolist()
        try:
            self._brake_otg.calculate(inp, self._brake_trajectory)
        except (RuckigError, ValueError) as exc:
            raise ServoError(f"could not plan a stop from the current state: {exc}") from exc
        farthest = sign * np.array([b.max for b in self._brake_trajectory.position_extrema])
        high = np.where(down, position, np.maximum(position, farthest))
        low = np.where(down, np.minimum(position, farthest), position)
        return high, low

    def _update(self, clamped_target: F64, pos: F64) -> None:
        """Run one ruckig update; on a numerical failure of the time synchronization (seen rarely with a
        velocity bound that shrinks near a limit), retry unsynchronized, then as velocity tracking of the target.

        Velocity-interface steps (tracking, stopping) always run unsynchronized: synchronizing would stretch every
        joint's velocity change to the slowest joint's duration, so a fast joint would brake late near a limit.
        Each fallback is still a jerk-limited step under the same bounds, so the arm never sees a jump; the
        number of fallbacks is counted in `fallbacks` for the run report. Only when all three fail is it an error."""
        velocity_interface = self._inp.control_interface == ControlInterface.Velocity
        attempts: tuple[str, ...] = ("unsynchronized", "velocity")
        if not velocity_interface:
            attempts = ("synchronized", *attempts)
        errors: list[str] = []
        for attempt in attempts:
            self._inp.synchronization = Synchronization.Time if attempt == "synchronized" else Synchronization.No
            if attempt == "velocity":
                low, high = np.asarray(self._inp.min_velocity), np.asarray(self._inp.max_velocity)
                self._inp.control_interface = ControlInterface.Velocity
                self._inp.target_velocity = np.clip(self.tracking_gain * (clamped_target - pos), low, high).tolist()
            try:
                result = self._otg.update(self._inp, self._out)
            except (RuckigError, ValueError) as exc:  # ValueError: a result code outside the Python enum
                errors.append(f"{attempt}: {str(exc).strip().splitlines()[0]}")
                continue
            if result in (Result.Working, Result.Finished):
                if errors:
                    self.fallbacks += 1
                return
            errors.append(f"{attempt}: returned {result}")
        raise ServoError("trajectory generation failed: " + "; ".join(errors))

    def _names(self, mask: npt.NDArray[np.bool_]) -> tuple[str, ...]:
        idx = np.flatnonzero(mask)
        names = self.limits.names
        return tuple(names[i] if names else str(i) for i in idx)


def braking_velocity(distance: F64, acceleration: F64, jerk: F64 | None, floor: float = 0.05) -> F64:
    """Largest speed from which a stop still ends within `distance`: v = sqrt(2 a d) at constant deceleration,
    or with `jerk`, the positive root of v^2 / (2a) + v a / (2j) = d (acceleration ramping up at the jerk limit).

    The root falls to zero near the limit, which would freeze a target right at it; a slow final approach
    min(floor, 5 d) (exponential, 0.2 s time constant) keeps such targets reachable without overshoot."""
    a = acceleration
    if jerk is None:
        brake = np.sqrt(2 * a * distance)
    else:
        half = a * a / (2 * jerk)
        brake = -half + np.sqrt(half * half + 2 * a * distance)
    return np.asarray(np.maximum(brake, np.minimum(floor, 5.0 * distance)) + 1e-6, dtype=np.float64)
