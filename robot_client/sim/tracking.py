"""Tracking-error fault detection: a joint whose measured position stays too far from its target.

Why sustained and not instantaneous: a fast but healthy move lags its target for a few milliseconds; a stuck
joint, a collision or a dead motor lags for good. The fault fires only after the error has exceeded the
threshold continuously for `hold_s` of (simulated) time, and names the first joint that did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
TRACKING_ERROR = "tracking_error"


@dataclass(frozen=True)
class TrackingViolation:
    joint: str
    error: float
    threshold: float
    duration_s: float

    @property
    def message(self) -> str:
        return (f"|target - measured| = {self.error:.3f} exceeded {self.threshold:.3f} for "
                f"{self.duration_s * 1000:.0f} ms")


class TrackingMonitor:
    """Feed (time, target, measured) each physics step; `update` returns a violation once one is sustained."""

    def __init__(self, names: Sequence[str], threshold: float, hold_s: float, watched: Sequence[bool]) -> None:
        if not threshold > 0 or not hold_s >= 0:
            raise ValueError(f"tracking monitor: threshold must be > 0 and hold_s >= 0, got {threshold}, {hold_s}")
        if len(watched) != len(names):
            raise ValueError("tracking monitor: one watched flag per joint")
        self.names = tuple(names)
        self.threshold = float(threshold)
        self.hold_s = float(hold_s)
        self._watched = np.asarray(watched, dtype=bool)
        self._since = np.full(len(names), np.nan)

    def reset(self) -> None:
        self._since[:] = np.nan

    def update(self, t: float, target: F64, measured: F64) -> TrackingViolation | None:
        error = np.abs(target - measured)
        over = (error > self.threshold) & self._watched
        self._since[~over] = np.nan
        newly = over & np.isnan(self._since)
        self._since[newly] = t
        if not over.any():
            return None
        durations = np.where(over, t - self._since, -1.0)
        worst = int(np.argmax(durations))
        if durations[worst] < self.hold_s:
            return None
        return TrackingViolation(self.names[worst], float(error[worst]), self.threshold, float(durations[worst]))
