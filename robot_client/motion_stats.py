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
    """Collects (time, commanded position) per servo tick; `summary` differentiates them."""

    def __init__(self, joint_names: Sequence[str], velocity: F64, acceleration: F64, jerk: F64) -> None:
        self.joint_names = tuple(joint_names)
        self.limits = (np.asarray(velocity, np.float64), np.asarray(acceleration, np.float64),
                       np.asarray(jerk, np.float64))
        for name, limit in zip(("velocity", "acceleration", "jerk"), self.limits, strict=True):
            if limit.shape != (len(self.joint_names),) or not np.all(limit > 0):
                raise ValueError(f"{name} limits: expected {len(self.joint_names)} positive values, got {limit}")
        self._times: list[float] = []
        self._positions: list[F64] = []

    def add(self, time: float, position: F64) -> None:
        self._times.append(float(time))
        self._positions.append(np.asarray(position, dtype=np.float64).copy())

    def summary(self) -> MotionSummary:
        n = len(self.joint_names)
        zeros = np.zeros(n)
        if len(self._times) < 4:
            return MotionSummary(self.joint_names, zeros, zeros, zeros, zeros, zeros, zeros, zeros, len(self._times))
        t = np.asarray(self._times)
        q = np.stack(self._positions)
        keep = np.concatenate([[True], np.diff(t) > 1e-9])  # a repeated time stamp carries no new motion
        t, q = t[keep], q[keep]
        v = np.diff(q, axis=0) / np.diff(t)[:, None]
        tv = (t[1:] + t[:-1]) / 2
        a = np.diff(v, axis=0) / np.diff(tv)[:, None]
        ta = (tv[1:] + tv[:-1]) / 2
        j = np.diff(a, axis=0) / np.diff(ta)[:, None]
        max_v, max_a, max_j = (np.abs(x).max(axis=0) for x in (v, a, j))
        v_lim, a_lim, j_lim = self.limits
        return MotionSummary(self.joint_names, max_v, max_a, max_j, np.sqrt((j ** 2).mean(axis=0)),
                             max_v / v_lim, max_a / a_lim, max_j / j_lim, len(t))
