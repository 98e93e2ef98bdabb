"""RecordingWriter: records episodes in our zarr layout without blocking the control loop, crash-safely.

Why: the control loop records at 30 Hz while driving the arms, so recording must never block it and must
survive the process being killed at any moment (e-stop, OOM, SIGKILL). LeRobot's writer encodes video at
episode end, so a killed process loses the episode; here every block of frames is durable as soon as it is
written, and an episode is marked `complete` only after all of its data is on disk.

How: `append` validates and copies the frame in the caller and puts it on a bounded queue (never blocking;
a full queue drops the frame, counts it, and warns). A background thread appends whole blocks of
`chunk_frames` frames: resize the arrays, write the block, then record the new `length` in the episode attrs.
zarr's LocalStore writes every file atomically (temp file + rename), so after a crash `length` never counts
frames that are not on disk, and `complete: true`, written last, is only present on finished episodes.
"""

from __future__ import annotations

import logging
import math
import queue
import shutil
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import BloscCodec

from robodata.dataset import DatasetError, ImageArray
from robodata.recording_layout import (
    EPISODE_COMPLETED,
    EPISODES_GROUP,
    FORMAT_NAME,
    NAME_RE,
    RecordingSpec,
    check_outcome,
    episode_group_name,
    existing_indices,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodeSummary:
    """What `end_episode` reports once the episode is on disk."""

    index: int
    length: int
    dropped_frames: int
    complete: bool
    outcome: str = EPISODE_COMPLETED
    reason: str = ""


# ---- queue items -------------------------------------------------------------------------------------


@dataclass
class _Start:
    index: int
    task: str
    started_unix: float


@dataclass
class _Frame:
    timestamp: float
    state: npt.NDArray[np.float32]
    action: npt.NDArray[np.float32]
    images: dict[str, ImageArray]
    extras: dict[str, npt.NDArray[Any]]
    dropped_so_far: int


@dataclass
class _End:
    index: int
    dropped: int
    complete: bool
    outcome: str = EPISODE_COMPLETED
    reason: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    summary: EpisodeSummary | None = None


@dataclass
class _Stop:
    pass


_Item = _Start | _Frame | _End | _Stop


def _image_codec() -> BloscCodec:
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


class _EpisodeSink:
    """Writer-thread side of one episode: buffers frames and appends them in blocks of `chunk_frames`."""

    def __init__(self, root: zarr.Group, spec: RecordingSpec, start: _Start) -> None:
        self.spec = spec
        self.index = start.index
        episodes = root.require_group(EPISODES_GROUP)
        self.group = episodes.create_group(
            episode_group_name(start.index),
            attributes={
                "task": start.task,
                "complete": False,
                "length": 0,
                "dropped_frames": 0,
                "started_unix": start.started_unix,
                "ended_unix": None,
            },
        )
        n = spec.chunk_frames
        self.arrays: dict[str, zarr.Array[Any]] = {
            "timestamp": self.group.create_array("timestamp", shape=(0,), chunks=(n,), dtype=np.float64),
            "state": self.group.create_array(
                "state", shape=(0, len(spec.state_names)), chunks=(n, len(spec.state_names)), dtype=np.float32
            ),
            "action": self.group.create_array(
                "action",
                shape=(0, len(spec.action_names)),
                chunks=(n, len(spec.action_names)),
                dtype=np.float32,
            ),
        }
        if spec.cameras:
            images = self.group.create_group("images")
            for cam, (h, w) in spec.cameras.items():
                self.arrays[f"images/{cam}"] = images.create_array(
                    cam, shape=(0, h, w, 3), chunks=(n, h, w, 3), dtype=np.uint8, compressors=_image_codec()
                )
        self.buffer: list[_Frame] = []
        self.length = 0
        self.dropped = 0

    def _ensure_extras(self, frame: _Frame) -> None:
        n = self.spec.chunk_frames
        for name, value in frame.extras.items():
            key = f"extras/{name}"
            if key not in self.arrays:
                extras = self.group.require_group("extras")
                self.arrays[key] = extras.create_array(
                    name, shape=(0, *value.shape), chunks=(n, *value.shape), dtype=value.dtype
                )

    def add(self, frame: _Frame) -> None:
        self.buffer.append(frame)
        self.dropped = frame.dropped_so_far
        if len(self.buffer) >= self.spec.chunk_frames:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        block = self.buffer
        self.buffer = []
        self._ensure_extras(block[0])
        stacked: dict[str, npt.NDArray[Any]] = {
            "timestamp": np.array([f.timestamp for f in block], dtype=np.float64),
            "state": np.stack([f.state for f in block]),
            "action": np.stack([f.action for f in block]),
        }
        for cam in self.spec.cameras:
            stacked[f"images/{cam}"] = np.stack([f.images[cam] for f in block])
        for name in block[0].extras:
            stacked[f"extras/{name}"] = np.stack([f.extras[name] for f in block])
        start, end = self.length, self.length + len(block)
        for key, values in stacked.items():
            arr = self.arrays[key]
            arr.resize((end, *arr.shape[1:]))
            arr[start:end] = values
        self.length = end
        # Written last: `length` never counts frames that are not on disk.
        self.group.attrs.update({"length": self.length, "dropped_frames": self.dropped})

    def finish(self, end: _End) -> EpisodeSummary:
        self.flush()
        self.dropped = max(self.dropped, end.dropped)
        self.group.attrs.update(
            {
                "length": self.length,
                "dropped_frames": self.dropped,
                "ended_unix": time.time(),
                "outcome": end.outcome,
                "reason": end.reason,
                "complete": end.complete,
            }
        )
        return EpisodeSummary(self.index, self.length, self.dropped, end.complete, end.outcome, end.reason)


class RecordingWriter:
    """Records episodes without ever blocking the control loop.

    `append` validates the frame in the caller (bad input raises DatasetError naming the field), copies it,
    and hands it to a background thread through a bounded queue; if the queue is full the frame is dropped,
    counted in the episode's `dropped_frames`, and a warning is logged. `end_episode` waits until the episode
    is on disk and marked complete. Use as a context manager or call `close()`.
    """

    def __init__(self, path: str | Path, spec: RecordingSpec, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.spec = spec
        self._root = self._open_root(overwrite)
        existing = existing_indices(self.path)
        self._next_index = existing[-1] + 1 if existing else 0
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=spec.queue_frames)
        self._error: BaseException | None = None
        self._current: int | None = None
        self._dropped = 0
        self._last_ts = -math.inf
        self._extras_spec: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"recording-writer:{self.path.name}", daemon=True
        )
        self._thread.start()

    # ---- setup ----------------------------------------------------------------------------------------

    def _open_root(self, overwrite: bool) -> zarr.Group:
        where = str(self.path)
        if self.path.exists():
            if not self.path.is_dir():
                raise DatasetError(f"{where}: exists and is not a directory")
            if any(self.path.iterdir()):
                try:
                    attrs = dict(zarr.open_group(where, mode="r").attrs)
                except Exception as err:  # not a zarr group at all
                    raise DatasetError(
                        f"{where}: exists and is not a recording (not a zarr group: {err})"
                    ) from err
                if attrs.get("format") != FORMAT_NAME:
                    raise DatasetError(
                        f"{where}: exists and is not a recording (format={attrs.get('format')!r})"
                    )
                if overwrite:
                    shutil.rmtree(self.path)
                else:
                    stored = RecordingSpec.from_attrs(attrs, where).root_attrs()
                    wanted = self.spec.root_attrs()
                    diff = sorted(k for k in wanted if stored.get(k) != wanted[k])
                    if diff:
                        raise DatasetError(
                            f"{where}: existing recording differs in {diff}: stored "
                            f"{ {k: stored.get(k) for k in diff} }, new { {k: wanted[k] for k in diff} }"
                        )
                    return zarr.open_group(where, mode="a")
        root = zarr.open_group(where, mode="w", zarr_format=3, attributes=self.spec.root_attrs())
        root.require_group(EPISODES_GROUP)
        return root

    # ---- caller side ----------------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._error is not None:
            raise DatasetError(f"{self.path}: recording writer failed: {self._error!r}") from self._error
        if self._closed:
            raise DatasetError(f"{self.path}: recording writer is closed")

    @property
    def current_episode(self) -> int | None:
        return self._current

    @property
    def dropped_frames(self) -> int:
        """Frames dropped so far in the current episode."""
        return self._dropped

    def start_episode(self, task: str) -> int:
        """Open a new episode and return its index."""
        self._check_alive()
        if self._current is not None:
            raise DatasetError(
                f"{self.path}: episode {self._current} is still open; call end_episode() first"
            )
        if not isinstance(task, str):
            raise DatasetError(f"{self.path}: task must be a string, got {type(task).__name__}")
        index = self._next_index
        self._next_index += 1
        self._current = index
        self._dropped = 0
        self._last_ts = -math.inf
        self._extras_spec = None
        self._queue.put(_Start(index, task, time.time()))
        return index

    def append(
        self,
        timestamp: float,
        state: npt.ArrayLike,
        action: npt.ArrayLike,
        images: Mapping[str, npt.ArrayLike] | None = None,
        extras: Mapping[str, npt.ArrayLike] | None = None,
    ) -> bool:
        """Queue one frame; returns False if it was dropped because the writer is behind. Never blocks."""
        self._check_alive()
        if self._current is None:
            raise DatasetError(f"{self.path}: append() outside an episode; call start_episode() first")
        frame = self._validate(timestamp, state, action, images or {}, extras or {})
        self._last_ts = frame.timestamp
        frame.dropped_so_far = self._dropped
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self._dropped += 1
            msg = (
                f"{self.path}: recording writer is behind; dropped frame at t={frame.timestamp:.3f} "
                f"({self._dropped} dropped in episode {self._current})"
            )
            if self._dropped == 1:
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
            if self._dropped == 1 or self._dropped % max(1, int(self.spec.fps)) == 0:
                logger.warning(msg)
            return False
        return True

    def _validate(
        self,
        timestamp: float,
        state: npt.ArrayLike,
        action: npt.ArrayLike,
        images: Mapping[str, npt.ArrayLike],
        extras: Mapping[str, npt.ArrayLike],
    ) -> _Frame:
        where = f"{self.path}: episode {self._current}, frame"
        if isinstance(timestamp, bool) or not isinstance(timestamp, int | float | np.floating | np.integer):
            raise DatasetError(f"{where}: timestamp must be a number, got {type(timestamp).__name__}")
        ts = float(timestamp)
        if not math.isfinite(ts):
            raise DatasetError(f"{where}: timestamp must be finite, got {ts}")
        if ts <= self._last_ts:
            raise DatasetError(f"{where}: timestamp {ts} is not after the previous frame's {self._last_ts}")
        state_arr = self._vector(state, "state", len(self.spec.state_names), where)
        action_arr = self._vector(action, "action", len(self.spec.action_names), where)
        if set(images) != set(self.spec.cameras):
            raise DatasetError(
                f"{where}: images must hold exactly the cameras {sorted(self.spec.cameras)}, got {sorted(images)}"
            )
        imgs: dict[str, ImageArray] = {}
        for cam, (h, w) in self.spec.cameras.items():
            img = np.asarray(images[cam])
            if img.dtype != np.uint8 or img.shape != (h, w, 3):
                raise DatasetError(
                    f"{where}: images['{cam}'] must be uint8 [{h}, {w}, 3], got {img.dtype} {img.shape}"
                )
            imgs[cam] = np.array(img, copy=True)
        return _Frame(ts, state_arr, action_arr, imgs, self._validate_extras(extras, where), 0)

    @staticmethod
    def _vector(values: npt.ArrayLike, label: str, dim: int, where: str) -> npt.NDArray[np.float32]:
        try:
            arr = np.asarray(values)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{where}: {label} is not an array: {err}") from err
        if arr.shape != (dim,) or not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
            raise DatasetError(
                f"{where}: {label} must be a real vector of shape [{dim}], got {arr.dtype} {arr.shape}"
            )
        out = np.array(arr, dtype=np.float32, copy=True)
        if not np.all(np.isfinite(out)):
            raise DatasetError(f"{where}: {label} has non-finite values: {out.tolist()}")
        return out

    def _validate_extras(
        self, extras: Mapping[str, npt.ArrayLike], where: str
    ) -> dict[str, npt.NDArray[Any]]:
        out: dict[str, npt.NDArray[Any]] = {}
        for name, value in extras.items():
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise DatasetError(f"{where}: extras name {name!r} must match {NAME_RE.pattern}")
            arr = np.asarray(value)
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
                raise DatasetError(f"{where}: extras['{name}'] must be numeric or bool, got {arr.dtype}")
            out[name] = np.array(arr, copy=True)
        if self._extras_spec is None:
            self._extras_spec = {k: (v.shape, v.dtype) for k, v in out.items()}
            return out
        if set(out) != set(self._extras_spec):
            raise DatasetError(
                f"{where}: extras must hold the names fixed by the episode's first frame "
                f"{sorted(self._extras_spec)}, got {sorted(out)}"
            )
        for name, (shape, dtype) in self._extras_spec.items():
            arr = out[name]
            if arr.shape != shape:
                raise DatasetError(
                    f"{where}: extras['{name}'] must have shape {shape} (fixed by the first frame), got {arr.shape}"
                )
            if arr.dtype != dtype:
                if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
                    raise DatasetError(
                        f"{where}: extras['{name}'] dtype {arr.dtype} cannot be stored as {dtype}"
                    )
                out[name] = arr.astype(dtype)
        return out

    def end_episode(self, complete: bool = True, *, outcome: str = EPISODE_COMPLETED,
                    reason: str = "") -> EpisodeSummary:
        """Write the rest of the episode, mark it complete (or not) with how it ended (`outcome`, and for an
        aborted one the `reason`), and wait until it is on disk."""
        self._check_alive()
        if self._current is None:
            raise DatasetError(f"{self.path}: end_episode() without an open episode")
        check_outcome(outcome, reason, f"{self.path}: episode {self._current}")
        end = _End(self._current, self._dropped, complete, outcome, reason)
        self._current = None
        self._queue.put(end)
        end.done.wait()
        if self._error is not None:
            raise DatasetError(f"{self.path}: recording writer failed: {self._error!r}") from self._error
        assert end.summary is not None
        if end.summary.dropped_frames:
            logger.warning(
                "%s: episode %d ended with %d dropped frames",
                self.path,
                end.summary.index,
                end.summary.dropped_frames,
            )
        return end.summary

    def close(self, complete_open_episode: bool = True) -> None:
        """End an open episode (complete unless told otherwise) and stop the writer thread."""
        if self._closed:
            return
        try:
            if self._current is not None and self._error is None:
                self.end_episode(complete=complete_open_episode)
        finally:
            self._closed = True
            self._queue.put(_Stop())
            self._thread.join()
        if self._error is not None:
            raise DatasetError(f"{self.path}: recording writer failed: {self._error!r}") from self._error

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # On an exception the open episode keeps its written frames but is not marked complete.
        if exc_type is None:
            self.close()
        else:
            try:
                self.close(complete_open_episode=False)
            except DatasetError:
                logger.exception("%s: recording writer failed while closing after an error", self.path)

    # ---- writer thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        sink: _EpisodeSink | None = None
        while True:
            item = self._queue.get()
            if isinstance(item, _Stop):
                return
            if isinstance(item, _End):
                try:
                    if self._error is None and sink is not None:
                        item.summary = sink.finish(item)
                    else:
                        item.summary = EpisodeSummary(item.index, 0, item.dropped, False, item.outcome, item.reason)
                except BaseException as err:  # reported to the caller by end_episode/append/close
                    self._error = err
                    logger.exception("%s: failed to finish episode %d", self.path, item.index)
                finally:
                    sink = None
                    item.done.set()
                continue
            if self._error is not None:
                continue  # keep draining so the caller never blocks on a full queue
            try:
                if isinstance(item, _Start):
                    sink = _EpisodeSink(self._root, self.spec, item)
                elif sink is not None:
                    sink.add(item)
            except BaseException as err:
                self._error = err
                logger.exception("%s: recording writer failed", self.path)
