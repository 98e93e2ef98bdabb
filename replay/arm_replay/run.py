"""Play a replay plan on a robot through the policy runs' path: guard, slow ramp, jerk-limited servo loop.

Why the same path: a replay is the rig check before evaluating a model, so it must exercise exactly what a
policy episode does (robot_client.runner): the first-action guard against the measured state, the slow ramp
with `ServoLoop.drive_to`, then `ServoLoop.tick` toward the interpolated targets (position limits clamped and
reported, velocity/acceleration/jerk limited by the servo). Only the target source differs: the dataset's
actions instead of a policy's chunks. After the last action the loop keeps commanding it for `tail_s` (so the
arm's final settling is measured), then brings the arm to rest like a policy episode does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from replay.arm_replay.plan import F64, ReplayError, ReplayPlan
from robot_client.config import RobotConfig
from robot_client.control_loop import Clock, ServoLoop, TickRecord
from robot_client.robot import Robot
from robot_client.safety import EStop, check_first_action, far_joints
from robot_client.servo import JerkLimitedServo, ServoLimits


@dataclass(frozen=True)
class ReplayOptions:
    """How a plan is played. Conservative by default: a far start is refused, not ramped to."""

    allow_far_start: bool = False
    # Keep commanding the last action this long after it is due, so the arm's final settling is recorded.
    tail_s: float = 0.5
    # At most this long to bring the arm to rest at the end.
    rest_timeout_s: float = 2.0
    # The slow ramp to the first action must finish within this long.
    ramp_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for label in ("tail_s", "rest_timeout_s", "ramp_timeout_s"):
            value = getattr(self, label)
            if not (np.isfinite(value) and value >= 0):
                raise ReplayError(f"ReplayOptions.{label} must be a finite number >= 0, got {value}")


@dataclass
class ReplayTrace:
    """Per servo tick from the first action on (replay and tail): time since the replay started (s), the
    dataset target, the servo's command (position and velocity) and the measured (achieved) joints."""

    joint_names: tuple[str, ...]
    servo_hz: float
    start_state: F64
    first_action: F64
    far_joints: tuple[str, ...]
    times: F64
    targets: F64
    commands: F64
    velocities: F64
    achieved: F64
    ramp_s: float
    ramp_ticks: int
    # Peak |commanded velocity| per joint during the ramp.
    ramp_peak_velocity: F64
    # Ticks on which each joint's target, or the servo's output, had to be clamped into the position limits.
    target_clamps: dict[str, int] = field(default_factory=dict)
    output_clamps: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    estopped: bool = False

    @property
    def ticks(self) -> int:
        return len(self.times)


class _Recorder:
    """Collects tick records into arrays (replay phase only)."""

    def __init__(self) -> None:
        self.records: list[TickRecord] = []

    def arrays(self, t0: float, dof: int) -> tuple[F64, F64, F64, F64, F64]:
        recs = self.records
        if not recs:
            empty = np.zeros((0, dof))
            return np.zeros(0), empty, empty.copy(), empty.copy(), empty.copy()
        times = np.array([r.time - t0 for r in recs])
        targets = np.stack([np.asarray(r.target, dtype=np.float64) for r in recs])
        commands = np.stack([r.command.position for r in recs])
        velocities = np.stack([r.command.velocity for r in recs])
        achieved = np.stack([r.state.positions for r in recs])
        return times, targets, commands, velocities, achieved


def _count(records: list[TickRecord], names: tuple[str, ...], which: str) -> dict[str, int]:
    out = {n: 0 for n in names}
    for r in records:
        for n in getattr(r.command, which):
            out[n] += 1
    return {n: c for n, c in out.items() if c}


def ramp_velocity_scale(config: RobotConfig, limits: ServoLimits) -> float:
    """The policy runs' ramp: the configured ramp velocity as a fraction of the fastest joint's limit."""
    return min(1.0, config.safety.ramp_velocity / float(np.max(limits.velocity)))


