"""The dry-run preview of a replay: the same guard, ramp and servo loop, computed from a snapshot, nothing sent.

Why a snapshot robot and a virtual clock: the preview must say what the real run will do (distance from the
arm's current pose to the first action, peak commanded velocities, whether a limit clamps, how long it takes)
before anything moves, and it must be structurally unable to move anything: the loop runs against
`SnapshotRobot`, which serves the state measured once and refuses every command, and against `VirtualClock`, so
a 20 s episode previews in a fraction of a second. A real arm's motor watchdog drops motors that hear nothing
for ~0.1 s, so callers on real hardware pass a `keepalive` (the robot's `hold()`, which commands the measured
position) that the preview calls every few milliseconds of wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from replay.arm_replay.plan import F64, ReplayPlan
from replay.arm_replay.run import ReplayOptions, ReplayTrace, peak_abs, run_replay
from robot_client.config import RobotConfig
from robot_client.control_loop import TickRecord
from robot_client.robot import JointState, Robot, RobotCommandError, RobotStatus

# A joint counts as at its velocity limit when its peak commanded speed reaches this fraction of the limit.
SATURATION_FRACTION = 0.98


class SnapshotRobot(Robot):
    """A robot frozen at one measured state; every command is refused (the preview never sends any)."""

    def __init__(self, config: RobotConfig, state: JointState) -> None:
        self.config = config
        self._state = state

    def connect(self) -> None:
        """Nothing to open."""

    def enable(self) -> None:
        """Nothing to energize."""

    def disable(self) -> None:
        """Nothing to release."""

    def read_state(self) -> JointState:
        return self._state

    def command(self, positions: F64, velocities: F64 | None = None) -> None:
        raise RobotCommandError("preview: commands are never sent")

    def hold(self) -> None:
        """Nothing to hold: the snapshot does not move."""

    def status(self) -> RobotStatus:
        return RobotStatus(enabled=True)


class VirtualClock:
    """A clock that jumps to every deadline at once: the loop computes as fast as the CPU allows."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def sleep_until(self, t: float) -> None:
        self._t = max(self._t, t)


class Keepalive:
    """Calls `action` at most every `period_s` of wall time (e.g. a real arm's hold() while previewing)."""

    def __init__(self, action: Callable[[], None], period_s: float = 0.02) -> None:
        self.action = action
        self.period_s = period_s
        self.calls = 0
        self._last = -np.inf

    def __call__(self, record: TickRecord | None = None) -> None:
        now = time.monotonic()
        if now - self._last >= self.period_s:
            self._last = now
            self.calls += 1
            self.action()


@dataclass(frozen=True)
class Preview:
    """What the replay will do from the measured state (robot units; s; per joint in joint order)."""

    joint_names: tuple[str, ...]
    start_state: F64
    first_action: F64
    threshold: float
    far_joints: tuple[str, ...]
    allow_far_start: bool
    ramp_s: float
    replay_s: float
    tail_s: float
    ramp_peak_velocity: F64
    peak_velocity: F64
    velocity_limits: F64
    target_clamps: dict[str, int]
    output_clamps: dict[str, int]
    # Largest |servo command - dataset target| per joint: how much the servo limits reshape the motion.
    max_shaping: F64

    @property
    def start_delta(self) -> F64:
        return np.abs(self.first_action - self.start_state)

    @property
    def refused(self) -> bool:
        return bool(self.far_joints) and not self.allow_far_start

    @property
    def saturated(self) -> tuple[str, ...]:
        hit = self.peak_velocity >= SATURATION_FRACTION * self.velocity_limits
        return tuple(n for n, h in zip(self.joint_names, hit, strict=True) if h)

    @property
    def total_s(self) -> float:
        return self.ramp_s + self.replay_s + self.tail_s


def preview_replay(state: JointState, config: RobotConfig, plan: ReplayPlan, options: ReplayOptions,
                   keepalive: Callable[[TickRecord], None] | None = None) -> Preview:
    """Run the replay against a snapshot of `state` with a virtual clock; nothing reaches a robot."""
    robot = SnapshotRobot(config, state)
    trace = run_replay(robot, VirtualClock(), plan, options, dry_run=True, guard=False, on_tick=keepalive)
    return _summarize(trace, config, plan, options)


def _summarize(trace: ReplayTrace, config: RobotConfig, plan: ReplayPlan, options: ReplayOptions) -> Preview:
    limits = np.asarray(config.limit_arrays()["velocity"], dtype=np.float64)
    shaping = peak_abs(trace.commands - trace.targets)
    return Preview(
        joint_names=config.joint_names, start_state=trace.start_state, first_action=trace.first_action,
        threshold=config.safety.first_action_max_delta, far_joints=trace.far_joints,
        allow_far_start=options.allow_far_start, ramp_s=trace.ramp_s, replay_s=plan.duration_s,
        tail_s=options.tail_s, ramp_peak_velocity=trace.ramp_peak_velocity, peak_velocity=peak_abs(trace.velocities),
        velocity_limits=limits, target_clamps=dict(trace.target_clamps), output_clamps=dict(trace.output_clamps),
        max_shaping=shaping,
    )


def format_preview(p: Preview) -> str:
    """The preview as the operator reads it before deciding to move the arm."""
    delta = p.start_delta
    worst = int(np.argmax(delta))
    lines = [
        "dry-run preview (commands computed, none sent)",
        f"  largest distance from the current state to the first action: {p.joint_names[worst]} "
        f"{delta[worst]:.3f} (guard threshold {p.threshold:g}; grippers not guarded)",
    ]
    if p.far_joints:
        verdict = "ramping there slowly (--allow-far-start)" if p.allow_far_start else "REFUSED"
        lines.append(f"  first-action guard: {verdict}: far joints {list(p.far_joints)}")
    else:
        lines.append("  first-action guard: ok")
    lines.append(f"  duration: ramp {p.ramp_s:.2f} s + replay {p.replay_s:.2f} s + settle {p.tail_s:.2f} s "
                 f"= {p.total_s:.2f} s")
    clamps = ", ".join(f"{n} ({c} ticks)" for n, c in p.target_clamps.items()) or "none"
    lines.append(f"  position-limit clamps of dataset targets: {clamps}")
    if p.output_clamps:
        lines.append(f"  OUTPUT clamps (servo at a limit): {p.output_clamps}")
    lines.append(f"  joints at their velocity limit: {list(p.saturated) or 'none'}")
    lines.append("  per joint: |first action - state|, peak commanded velocity replay / ramp (limit), "
                 "max |command - target|")
    for i, name in enumerate(p.joint_names):
        lines.append(f"    {name:<16s} {delta[i]:7.3f}   {p.peak_velocity[i]:6.3f} / {p.ramp_peak_velocity[i]:6.3f} "
                     f"({p.velocity_limits[i]:g})   {p.max_shaping[i]:.4f}")
    return "\n".join(lines)
