"""Command-to-motion latency: from rest, a small position step on one joint; the time until its encoder moves.

Procedure, per repeat: hold the rest pose for `settle_s` (the last `noise_window_s` of readings give the noise
threshold, latency_signal.noise_threshold), then send rest + step on the joint and keep sending it every servo
period (the motors' watchdog needs a steady stream) until a reading leaves the rest mean by more than the
threshold; the latency is that reading's stamp minus the instant the step was sent. Then back to rest. The
result is the median and spread over the repeats.

What the number includes: the host -> bus -> motor driver delay, the driver's control period, the time the
joint needs to move past the threshold, and the reading's own trip back; it is quantized by the servo period
(a reading is taken once per period), so it is good to about one period.

Safety: the step is at most `max_step` (robot units), sent directly (no ramp) because it is that small; its
direction is chosen so that the target stays `limit_margin` inside the joint's limits (refused when neither
direction fits); every other joint is held at the pose it rested at; the procedure refuses to start while any
joint moves faster than `rest_velocity`; and each reading is guarded (latency_ticks.Ticker): any joint farther
than its planned motion + `guard_margin` from the start pose holds the arm and stops. A joint that never moves
within `timeout_s` is an error naming it (motor off, wrong joint, threshold too high).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.latency_signal import LatencyError, Spread, noise_threshold, onset_index
from calibration.latency_ticks import Ticker
from robot_client.control_loop import Clock
from robot_client.robot import Robot

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class StepConfig:
    joint: str = "left_joint6"
    step: float = 0.05
    repeats: int = 5
    settle_s: float = 0.3
    noise_window_s: float = 0.15
    timeout_s: float = 0.5
    threshold_floor: float = 0.002
    threshold_sigmas: float = 6.0
    limit_margin: float = 0.05
    max_step: float = 0.1
    rest_velocity: float = 0.05
    guard_margin: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < abs(self.step) <= self.max_step:
            raise LatencyError(f"--step must be non-zero and at most {self.max_step} (robot units), got {self.step}")
        if self.repeats < 1:
            raise LatencyError(f"--repeats must be >= 1, got {self.repeats}")
        if not 0 < self.noise_window_s <= self.settle_s:
            raise LatencyError("noise_window_s must be in (0, settle_s]")


@dataclass(frozen=True)
class CommandLatency:
    joint: str
    step: float  # signed step actually sent
    threshold: float  # noise threshold of the last repeat (robot units)
    spread: Spread

    def summary(self) -> str:
        return (f"command-to-motion ({self.joint}, step {self.step:+g}, threshold {self.threshold:.4f}): "
                f"{self.spread.summary()}")


def signed_step(joint: str, rest: float, step: float, lower: float, upper: float, margin: float) -> float:
    """`step` towards the side that keeps rest + step at least `margin` inside [lower, upper] (the given sign
    first), or LatencyError naming the joint."""
    for candidate in (step, -step):
        if lower + margin <= rest + candidate <= upper - margin:
            return candidate
    raise LatencyError(f"{joint} rests at {rest:.4f}: a step of +/-{abs(step)} would come within {margin} of its "
                       f"limits [{lower}, {upper}]; move it towards the middle of its range")


def check_at_rest(names: tuple[str, ...], velocities: F64, limit: float) -> None:
    moving = np.flatnonzero(np.abs(velocities) > limit)
    if moving.size:
        j = int(moving[0])
        raise LatencyError(f"{names[j]} moves at {velocities[j]:.3f} per second (> {limit}): the latency "
                           f"procedures start from rest")


def hold_quietly(robot: Robot) -> None:
    """Stop where the arm is after a failed procedure, without masking the failure (a faulted backend already
    holds, and its hold() may raise)."""
    try:
        robot.hold()
    except Exception:
        pass


def measure_command_latency(robot: Robot, clock: Clock, period_s: float, config: StepConfig) -> CommandLatency:
    names = robot.joint_names
    if config.joint not in names:
        raise LatencyError(f"--joint {config.joint!r} is not a joint of the robot; joints are {list(names)}")
    j = names.index(config.joint)
    first = robot.read_state()
    check_at_rest(names, first.velocities, config.rest_velocity)
    rest = first.positions.copy()
    limits = robot.config.limits[config.joint]
    step = signed_step(config.joint, float(rest[j]), config.step, limits.lower, limits.upper, config.limit_margin)
    excursion = np.full(len(names), config.guard_margin)
    excursion[j] += abs(step)
    ticker = Ticker(robot, clock, period_s, rest, excursion)
    target = rest.copy()
    target[j] += step
    settle_ticks = max(1, round(config.settle_s / period_s))
    noise_ticks = max(1, round(config.noise_window_s / period_s))
    samples: list[float] = []
    threshold = config.threshold_floor
    try:
        for _ in range(config.repeats):
            readings = [ticker.tick(rest)[1].positions[j] for _ in range(settle_ticks)]
            resting = np.asarray(readings[-noise_ticks:])
            threshold = noise_threshold(resting, config.threshold_floor, config.threshold_sigmas)
            if threshold >= 0.5 * abs(step):
                raise LatencyError(f"{config.joint}: encoder noise threshold {threshold:.4f} is at least half the "
                                   f"step {abs(step)}; use a larger --step (up to {config.max_step})")
            rest_mean = float(resting.mean())
            sent, state = ticker.tick(target)
            while onset_index(np.array([state.positions[j]]), rest_mean, threshold) is None:
                if state.timestamp - sent > config.timeout_s:
                    raise LatencyError(f"{config.joint} did not move within {config.timeout_s} s of a {step:+g} "
                                       f"step (threshold {threshold:.4f}); is the motor enabled?")
                state = ticker.tick(target)[1]
            samples.append((state.timestamp - sent) * 1e3)
        for _ in range(settle_ticks):  # back to the rest pose
            ticker.tick(rest)
    except BaseException:
        hold_quietly(robot)
        raise
    return CommandLatency(config.joint, step, threshold, Spread(tuple(samples)))
