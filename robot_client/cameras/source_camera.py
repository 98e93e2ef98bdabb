"""A camera fed from frames we already have: a renderer, a recording, or a test's hand-made images.

The simulator and replay need the exact same checks and output format as a real camera, and tests need to
control timestamps and sequence numbers to provoke stale and frozen frames without waiting on a clock.
Each `read()` pulls exactly one frame from the source, so a test or a replay steps deterministically.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from robot_client.cameras.base import Camera, Clock
from robot_client.cameras.frame import CameraError, CameraFrame, U8Image, check_rgb
from robot_client.cameras.image_ops import ResizeSpec
from robot_client.cameras.staleness import StalenessConfig


@dataclass(frozen=True, eq=False)
class SourceFrame:
    """A frame with optional explicit timing. A missing timestamp is stamped with the camera's clock when the
    frame is pulled; a missing sequence continues the camera's own counter."""

    rgb: U8Image
    timestamp: float | None = None
    sequence: int | None = None


FrameProducer = Callable[[], U8Image | SourceFrame]


class FrameSourceCamera(Camera):
    """Camera over a callable (called once per read) or a fixed stack of RGB frames (one per read, in order).

    With a stack, `timestamps` (one per frame, on the monotonic clock) replaces stamping at read time, and
    `loop` restarts at the first frame instead of raising CameraError when the stack runs out.
    """

    def __init__(self, name: str, source: FrameProducer | Sequence[U8Image] | U8Image, *,
                 timestamps: Sequence[float] | None = None, loop: bool = False, resize: ResizeSpec | None = None,
                 staleness: StalenessConfig | None = None, clock: Clock = time.monotonic) -> None:
        super().__init__(name, staleness, clock)
        self._producer: FrameProducer | None = None
        self._frames: Sequence[U8Image] | U8Image = ()
        if callable(source):
            if timestamps is not None or loop:
                raise ValueError("timestamps and loop apply to a stack of frames, not to a callable source")
            self._producer = source
        else:
            if isinstance(source, np.ndarray) and source.ndim != 4:
                raise ValueError(f"a frame stack must be N x H x W x 3, got shape {source.shape}")
            if len(source) == 0:
                raise ValueError("a frame stack needs at least one frame")
            if timestamps is not None and len(timestamps) != len(source):
                raise ValueError(f"{len(timestamps)} timestamps for {len(source)} frames")
            if timestamps is not None and loop:
                raise ValueError("a looping stack cannot replay fixed timestamps; let the clock stamp frames")
            self._frames = source
        self._timestamps = None if timestamps is None else [float(t) for t in timestamps]
        self._loop = loop
        self._resize = resize
        self._pulled = 0

    @property
    def frames_pulled(self) -> int:
        return self._pulled

    def _open(self) -> None:
        self._pulled = 0

    def _close(self) -> None:
        pass

    def _latest_frame(self) -> CameraFrame:
        index = self._pulled
        if self._producer is not None:
            produced = self._producer()
            item = produced if isinstance(produced, SourceFrame) else SourceFrame(produced)
        else:
            if index >= len(self._frames) and not self._loop:
                raise CameraError(self.name, f"end of frames: all {len(self._frames)} were read")
            position = index % len(self._frames)
            stamp = None if self._timestamps is None else self._timestamps[position]
            item = SourceFrame(np.asarray(self._frames[position]), stamp)
        self._pulled += 1
        check_rgb(item.rgb, self.name)
        rgb = item.rgb if self._resize is None else self._resize.apply(item.rgb)
        timestamp = self._clock() if item.timestamp is None else item.timestamp
        sequence = index if item.sequence is None else item.sequence
        return CameraFrame(rgb=rgb, capture_timestamp=timestamp, sequence=sequence, name=self.name)
