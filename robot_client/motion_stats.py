"""Smoothness of what the servo loop commanded: velocity, acceleration and jerk by finite differences.

Why: the jerk-limited loop promises that no commanded joint trajectory exceeds the configured velocity,
acceleration and jerk. ruckig's own jerk output is the planner's claim; this meter checks the claim from the
positions actually sent to the arm, third differences of successive commands over their measured tick times, so
a fallback step, a hold or a limit clamp that jumps is seen too. Holds and ticks before the first command are
part of the trajectory (a hold that brakes hard is exactly what should show).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class MotionSummary:
    """Per joint: the largest commanded |velocity|, |acceleration|, |jerk| and each as a fraction of its limit."""

    joint_names: tuple[str, ...]
    max_velocity: F64
    max_acceleration: F64
    max_jerk: F64
    rms_jerk: F64
    velocity_ratio: F64
    acceleration_ratio: F64
    jerk_ratio: F64
    ticks: int

    def worst(self, quantity: str = "jerk") -> tuple[str, float]:
        """(joint, ratio to its limit) of the joint closest to (or furthest past) its `quantity` limit."""
        ratios = {"velocity": self.velocity_ratio, "acceleration": self.acceleration_ratio,
                  "jerk": self.jerk_ratio}[quantity]
        if not len(ratios):
            return "", 0.0
        i = int(np.argmax(ratios))
        return self.joint_names[i], float(ratios[i])

    def describe(self) -> str:
        parts = []
        for quantity in ("velocity", "acceleration", "jerk"):
            joint, ratio = self.worst(quantity)
            parts.append(f"{quantity} {ratio:.0%} of limit ({joint})")
        return "commanded peaks: " + ", ".join(parts) + f" over {self.ticks} ticks"


class MotionMeter:
    """Differentiates (time, commanded position) per servo tick as they come, keeping only running peaks: it sits
    on the servo loop's tick hook, so its cost per tick is a few 14-element operations and its memory is
    constant however long a run lasts."""

    def __init__(self, joint_names: Sequence[str], velocity: F64, acceleration: F64, jerk: F64) -> None:
        self.joint_names = tuple(joint_names)
        self.limits = (np.asarray(velocity, np.float64), np.asarray(acceleration, np.float64),
                       np.asarray(jerk, np.float64))
        for name, limit in zip(("velocity", "acceleration", "jerk"), self.limits, strict=True):
            if limit.shape != (len(self.joint_names),) or not np.all(limit > 0):
                raise ValueError(f"{name} limits: expected {len(self.joint_names)} positive values, got {limit}")
        n = len(self.joint_names)
        self._peaks = [np.zeros(n), np.zeros(n), np.zeros(n)]  # |velocity|, |acceleration|, |jerk|
        self._jerk_squares = np.zeros(n)
        self._jerks = 0
        self._ticks = 0
        # The latest sample of each derivative and the time it stands at (the midpoint of its difference).
        self._last: list[tuple[float, F64] | None] = [None, None, None]  # position, velocity, acceleration

    def add(self, time: float, position: F64) -> None:
        sample: tuple[float, F64] = (float(time), np.asarray(position, dtype=np.float64).copy())
        previous = self._last[0]
        if previous is not None and sample[0] - previous[0] <= 1e-9:
            return  # a repeated time stamp carries no new motion
        self._ticks += 1
        for order in range(3):  # position -> velocity -> acceleration -> jerk
            before = self._last[order]
            self._last[order] = sample
            if before is None:
                return
            dt = sample[0] - before[0]
            derivative = (sample[1] - before[1]) / dt
            np.maximum(self._peaks[order], np.abs(derivative), out=self._peaks[order])
            if order == 2:
                self._jerk_squares += derivative ** 2
                self._jerks += 1
            sample = ((sample[0] + before[0]) / 2, derivative)

    def summary(self) -> MotionSummary:
        zeros = np.zeros(len(self.joint_names))
        if self._jerks == 0:
            return MotionSummary(self.joint_names, zeros, zeros, zeros, zeros, zeros, zeros, zeros, self._ticks)
        max_v, max_a, max_j = (peak.copy() for peak in self._peaks)
        v_lim, a_lim, j_lim = self.limits
        return MotionSummary(self.joint_names, max_v, max_a, max_j, np.sqrt(self._jerk_squares / self._jerks),
                             max_v / v_lim, max_a / a_lim, max_j / j_lim, self._ticks)
