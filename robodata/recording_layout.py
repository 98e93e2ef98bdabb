"""The on-disk layout of our recordings (zarr v3) and the spec stored in their root attributes.

Layout (one directory):
- root attrs: {format: "yam-recording", version: 1, fps, state_names, action_names, cameras {name: [H, W]},
  robot_type}
- `episodes/episode_000000/` (one group per episode) with arrays chunked along time:
  `timestamp` [T] f64, `state` [T, Ds] f32, `action` [T, Da] f32, `images/<cam>` [T, H, W, 3] uint8,
  optional `extras/<name>` [T, ...] (shape and dtype fixed by the episode's first frame);
  attrs {task, complete, length, dropped_frames, started_unix, ended_unix, outcome, reason}.

`length` counts only frames known to be on disk and `complete: true` is written after everything else, so a
store cut off at any moment still says exactly what it holds (see `robodata.recording_writer`).

`complete` says the data is all on disk; `outcome` says how the episode itself ended: "completed" (it ran its
course) or "aborted" (it was stopped early: a refused first action, another model answering, the policy server
lost, a robot fault, an e-stop), with `reason` naming why. Both are written when the episode ends; an episode
written before `outcome` existed reads as completed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zarr

from robodata.dataset import DatasetError, check_fps

FORMAT_NAME = "yam-recording"
FORMAT_VERSION = 1
EPISODES_GROUP = "episodes"
EPISODE_RE = re.compile(r"^episode_(\d{6})$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


EPISODE_COMPLETED = "completed"
EPISODE_ABORTED = "aborted"
OUTCOMES = (EPISODE_COMPLETED, EPISODE_ABORTED)


def check_outcome(outcome: str, reason: str, where: str) -> None:
    """An episode outcome must be one of OUTCOMES, and an aborted episode must say why."""
    if outcome not in OUTCOMES:
        raise DatasetError(f"{where}: episode outcome must be one of {list(OUTCOMES)}, got {outcome!r}")
    if outcome == EPISODE_ABORTED and not reason.strip():
        raise DatasetError(f"{where}: an aborted episode needs a non-empty reason")


def episode_group_name(index: int) -> str:
    return f"episode_{index:06d}"


@dataclass(frozen=True)
class RecordingSpec:
    """What a recording holds. `chunk_frames` = frames per chunk along time and per durable write;
    `queue_frames` = frames that may wait for the writer thread before `append` starts dropping."""

    fps: float
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    robot_type: str | None = None
    chunk_frames: int = 30
    queue_frames: int = 256

    def __post_init__(self) -> None:
        check_fps(self.fps, "RecordingSpec")
        for label, names in (("state_names", self.state_names), ("action_names", self.action_names)):
            if not names or len(set(names)) != len(names):
                raise DatasetError(f"RecordingSpec.{label} must be non-empty and unique, got {list(names)}")
        for cam, size in self.cameras.items():
            if not NAME_RE.match(cam):
                raise DatasetError(f"RecordingSpec.cameras: invalid camera name '{cam}'")
            if len(size) != 2 or min(size) <= 0:
                raise DatasetError(f"RecordingSpec.cameras['{cam}'] must be (H, W) > 0, got {size}")
        if self.chunk_frames < 1 or self.queue_frames < 1:
            raise DatasetError("RecordingSpec.chunk_frames and queue_frames must be >= 1")

    def root_attrs(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "fps": float(self.fps),
            "state_names": list(self.state_names),
            "action_names": list(self.action_names),
            "cameras": {name: [int(h), int(w)] for name, (h, w) in self.cameras.items()},
            "robot_type": self.robot_type,
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str) -> RecordingSpec:
        """The spec stored in a recording's root attrs (chunk/queue sizes take their defaults)."""
        if attrs.get("format") != FORMAT_NAME:
            raise DatasetError(
                f"{where}: root attribute format is {attrs.get('format')!r}, expected '{FORMAT_NAME}'"
            )
        if attrs.get("version") != FORMAT_VERSION:
            raise DatasetError(
                f"{where}: recording version {attrs.get('version')!r} is not supported (expected 1)"
            )
        try:
            cameras_raw = attrs.get("cameras") or {}
            cameras = {str(k): (int(v[0]), int(v[1])) for k, v in dict(cameras_raw).items()}
            return cls(
                fps=float(attrs["fps"]),
                state_names=tuple(str(n) for n in attrs["state_names"]),
                action_names=tuple(str(n) for n in attrs["action_names"]),
                cameras=cameras,
                robot_type=attrs.get("robot_type"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise DatasetError(
                f"{where}: malformed root attributes ({err!r}); attrs are {dict(attrs)}"
            ) from err


def existing_indices(path: Path) -> list[int]:
    """Indices of the episode folders under `path/episodes`, whether or not their metadata got written.

    Listed from the directory rather than through zarr so that a group cut off while being created (folder
    present, `zarr.json` not yet written) is still seen: the writer must not reuse its index and the reader
    must report it.
    """
    folder = path / EPISODES_GROUP
    if not folder.is_dir():
        return []
    out = []
    for entry in folder.iterdir():
        m = EPISODE_RE.match(entry.name)
        if m and entry.is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def is_recording(path: Path) -> bool:
    """True when `path` is a zarr group whose root attrs say it is a recording."""
    if not path.is_dir() or not (path / "zarr.json").is_file():
        return False
    try:
        return zarr.open_group(str(path), mode="r").attrs.get("format") == FORMAT_NAME
    except Exception:  # any unreadable store is simply not a recording
        return False
