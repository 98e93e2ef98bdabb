"""Predicted action chunks drawn as fans ahead of the time they were predicted at.

Representation (rerun 0.41): a chunk predicted from the observation at time t0 (step s0) is logged as an
ordinary scalar series whose i-th point sits at `time = t0 + i / fps` and `step = s0 + i`. In a time-series
plot that is a short line starting where the chunk was asked for and running ahead of it, drawn over the
joint's state and action lines; consecutive chunks overlap and form a fan, so a jump between chunks or a chunk
that disagrees with what the arm then did is visible at a glance. Live, the viewer follows the newest data,
which is the end of the newest fan: the state line stops at "now" and the fans reach past it by the chunk
horizon (the live blueprint shows a window of recent seconds around the cursor).

One entity per chunk would be thousands of entities per episode, and overlapping chunks on one entity would be
joined into a zig-zag. So chunks are packed into a few "slot" entities per joint,
`/chunks/<joint>/<source>/<slot>`: a chunk takes the lowest slot whose previous chunk ended before it starts
(interval colouring, so the number of slots is the largest number of chunks alive at once), and a `Clear` is
logged on the slot between the two chunks, which rerun's plots draw as a break in the line. Slots are capped;
past the cap the slot that frees up first is reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import rerun as rr

from replay.view import layout
from replay.view.columns import TimeIndex, log_at, send_scalars

DEFAULT_MAX_SLOTS = 16


@dataclass(frozen=True)
class Placement:
    """Where a chunk goes: its slot, and the position of the line break to log first (None on a fresh slot)."""

    slot: int
    clear_step: int | None
    clear_seconds: float | None


@dataclass
class FanSlots:
    """Assigns chunks to a bounded set of slot entities so that chunks on one slot never overlap in time."""

    max_slots: int = DEFAULT_MAX_SLOTS
    _ends: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {self.max_slots}")

    @property
    def used(self) -> int:
        return len(self._ends)

    def place(self, start_step: int, start_s: float, end_step: int, end_s: float) -> Placement:
        # A slot is free when its last chunk ended at least one step (and some time) before this one starts,
        # leaving room for the Clear that breaks the line in between.
        for slot, (prev_step, prev_s) in enumerate(self._ends):
            if prev_step + 2 <= start_step and prev_s < start_s:
                self._ends[slot] = (end_step, end_s)
                return Placement(slot, prev_step + 1, 0.5 * (prev_s + start_s))
        if len(self._ends) < self.max_slots:
            self._ends.append((end_step, end_s))
            return Placement(len(self._ends) - 1, None, None)
        slot = int(np.argmin([s for _, s in self._ends]))
        self._ends[slot] = (end_step, end_s)
        return Placement(slot, start_step, start_s)


@dataclass
class FanLogger:
    """Logs chunks of one source (e.g. the policy's "chunk") for all joints, styling each slot once."""

    joint_names: tuple[str, ...]
    fps: float
    source: str = layout.POLICY_CHUNK
    slots: FanSlots = field(default_factory=FanSlots)
    chunks_logged: int = 0
    _styled: set[int] = field(default_factory=set)

    def log(
        self, rec: rr.RecordingStream, start_step: int, start_s: float, actions: npt.ArrayLike
    ) -> bool:
        """Log one chunk [H, D] predicted at (start_step, start_s). Rows that are not finite (padding a
        recorder wrote as NaN) are left out. Returns False when the chunk had no finite row."""
        a = np.asarray(actions, dtype=np.float64)
        d = len(self.joint_names)
        if a.ndim != 2 or a.shape[1] != d:
            raise ValueError(f"chunk must be [H, {d}], got shape {a.shape}")
        finite_rows = np.flatnonzero(np.all(np.isfinite(a), axis=1))
        if finite_rows.size == 0:
            return False
        last = int(finite_rows[-1])
        offsets = np.arange(a.shape[0])
        index = TimeIndex.of(start_step + offsets, start_s + offsets / self.fps)
        place = self.slots.place(start_step, start_s, start_step + last, start_s + last / self.fps)
        self._style(rec, place.slot)
        for j, joint in enumerate(self.joint_names):
            path = layout.chunk_path(joint, self.source, place.slot)
            if place.clear_step is not None and place.clear_seconds is not None:
                log_at(rec, path, rr.Clear(recursive=False), place.clear_step, place.clear_seconds)
            send_scalars(rec, path, index, a[:, j])
        self.chunks_logged += 1
        return True

    def _style(self, rec: rr.RecordingStream, slot: int) -> None:
        if slot in self._styled:
            return
        self._styled.add(slot)
        for joint in self.joint_names:
            rec.log(layout.chunk_path(joint, self.source, slot), layout.chunk_style(joint, self.source), static=True)


def chunk_sources(names: Sequence[str]) -> list[str]:
    """Order chunk sources so that the policy's own chunks come first (they are the fans users look for)."""
    return sorted(names, key=lambda n: (n != layout.POLICY_CHUNK, n))
