"""Record a robot-client run as a dataset, at the policy rate, through the data layer's writer.

Why a dataset: a recording must replay and be oracled like any demonstration, so it has one frame per policy
step (1 / fps) with the measured state, the action target the arm was tracking and the camera images (the most
recent ones sent to the policy). What a demonstration does not have goes to per-frame extras:

- `commanded` [D]: the jerk-limited servo command at that instant; `state` is what the arm achieved;
- `holding` [1]: the arm was holding (server late/down or e-stop);
- `chunk` [H, D] (NaN when no chunk arrived since the previous frame), `chunk_new` [1], `chunk_obs_time` [1],
  `chunk_delay_s` [1]: every received chunk, with the observation time it answers and its delay;
- `norm_state_min`, `norm_state_max` [D] and `norm_action_max_abs` [D]: the server's normalization report for
  that chunk (NaN when absent); `server_warnings` [1]: how many warnings came with it;
- `image_age_s` [1]: how old the recorded images are at the frame's time;
- `live_ref` [2] (episode, frame of the nearest demonstration, -1 when not compared) and `live_chunk_l1` [D]
  (per-joint error of the live chunk against that frame's ground truth), when a comparison dataset is given.

Frames are appended from the servo loop's tick callback; the writer queues them and never blocks the loop. An
episode that ended early is still written in full and marked `outcome: aborted` with its reason in the episode's
attributes (`robodata.recording_layout`), so replay and the oracle see what happened and why it stopped.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from robodata.recording_layout import EPISODE_COMPLETED, RecordingSpec
from robodata.recording_writer import RecordingWriter
from robot_client.control_loop import TickRecord
from robot_client.live_compare import LiveComparison
from robot_client.policy_worker import ChunkRecord

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class RecorderSpec:
    fps: float
    joint_names: tuple[str, ...]
    cameras: Mapping[str, tuple[int, int]]
    horizon: int
    robot_type: str | None = None


def _norm_extents(response: Mapping[str, Any], names: tuple[str, ...]) -> tuple[F32, F32, F32]:
    """Per-joint normalized state min/max and action |max| from a response's norm report (NaN if absent)."""
    report = response.get("norm_report") or {}
    state_min = np.full(len(names), np.nan, np.float32)
    state_max = np.full(len(names), np.nan, np.float32)
    action_abs = np.full(len(names), np.nan, np.float32)
    index = {n: i for i, n in enumerate(names)}
    for dim in report.get("state", []) or []:
        i = index.get(dim.get("name", ""))
        if i is not None:
            state_min[i] = float(dim.get("normalized_min", np.nan))
            state_max[i] = float(dim.get("normalized_max", np.nan))
    for dim in report.get("actions", []) or []:
        i = index.get(dim.get("name", ""))
        if i is not None:
            action_abs[i] = max(abs(float(dim.get("normalized_min", np.nan))),
                                abs(float(dim.get("normalized_max", np.nan))))
    return state_min, state_max, action_abs


class RunRecorder:
    def __init__(self, path: Path, spec: RecorderSpec) -> None:
        self.spec = spec
        self.writer = RecordingWriter(path, RecordingSpec(
            fps=spec.fps, state_names=spec.joint_names, action_names=spec.joint_names, cameras=dict(spec.cameras),
            robot_type=spec.robot_type,
        ))
        self._lock = threading.Lock()
        self._images: dict[str, npt.NDArray[np.uint8]] | None = None
        self._image_time = math.nan
        self._pending: ChunkRecord | None = None
        self._comparison: LiveComparison | None = None
        self._start: float | None = None
        self._next_frame = 0
        self.frames = 0

    def start_episode(self, task: str) -> int:
        with self._lock:
            self._pending = None
            self._start = None
            self._next_frame = 0
        return self.writer.start_episode(task)

    def on_chunk(self, record: ChunkRecord, comparison: LiveComparison | None = None) -> None:
        with self._lock:
            self._pending = record
            self._comparison = comparison
            if record.images:
                self._images = {k: np.asarray(v) for k, v in record.images.items()}
                self._image_time = record.obs_time

    def on_tick(self, record: TickRecord) -> None:
        """Append a frame when the tick crosses the next policy step; cheap otherwise."""
        with self._lock:
            if self._images is None:
                return  # no observation yet: a dataset frame needs camera images
            if self._start is None:
                self._start = record.time
            due = self._start + self._next_frame / self.spec.fps
            if record.time + 1e-9 < due:
                return
            self._next_frame += 1
            chunk, self._pending = self._pending, None
            comparison, self._comparison = (self._comparison, None) if chunk is not None else (None, None)
            images = self._images
            image_age = record.time - self._image_time
        names = self.spec.joint_names
        d, h = len(names), self.spec.horizon
        target = record.target if record.target is not None else record.command.position
        chunk_arr = np.full((h, d), np.nan, np.float32)
        new, obs_time, delay, warnings = False, math.nan, math.nan, 0
        norm = (np.full(d, np.nan, np.float32),) * 3
        if chunk is not None:
            rows = min(h, len(chunk.actions))
            chunk_arr[:rows] = chunk.actions[:rows]
            new, obs_time, delay = True, chunk.obs_time, chunk.received_time - chunk.obs_time
            warnings = len(chunk.response.get("warnings") or [])
            norm = _norm_extents(chunk.response, names)
        self.writer.append(
            record.time, record.state.positions.astype(np.float32), np.asarray(target, np.float32), images,
            extras={
                "commanded": record.command.position.astype(np.float32),
                "holding": np.array([record.holding]),
                "chunk": chunk_arr,
                "chunk_new": np.array([new]),
                "chunk_obs_time": np.array([obs_time]),
                "chunk_delay_s": np.array([delay]),
                "norm_state_min": norm[0],
                "norm_state_max": norm[1],
                "norm_action_max_abs": norm[2],
                "server_warnings": np.array([warnings], np.int32),
                "image_age_s": np.array([image_age]),
                "live_ref": np.array([comparison.episode, comparison.frame] if comparison else [-1, -1], np.int64),
                "live_chunk_l1": (comparison.chunk_l1.astype(np.float32) if comparison
                                  else np.full(d, np.nan, np.float32)),
            },
        )
        self.frames += 1

    def end_episode(self, outcome: str = EPISODE_COMPLETED, reason: str = "") -> None:
        """Close the episode with how it ended (`robodata.recording_layout.OUTCOMES`) and why, when aborted."""
        self.writer.end_episode(outcome=outcome, reason=reason)

    def close(self) -> None:
        self.writer.close()
