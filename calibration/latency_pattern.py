"""The motion the camera latency is measured with: seeded, smooth, small, non-periodic moves of one joint.

Why non-periodic: the lag is found by correlating the cameras' frame motion with the joint's motion, and a
periodic motion correlates equally well at every multiple of its period (an oscillation's |velocity| even at
every half period). Random move sizes, durations and pauses give one clear peak, and the pauses give sharp
starts and stops for the frames to line up with.

Safety (a real arm runs this): every move is a minimum-jerk segment between offsets in [-amplitude, +amplitude]
around the rest position, each segment long enough that its peak velocity (1.875 x distance / duration) stays
under `velocity_fraction` of the joint's configured velocity limit, and the whole range must fit inside the
joint's position limits with `limit_margin` to spare, or the pattern is refused (LatencyError naming the joint).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.latency_signal import LatencyError
from robot_client.config import JointLimits

MIN_JERK_PEAK = 1.875  # peak velocity of a minimum-jerk move = 1.875 x distance / duration


@dataclass(frozen=True)
class PatternConfig:
    """amplitude: largest offset from rest (robot units); moves last min_move_s..max_move_s (longer when the
    velocity cap asks), pauses min_pause_s..max_pause_s; lead_s of rest before the first and after the last
    move; duration_s: total length including both leads."""

    amplitude: float = 0.15
    duration_s: float = 3.0
    min_move_s: float = 0.2
    max_move_s: float = 0.45
    min_pause_s: float = 0.05
    max_pause_s: float = 0.3
    lead_s: float = 0.3
    velocity_fraction: float = 0.5
    limit_margin: float = 0.05
    max_amplitude: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.amplitude <= self.max_amplitude:
            raise LatencyError(f"pattern amplitude must be in (0, {self.max_amplitude}], got {self.amplitude}")
        if not self.duration_s > 2 * self.lead_s + self.max_move_s:
            raise LatencyError(f"pattern duration_s {self.duration_s} leaves no room for a move between the "
                               f"{self.lead_s} s leads")
        if not (0 < self.min_move_s <= self.max_move_s and 0 <= self.min_pause_s <= self.max_pause_s):
            raise LatencyError("pattern move/pause durations must be positive and min <= max")
        if not 0 < self.velocity_fraction <= 1:
            raise LatencyError(f"velocity_fraction must be in (0, 1], got {self.velocity_fraction}")


@dataclass(frozen=True)
class Segment:
    t0: float
    t1: float
    q0: float
    q1: float


class MotionPattern:
    """Offsets from rest as a function of time since the pattern started (0 before and after the moves)."""

    def __init__(self, segments: list[Segment], duration_s: float) -> None:
        self.segments = segments
        self.duration_s = duration_s
        self._starts = np.array([s.t0 for s in segments])

    def offset(self, t: float) -> float:
        if not self.segments or t <= self.segments[0].t0:
            return self.segments[0].q0 if self.segments else 0.0
        i = int(np.searchsorted(self._starts, t, side="right") - 1)
        seg = self.segments[i]
        if t >= seg.t1:
            return seg.q1
        s = (t - seg.t0) / (seg.t1 - seg.t0)
        return seg.q0 + (seg.q1 - seg.q0) * (10 * s**3 - 15 * s**4 + 6 * s**5)

    def peak_velocity(self) -> float:
        return max((MIN_JERK_PEAK * abs(s.q1 - s.q0) / (s.t1 - s.t0) for s in self.segments), default=0.0)


def make_pattern(config: PatternConfig, joint: str, rest: float, limits: JointLimits,
                 seed_offset: int = 0) -> MotionPattern:
    """A pattern for `joint` resting at `rest`, or LatencyError when its range or speed would not be safe."""
    lo, hi = rest - config.amplitude, rest + config.amplitude
    if lo < limits.lower + config.limit_margin or hi > limits.upper - config.limit_margin:
        raise LatencyError(f"{joint}: the pattern would span [{lo:.3f}, {hi:.3f}], closer than {config.limit_margin} "
                           f"to its limits [{limits.lower}, {limits.upper}]; move the joint towards the middle of "
                           f"its range or lower the amplitude")
    vmax = config.velocity_fraction * limits.velocity
    rng = np.random.default_rng(config.seed + seed_offset)

    def return_time(q: float) -> float:
        return max(config.min_move_s, MIN_JERK_PEAK * abs(q) / vmax)

    segments: list[Segment] = []
    t, q = config.lead_s, 0.0
    end = config.duration_s - config.lead_s
    while True:
        target = q
        while abs(target - q) < 0.3 * config.amplitude:
            target = float(rng.uniform(-config.amplitude, config.amplitude))
        move = max(float(rng.uniform(config.min_move_s, config.max_move_s)), MIN_JERK_PEAK * abs(target - q) / vmax)
        pause = float(rng.uniform(config.min_pause_s, config.max_pause_s))
        if segments and t + move + pause + return_time(target) > end:
            break
        segments.append(Segment(t, t + move, q, target))
        t, q = t + move + pause, target
    if q != 0.0:
        segments.append(Segment(t, t + return_time(q), q, 0.0))
    pattern = MotionPattern(segments, max(config.duration_s, segments[-1].t1 + config.lead_s))
    if pattern.peak_velocity() > vmax * (1 + 1e-9):
        raise LatencyError(f"{joint}: pattern peak velocity {pattern.peak_velocity():.3f} exceeds {vmax:.3f}")
    return pattern
