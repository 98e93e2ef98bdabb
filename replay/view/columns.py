"""Columnar logging: many rows of one entity in one `send_columns` call, on both timelines.

Why: a per-row `log` costs about 90 us; a 14-joint episode with four series per joint is tens of thousands of
rows. Sending whole columns makes the dataset viewer fast and lets the live logger batch a fraction of a second
of ticks into one call per entity, which keeps its background thread (and its share of the GIL) small.
Rows whose values are not finite (NaN = "no value here", inf = "never") are left out rather than plotted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import rerun as rr

from replay.view import layout

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TimeIndex:
    """Positions of N rows on the `step` (int) and `time` (seconds) timelines."""

    steps: npt.NDArray[np.int64]
    seconds: npt.NDArray[np.float64]

    @classmethod
    def of(cls, steps: npt.ArrayLike, seconds: npt.ArrayLike) -> TimeIndex:
        s = np.asarray(steps, dtype=np.int64).reshape(-1)
        t = np.asarray(seconds, dtype=np.float64).reshape(-1)
        if s.shape != t.shape:
            raise ValueError(f"steps {s.shape} and seconds {t.shape} must have the same length")
        return cls(s, t)

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    def select(self, mask: Mask) -> TimeIndex:
        return TimeIndex(self.steps[mask], self.seconds[mask])

    @cached_property
    def _columns(self) -> list[rr.TimeColumn]:
        return [
            rr.TimeColumn(layout.STEP, sequence=self.steps),
            rr.TimeColumn(layout.TIME, duration=self.seconds),
        ]

    def columns(self) -> list[rr.TimeColumn]:
        """The index columns, built once: every entity of a batch shares them."""
        return self._columns


def set_time(rec: rr.RecordingStream, step: int, seconds: float) -> None:
    """Position the stream (for the calling thread) on both timelines before a row-wise `log`."""
    rec.set_time(layout.STEP, sequence=int(step))
    rec.set_time(layout.TIME, duration=float(seconds))


def log_at(rec: rr.RecordingStream, path: str, entity: Any, step: int, seconds: float) -> None:
    set_time(rec, step, seconds)
    rec.log(path, entity)


def send_scalars(rec: rr.RecordingStream, path: str, index: TimeIndex, values: npt.ArrayLike) -> int:
    """Send [N] or [N, k] values as one scalar entity (k series); rows with a non-finite value are skipped.

    Returns the number of rows sent.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.shape[0] != len(index):
        raise ValueError(f"{path}: {v.shape[0]} rows for {len(index)} time positions")
    keep = np.all(np.isfinite(v), axis=1)
    if not keep.any():
        return 0
    idx = index if keep.all() else index.select(keep)
    rows = v[keep]
    scalars = rows[:, 0] if rows.shape[1] == 1 else rows
    rr.send_columns(path, indexes=idx.columns(), columns=rr.Scalars.columns(scalars=scalars), recording=rec)
    return int(keep.sum())


def log_series_styles(rec: rr.RecordingStream, names: Sequence[str], kind: str) -> None:
    """Static SeriesLines for `/joints/<joint>/<kind>` of every joint (names carry the joint name)."""
    for joint in names:
        rec.log(layout.joint_path(joint, kind), layout.series_style(joint, kind), static=True)


def send_joint_series(
    rec: rr.RecordingStream, names: Sequence[str], kind: str, index: TimeIndex, values: npt.ArrayLike
) -> int:
    """Send [N, D] values as D entities `/joints/<joint>/<kind>`; returns the rows sent in total."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(names):
        raise ValueError(f"{kind}: expected [N, {len(names)}] values, got shape {v.shape}")
    return sum(send_scalars(rec, layout.joint_path(j, kind), index, v[:, i]) for i, j in enumerate(names))
