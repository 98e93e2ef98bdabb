"""LiveLogger: watch a robot-client run in rerun while it runs, without ever slowing the servo loop.

Wiring (the callbacks of `run_episode` / `ServoLoop` / `PolicyWorker` take exactly these methods):

    viewer = LiveLogger(LiveConfig(joint_names=config.joint_names, fps=md.control_fps, sink=SinkConfig(serve=True)))
    run_episode(..., on_tick=viewer.log_tick, on_chunk=viewer.log_chunk)   # then viewer.close()

Why a queue and a thread: a rerun call costs 0.1-0.6 ms and a 200-500 Hz servo loop has no such time to give.
The caller's side of every method is a counter, a comparison and a `put_nowait` on a bounded queue; one
background thread owns the recording stream and does all conversion, FK and image compression. Ticks are
decimated on the caller's side (one in `tick_every`; hold/resume changes are noticed on every tick), images
are logged only when they change, and when the queue is full items are dropped and counted, never waited for.
`close()` drains the queue, closes the sinks and reports the drops.

The logger keeps references to the arrays it is given until they are written (copying on the caller's side
would cost the time saved), so callers must not modify them afterwards; the records the servo loop and the
policy worker hand out are not modified after the callback.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TextIO

import rerun as rr

from replay.view import layout
from replay.view.chunks import DEFAULT_MAX_SLOTS
from replay.view.kinematics import DEFAULT_MODEL, KinematicsError, RobotKinematics
from replay.view.live_writer import LiveWriter, WriterCounts
from replay.view.sinks import SinkConfig, Sinks
from replay.view.text import INFO, TextRow, hold_row
from robot_client.control_loop import TickRecord
from robot_client.policy_worker import ChunkRecord

log = logging.getLogger(__name__)
APP_ID = "yam_live"


@dataclass(frozen=True)
class LiveConfig:
    """What to log and where. `fps` is the policy's control rate: it spaces a chunk's actions in time and
    turns seconds into the `step` timeline. `tick_every` = 7 logs ~29 Hz of a 200 Hz servo loop."""

    joint_names: tuple[str, ...]
    fps: float
    sink: SinkConfig
    # Cameras get one panel each in the layout; without names, one panel shows everything under /cameras.
    camera_names: tuple[str, ...] = ()
    tick_every: int = 7
    queue_size: int = 512
    # Ticks gathered before one columnar send, and the longest a tick waits to be sent.
    batch_ticks: int = 8
    flush_interval_s: float = 0.25
    jpeg_quality: int = 75
    robot: bool = True
    model_path: Path = DEFAULT_MODEL
    max_chunk_slots: int = DEFAULT_MAX_SLOTS
    # Plots show this many seconds before the time cursor (and the chunk horizon after it).
    follow_window_s: float = 10.0
    app_id: str = APP_ID
    recording_id: str | None = None
    # The robot client's clock value shown as time 0; None = the first record logged.
    start_time: float | None = None

    def __post_init__(self) -> None:
        if not self.joint_names:
            raise ValueError("LiveConfig.joint_names must not be empty")
        if not self.fps > 0:
            raise ValueError(f"LiveConfig.fps must be > 0, got {self.fps}")
        for label in ("tick_every", "queue_size", "batch_ticks"):
            if getattr(self, label) < 1:
                raise ValueError(f"LiveConfig.{label} must be >= 1, got {getattr(self, label)}")
        if not self.flush_interval_s > 0:
            raise ValueError(f"LiveConfig.flush_interval_s must be > 0, got {self.flush_interval_s}")


@dataclass(frozen=True)
class LiveStats:
    """What reached the view, and what was dropped because the background thread fell behind."""

    written: WriterCounts
    dropped: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    last_error: str = ""

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        w = self.written
        text = (f"live view: {w.ticks} ticks, {w.chunks} chunks, {w.images} images, {w.events} events, "
                f"{w.warnings} server warnings logged")
        if self.total_dropped:
            text += f"; dropped (logger behind) {dict(self.dropped)}"
        if self.errors:
            text += f"; {self.errors} logging errors, last: {self.last_error}"
        return text


@dataclass(frozen=True)
class _Tick:
    record: TickRecord


@dataclass(frozen=True)
class _Chunk:
    record: ChunkRecord


@dataclass(frozen=True)
class _Event:
    time: float
    row: TextRow


class _Stop:
    pass


_Item = _Tick | _Chunk | _Event | _Stop


def _kinematics(config: LiveConfig) -> RobotKinematics | None:
    if not config.robot:
        return None
    try:
        return RobotKinematics(config.joint_names, config.model_path)
    except KinematicsError as err:
        log.warning("live view: 3D arms skipped: %s", err)
        return None


class LiveLogger:
    """Non-blocking rerun logging for the robot client (see the module docstring)."""

    def __init__(
        self, config: LiveConfig, *, out: TextIO | None = None, stream: rr.RecordingStream | None = None
    ) -> None:
        """Opens the sinks now, so that a busy port or a bad address fails here and not mid-run. With `stream`
        the view goes into that (caller-owned) stream instead: `config.sink` is not used and `close` only
        flushes it."""
        self.config = config
        kin = _kinematics(config)
        content = layout.ViewContent(
            joint_names=config.joint_names, camera_names=config.camera_names,
            any_cameras=not config.camera_names, robot=kin is not None, norm=True,
            follow_window_s=config.follow_window_s,
        )
        self._owns_stream = stream is None
        rec = stream
        if rec is None:
            rec = rr.RecordingStream(config.app_id, recording_id=config.recording_id)
            Sinks(config.sink, out).attach(rec, layout.build_blueprint(content))
        self.stream = rec
        self._writer = LiveWriter(
            rec, config.joint_names, config.fps, kin, config.jpeg_quality, config.max_chunk_slots,
            config.start_time,
        )
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=config.queue_size)
        self._tick_count = itertools.count()
        self._holding: bool | None = None
        self._dropped: Counter[str] = Counter()
        self._drop_lock = threading.Lock()
        self._errors = 0
        self._last_error = ""
        self._closed = False
        self._stats: LiveStats | None = None
        self._thread = threading.Thread(target=self._drain, name="rerun-live-view", daemon=True)
        self._thread.start()

    # -- caller side: never blocks ---------------------------------------------------------------------------
    def log_tick(self, record: TickRecord) -> None:
        """Servo-loop callback. Notices hold/resume on every tick; queues one tick in `tick_every`."""
        if self._closed:
            return
        if record.holding != self._holding:
            was, self._holding = self._holding, record.holding
            if was is not None or record.holding:
                self._offer(_Event(record.time, hold_row(record.holding)), "events")
        if next(self._tick_count) % self.config.tick_every == 0:
            self._offer(_Tick(record), "ticks")

    def log_chunk(self, record: ChunkRecord) -> None:
        """Policy-worker callback: the chunk's fan, its delay, the server's warnings and the new images."""
        if not self._closed:
            self._offer(_Chunk(record), "chunks")

    def log_event(self, time: float, text: str, level: str = INFO) -> None:
        """A line in `/events` at `time` (robot client clock): e-stop, fault, episode start..."""
        if not self._closed:
            self._offer(_Event(time, TextRow(text, level)), "events")

    def _offer(self, item: _Item, kind: str) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._drop_lock:
                self._dropped[kind] += 1

    @property
    def dropped(self) -> dict[str, int]:
        with self._drop_lock:
            return dict(self._dropped)

    # -- background thread -----------------------------------------------------------------------------------
    def _guard(self, what: str, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as err:  # a view must never take the run down; count and report instead
            self._errors += 1
            self._last_error = f"{what}: {err!r}"
            if self._errors == 1:
                log.exception("live view: %s failed (further errors are counted, not logged)", what)

    def _handle(self, item: _Item) -> None:
        w = self._writer
        if isinstance(item, _Tick):
            w.tick(item.record)
        elif isinstance(item, _Chunk):
            w.chunk(item.record)
        elif isinstance(item, _Event):
            w.event(item.time, item.row)

    def _drain(self) -> None:
        self._guard("start", self._writer.start)
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if isinstance(item, _Stop):
                break
            if item is not None:
                self._guard(type(item).__name__.strip("_").lower(), self._handle, item)
            pending = self._writer.pending_ticks
            if pending and deadline is None:
                deadline = time.monotonic() + self.config.flush_interval_s
            if pending >= self.config.batch_ticks or (deadline is not None and time.monotonic() >= deadline):
                self._guard("flush", self._writer.flush)
                deadline = None
        self._guard("flush", self._writer.flush)

    # -- shutdown --------------------------------------------------------------------------------------------
    def close(self, timeout_s: float = 10.0) -> LiveStats:
        """Write what is queued, close the sinks and report (drops are also logged as a warning)."""
        if self._stats is not None:
            return self._stats
        self._closed = True
        try:
            self._queue.put(_Stop(), timeout=timeout_s)
        except queue.Full:
            log.warning("live view: background thread stuck; closing without draining")
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._errors += 1
            self._last_error = f"background thread did not finish within {timeout_s} s"
        else:
            self._guard("close", self._close_stream, timeout_s)
        self._stats = LiveStats(self._writer.counts, self.dropped, self._errors, self._last_error)
        if self._stats.total_dropped or self._stats.errors:
            log.warning("%s", self._stats.summary())
        return self._stats

    def _close_stream(self, timeout_s: float) -> None:
        self.stream.flush(timeout_sec=timeout_s)
        if self._owns_stream:
            self.stream.disconnect()

    def __enter__(self) -> LiveLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