def run_replay(robot: Robot, clock: Clock, plan: ReplayPlan, options: ReplayOptions, *, dry_run: bool = False,
               guard: bool = True, estop: EStop | None = None,
               on_tick: Callable[[TickRecord], None] | None = None) -> ReplayTrace:
    """Guard, ramp, replay, rest. `guard` False only records the far joints instead of refusing (a preview).

    Raises FirstActionError (naming the joints) when the first action is far and neither `allow_far_start` nor
    a preview; ReplayError when the ramp does not finish; RobotFault from the robot as it happens (the backend
    then holds, as its contract says)."""
    config = robot.config
    if plan.joint_names != config.joint_names:
        raise ReplayError(f"plan joints {list(plan.joint_names)} are not the robot's {list(config.joint_names)}")
    limits = ServoLimits.from_config(config)
    servo = JerkLimitedServo(limits, 1.0 / config.servo_hz)
    loop = ServoLoop(robot, servo, clock, deadline_s=config.safety.server_deadline_s, dry_run=dry_run,
                     estop=estop, on_tick=on_tick)
    state = loop.start()
    first = plan.first_action
    threshold = config.safety.first_action_max_delta
    grippers = config.gripper_indices()
    if guard:
        far = check_first_action(first, state.positions, config.joint_names, threshold, skip=grippers,
                                 override=options.allow_far_start)
    else:
        far = far_joints(first, state.positions, config.joint_names, threshold, grippers)

    ramp = _Recorder()
    loop.on_tick = _chain(on_tick, ramp.records.append)
    ramp_start = clock.now()
    if not loop.drive_to(first, velocity_scale=ramp_velocity_scale(config, limits), timeout_s=options.ramp_timeout_s):
        if not loop.estop.active:
            raise ReplayError(f"the ramp to the first action did not finish within {options.ramp_timeout_s:g} s "
                              f"(a joint blocked, or the arm too far away?)")
    ramp_s = clock.now() - ramp_start

    replay = _Recorder()
    loop.on_tick = _chain(on_tick, replay.records.append)
    timeline = plan.timeline()
    t0 = clock.now()
    end = t0 + plan.duration_s + options.tail_s
    # As ServoLoop.run_for: on e-stop the loop stops the servo itself; keep ticking (and recording) until still.
    while loop.clock.now() < end - 0.5 * loop.period and not (loop.estop.active and loop.servo.is_still()):
        loop.tick(lambda t: timeline.at(t - t0), lambda t: 0.0, lambda t: timeline.velocity_at(t - t0))
    loop.on_tick = on_tick
    _rest(loop, options.rest_timeout_s)

    times, targets, commands, velocities, achieved = replay.arrays(t0, config.dof)
    ramp_vel = np.stack([r.command.velocity for r in ramp.records]) if ramp.records else np.zeros((1, config.dof))
    return ReplayTrace(
        joint_names=config.joint_names, servo_hz=config.servo_hz, start_state=state.positions.copy(),
        first_action=first, far_joints=tuple(d.name for d in far), times=times, targets=targets,
        commands=commands, velocities=velocities, achieved=achieved, ramp_s=ramp_s,
        ramp_ticks=len(ramp.records), ramp_peak_velocity=np.max(np.abs(ramp_vel), axis=0),
        target_clamps=_count(replay.records + ramp.records, config.joint_names, "target_clamped"),
        output_clamps=_count(replay.records + ramp.records, config.joint_names, "output_clamped"),
        events=list(loop.events.log), estopped=loop.estop.active,
    )


def _chain(first: Callable[[TickRecord], None] | None,
           second: Callable[[TickRecord], None]) -> Callable[[TickRecord], None]:
    if first is None:
        return second

    def both(record: TickRecord) -> None:
        first(record)
        second(record)

    return both


def _rest(loop: ServoLoop, timeout_s: float) -> None:
    """A jerk-limited stop where the arm is, as at the end of a policy episode."""
    loop.servo.stop()
    for _ in range(int(timeout_s / loop.period)):
        if loop.servo.is_still():
            break
        loop.tick(lambda t: None, lambda t: float("inf"))


def peak_abs(values: npt.NDArray[np.float64]) -> F64:
    """Per-joint peak |value| over ticks [N, D] (zeros when N is 0)."""
    return np.max(np.abs(values), axis=0) if len(values) else np.zeros(values.shape[1])
