"""The consumer side of the live logger: turns ticks, chunks and events into rerun rows.

Runs only on the live logger's background thread, which owns the recording stream (rerun's time cursor is
per thread, and nothing here has to be thread-safe). Ticks are buffered and sent as columns a few times a
second; chunks, images and text are logged as they come. Between groups of entities the thread yields the GIL
(`time.sleep(0)`), so a servo thread waking up meanwhile waits for one group (about a millisecond), not for
Python's 5 ms switch interval. Times are seconds since `start_time` (or the first
record seen) on the robot client's clock, and `step` is that time in policy steps (time * fps, rounded), so the
live view lines up with the recording of the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import rerun as rr

from replay.view import layout
from replay.view.chunks import FanLogger, FanSlots
from replay.view.columns import TimeIndex, log_at, log_series_styles, send_joint_series, send_scalars
from replay.view.kinematics import RobotKinematics
from replay.view.norm import norm_extents
from replay.view.robot3d import log_robot_static, send_robot_poses
from replay.view.text import TextRow, response_rows
from robot_client.control_loop import TickRecord
from robot_client.policy_worker import ChunkRecord

TICK_KINDS = (layout.STATE, layout.TARGET, layout.COMMANDED)
SIGNALS = {
    "holding": "holding (1 = arm holding)",
    "exhausted_s": "seconds since the last scheduled action",
    "chunk_delay_s": "chunk delay: received - observation (s)",
    "chunk_rtt_s": "chunk round trip: received - sent (s)",
}


def yield_gil() -> None:
    """Release the GIL for a moment so that a waiting (time-critical) thread can run."""
    time.sleep(0)


@dataclass
class WriterCounts:
    ticks: int = 0
    chunks: int = 0
    events: int = 0
    images: int = 0
    warnings: int = 0


@dataclass
class LiveWriter:
    """Owns the stream's content. Call `start` once on the owning thread, then the handlers, then `flush`."""

    rec: rr.RecordingStream
    joint_names: tuple[str, ...]
    fps: float
    kinematics: RobotKinematics | None = None
    jpeg_quality: int = 75
    max_chunk_slots: int = 16
    start_time: float | None = None
    counts: WriterCounts = field(default_factory=WriterCounts)
    _ticks: list[TickRecord] = field(default_factory=list)
    _last_images: dict[str, npt.NDArray[np.uint8]] = field(default_factory=dict)
    _fans: FanLogger | None = None
    _norm_styled: set[str] = field(default_factory=set)

    def start(self) -> None:
        """Static content: series styles, signal names and the arm geometry."""
        for kind in TICK_KINDS:
            log_series_styles(self.rec, self.joint_names, kind)
        for name, label in SIGNALS.items():
            self.rec.log(layout.signal_path(name), rr.SeriesLines(names=label), static=True)
        if self.kinematics is not None:
            log_robot_static(self.rec, self.kinematics)
        self._fans = FanLogger(self.joint_names, self.fps, layout.POLICY_CHUNK, FanSlots(self.max_chunk_slots))

    @property
    def pending_ticks(self) -> int:
        return len(self._ticks)

    def position(self, t: float) -> tuple[int, float]:
        """(step, seconds) of a time on the robot client's clock."""
        if self.start_time is None:
            self.start_time = t
        seconds = t - self.start_time
        return int(round(seconds * self.fps)), seconds

    # -- ticks -----------------------------------------------------------------------------------------------
    def tick(self, record: TickRecord) -> None:
        self.position(record.time)
        self._ticks.append(record)

    def flush(self) -> None:
        """Send the buffered ticks as columns: joint series, signals and the arm poses."""
        ticks, self._ticks = self._ticks, []
        if not ticks:
            return
        d = len(self.joint_names)
        positions = [self.position(r.time) for r in ticks]
        index = TimeIndex.of([p[0] for p in positions], [p[1] for p in positions])
        state = np.stack([np.asarray(r.state.positions, dtype=np.float64) for r in ticks])
        nan = np.full(d, np.nan)
        target = np.stack([nan if r.target is None else np.asarray(r.target, dtype=np.float64) for r in ticks])
        commanded = np.stack([np.asarray(r.command.position, dtype=np.float64) for r in ticks])
        for kind, values in ((layout.STATE, state), (layout.TARGET, target), (layout.COMMANDED, commanded)):
            send_joint_series(self.rec, self.joint_names, kind, index, values)
            yield_gil()
        send_scalars(self.rec, layout.signal_path("holding"), index, [float(r.holding) for r in ticks])
        send_scalars(self.rec, layout.signal_path("exhausted_s"), index, [r.exhausted_s for r in ticks])
        if self.kinematics is not None:
            send_robot_poses(self.rec, self.kinematics, index, state)
            yield_gil()
        self.counts.ticks += len(ticks)

    # -- chunks ----------------------------------------------------------------------------------------------
    def chunk(self, record: ChunkRecord) -> None:
        step, seconds = self.position(record.obs_time)
        assert self._fans is not None, "call start() first"
        actions = np.asarray(record.actions, dtype=np.float64)
        if actions.ndim == 2 and actions.shape[1] == len(self.joint_names):
            self._fans.log(self.rec, step, seconds, actions)
            yield_gil()
        one = TimeIndex.of([step], [seconds])
        send_scalars(self.rec, layout.signal_path("chunk_delay_s"), one, [record.received_time - record.obs_time])
        send_scalars(self.rec, layout.signal_path("chunk_rtt_s"), one, [record.received_time - record.sent_time])
        self._log_response(record.response, step, seconds)
        yield_gil()
        self._log_images(record.images, step, seconds)
        self.counts.chunks += 1

    def _log_response(self, response: Any, step: int, seconds: float) -> None:
        if not hasattr(response, "get"):
            return
        for row in response_rows(response):
            log_at(self.rec, layout.NORM_WARNINGS, row.archetype(), step, seconds)
            self.counts.warnings += 1
        one = TimeIndex.of([step], [seconds])
        for name, values in norm_extents(response, self.joint_names).items():
            if not np.isfinite(values).any():
                continue
            style = name not in self._norm_styled
            self._norm_styled.add(name)
            for j, joint in enumerate(self.joint_names):
                path = layout.norm_path(joint, name)
                if style:
                    self.rec.log(path, rr.SeriesLines(names=f"{joint} {name}", colors=layout.series_color(name)),
                                 static=True)
                send_scalars(self.rec, path, one, [values[j]])

    def _changed(self, camera: str, image: npt.NDArray[np.uint8]) -> bool:
        last = self._last_images.get(camera)
        if last is not None and (last is image or (last.shape == image.shape and np.array_equal(last, image))):
            return False
        self._last_images[camera] = image
        return True

    def _log_images(self, images: Any, step: int, seconds: float) -> None:
        for camera, frame in dict(images or {}).items():
            image = np.asarray(frame)
            if image.dtype != np.uint8 or image.ndim != 3 or not self._changed(str(camera), image):
                continue
            encoded = rr.Image(image).compress(jpeg_quality=self.jpeg_quality)
            log_at(self.rec, layout.camera_path(str(camera)), encoded, step, seconds)
            self.counts.images += 1
            yield_gil()

    # -- text ------------------------------------------------------------------------------------------------
    def event(self, t: float, row: TextRow) -> None:
        step, seconds = self.position(t)
        log_at(self.rec, layout.EVENTS, row.archetype(), step, seconds)
        self.counts.events += 1
