"""Read our recordings (see `robodata.recording_layout`) as `robodata.dataset.Dataset`; write them with
`RecordingWriter` (re-exported here with its spec, so `robodata.recording` is the one import for recordings).

The reader lists complete episodes. Incomplete ones (the recorder stopped or was killed before
`end_episode`) are reported in the notes and, with `include_incomplete=True`, exposed cut to the frames
known to be fully written. Timestamps are stored as given (seconds on any clock, strictly increasing); the
reader presents them relative to the episode's first frame, as `robodata.dataset.Episode` requires.

Episodes that ended early (`outcome: aborted`) are listed like the others (their frames are real data) and named
with their reason in the notes; `episode_outcome(index)` and `aborted` say how each ended.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from robodata.dataset import (
    CameraInfo,
    Dataset,
    DatasetError,
    DatasetInfo,
    Episode,
    EpisodeMeta,
    FeatureSpec,
    FileCheck,
)
from robodata.recording_layout import (
    EPISODE_ABORTED,
    EPISODE_COMPLETED,
    EPISODES_GROUP,
    FORMAT_NAME,
    FORMAT_VERSION,
    RecordingSpec,
    episode_group_name,
    existing_indices,
    is_recording,
)
from robodata.recording_writer import EpisodeSummary, RecordingWriter

__all__ = [
    "EPISODE_ABORTED",
    "EPISODE_COMPLETED",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "EpisodeOutcome",
    "EpisodeSummary",
    "RecordingDataset",
    "RecordingOptions",
    "RecordingSpec",
    "RecordingWriter",
    "is_recording",
]


def _arrays(group: zarr.Group) -> list[tuple[str, zarr.Array[Any]]]:
    """The arrays of a group, sorted; temp files a killed writer left behind are not reported as members."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        return sorted(group.arrays(), key=lambda item: item[0])


@dataclass(frozen=True)
class RecordingOptions:
    """include_incomplete: also expose incomplete episodes, cut to the frames known to be fully written."""

    include_incomplete: bool = False
    episodes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EpisodeOutcome:
    """How a recorded episode ended: EPISODE_COMPLETED, or EPISODE_ABORTED with the reason it was stopped."""

    outcome: str = EPISODE_COMPLETED
    reason: str = ""

    @property
    def aborted(self) -> bool:
        return self.outcome == EPISODE_ABORTED

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> EpisodeOutcome:
        """Read from episode attrs; an episode written before outcomes existed is completed, and an outcome this
        reader does not know is read as aborted (never as a clean run)."""
        outcome = attrs.get("outcome", EPISODE_COMPLETED)
        reason = str(attrs.get("reason", "") or "")
        if outcome == EPISODE_COMPLETED:
            return cls()
        if outcome == EPISODE_ABORTED:
            return cls(EPISODE_ABORTED, reason)
        return cls(EPISODE_ABORTED, f"unknown outcome {outcome!r}" + (f": {reason}" if reason else ""))


@dataclass(frozen=True)
class _EpisodeEntry:
    index: int
    task: str
    length: int
    complete: bool
    outcome: EpisodeOutcome = field(default_factory=EpisodeOutcome)


class RecordingDataset(Dataset):
    """A recording written by RecordingWriter."""

    def __init__(self, path: str | Path, options: RecordingOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or RecordingOptions()
        where = str(self.path)
        if not self.path.is_dir():
            raise DatasetError(f"{where}: not a directory")
        try:
            self._root = zarr.open_group(where, mode="r")
        except Exception as err:
            raise DatasetError(f"{where}: cannot open as a zarr group: {err}") from err
        self.spec = RecordingSpec.from_attrs(dict(self._root.attrs), where)
        notes: list[str] = []
        # Every aborted episode found, listed or not (an aborted episode with no frames is not listed): index ->
        # reason.
        self.aborted: dict[int, str] = {}
        entries = self._scan(notes)
        if self.options.episodes is not None:
            wanted = sorted(set(int(e) for e in self.options.episodes))
            missing = [e for e in wanted if e not in entries]
            if missing:
                raise DatasetError(
                    f"{where}: episodes {missing} are not readable; readable: {sorted(entries)}"
                )
            entries = {e: entries[e] for e in wanted}
        self._entries = entries
        tasks: list[str] = []
        for entry in entries.values():
            if entry.task not in tasks:
                tasks.append(entry.task)
        spec = self.spec
        features: dict[str, FeatureSpec] = {
            "timestamp": FeatureSpec("timestamp", "float64", ()),
            "state": FeatureSpec("state", "float32", (len(spec.state_names),), spec.state_names),
            "action": FeatureSpec("action", "float32", (len(spec.action_names),), spec.action_names),
        }
        for cam, (h, w) in spec.cameras.items():
            features[f"images/{cam}"] = FeatureSpec(
                f"images/{cam}", "uint8", (h, w, 3), ("height", "width", "channels")
            )
        features.update(self._extras_features(entries))
        notes.append("recordings store no statistics")
        self.info = DatasetInfo(
            format="recording-zarr",
            path=self.path,
            fps=spec.fps,
            num_episodes=len(entries),
            num_frames=sum(e.length for e in entries.values()),
            state_names=spec.state_names,
            action_names=spec.action_names,
            cameras=tuple(CameraInfo(c, h, w, f"images/{c}") for c, (h, w) in spec.cameras.items()),
            tasks=tuple(tasks),
            robot_type=spec.robot_type,
            features=features,
            stats=None,
            notes=tuple(notes),
        )

    def _episode_group(self, index: int) -> zarr.Group:
        node = self._root[f"{EPISODES_GROUP}/{episode_group_name(index)}"]
        if not isinstance(node, zarr.Group):
            raise DatasetError(f"{self.path}: episodes/{episode_group_name(index)} is not a group")
        return node

    def _array_lengths(self, group: zarr.Group) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in ("timestamp", "state", "action", *(f"images/{c}" for c in self.spec.cameras)):
            node = group.get(key)
            out[key] = node.shape[0] if isinstance(node, zarr.Array) else -1
        extras = group.get("extras")
        if isinstance(extras, zarr.Group):
            for name, arr in _arrays(extras):
                out[f"extras/{name}"] = arr.shape[0]
        return out

    def _scan(self, notes: list[str]) -> dict[int, _EpisodeEntry]:
        entries: dict[int, _EpisodeEntry] = {}
        incomplete: list[str] = []
        for index in existing_indices(self.path):
            name = f"{EPISODES_GROUP}/{episode_group_name(index)}"
            if not (self.path / name / "zarr.json").is_file():
                notes.append(f"{name} has no metadata (cut off while being created); skipped")
                continue
            try:
                group = self._episode_group(index)
                attrs = dict(group.attrs)
                lengths = self._array_lengths(group)
            except Exception as err:  # a group cut off mid-creation by a crash
                notes.append(f"{name} is unreadable and skipped: {err!r}")
                continue
            complete = attrs.get("complete") is True
            length = attrs.get("length")
            if not isinstance(length, int) or length < 0:
                notes.append(f"{name} has no valid 'length' attribute ({length!r}); skipped")
                continue
            task = str(attrs.get("task", ""))
            outcome = EpisodeOutcome.from_attrs(attrs)
            if outcome.aborted:
                self.aborted[index] = outcome.reason
            if complete:
                bad = {k: v for k, v in lengths.items() if v != length}
                if bad:
                    notes.append(
                        f"{name} is marked complete with length {length} but arrays have {bad}; skipped"
                    )
                    continue
                if length == 0:
                    notes.append(f"{name} is complete but empty; skipped")
                    continue
                entries[index] = _EpisodeEntry(index, task, length, True, outcome)
                continue
            usable = min([length, *(v for v in lengths.values())]) if lengths else 0
            usable = max(usable, 0)
            dropped = attrs.get("dropped_frames", 0)
            if self.options.include_incomplete and usable > 0:
                entries[index] = _EpisodeEntry(index, task, usable, False, outcome)
                incomplete.append(f"episode {index} ({usable} written frames recovered)")
            else:
                how = (
                    "nothing to recover"
                    if self.options.include_incomplete
                    else "not listed; pass include_incomplete=True"
                )
                incomplete.append(
                    f"episode {index} ({usable} frames fully written, {dropped} dropped; {how})"
                )
        if incomplete:
            notes.append(
                "incomplete episodes (recording stopped before end_episode): " + "; ".join(incomplete)
            )
        if self.aborted:
            notes.append(
                "aborted episodes (stopped early): "
                + "; ".join(f"episode {i}: {reason}" for i, reason in sorted(self.aborted.items()))
            )
        return entries

    def _extras_features(self, entries: Mapping[int, _EpisodeEntry]) -> dict[str, FeatureSpec]:
        out: dict[str, FeatureSpec] = {}
        for index in entries:
            extras = self._episode_group(index).get("extras")
            if isinstance(extras, zarr.Group):
                for name, arr in _arrays(extras):
                    key = f"extras/{name}"
                    out.setdefault(
                        key, FeatureSpec(key, str(arr.dtype), tuple(int(s) for s in arr.shape[1:]))
                    )
        return out

    def episode_indices(self) -> list[int]:
        return sorted(self._entries)

    def _entry(self, index: int) -> _EpisodeEntry:
        entry = self._entries.get(int(index))
        if entry is None:
            raise DatasetError(
                f"{self.path}: episode {index} is not readable here; episodes are {self.episode_indices()}"
            )
        return entry

    def episode_meta(self, index: int) -> EpisodeMeta:
        entry = self._entry(index)
        return EpisodeMeta(index=entry.index, length=entry.length, task=entry.task)

    def episode_outcome(self, index: int) -> EpisodeOutcome:
        """How a listed episode ended (completed, or aborted with the reason)."""
        return self._entry(index).outcome

    def verify_files(self, full: bool = False) -> list[FileCheck]:
        """Each selected episode's arrays (timestamp, state, action, camera frames): their first and last
        frames decode (`full`: every frame)."""
        checks: list[FileCheck] = []
        for index in self.episode_indices():
            entry = self._entry(index)
            group = self._episode_group(entry.index)
            keys = ["timestamp", "state", "action", *(f"images/{c}" for c in self.info.camera_names)]
            for key in keys:
                node = group.get(key)
                path = self.path / group.path / key
                if not isinstance(node, zarr.Array):
                    checks.append(FileCheck(path, "array", "-", "missing", (index,)))
                    continue
                detail = f"{node.dtype} {list(node.shape)}"
                rows = [slice(0, entry.length)] if full else [slice(0, 1), slice(entry.length - 1, entry.length)]
                try:
                    for row in rows:
                        np.asarray(node[row])
                except Exception as err:  # a chunk that does not decode: codec error, truncated file
                    checks.append(FileCheck(path, "array", detail, f"cannot be read: {err}", (index,)))
                    continue
                checks.append(FileCheck(path, "array", detail, None, (index,)))
        return checks

    def _read(self, group: zarr.Group, key: str, length: int) -> npt.NDArray[Any]:
        node = group.get(key)
        if not isinstance(node, zarr.Array):
            raise DatasetError(f"{self.path}/{group.path}: missing array '{key}'")
        return np.asarray(node[:length])

    def episode(self, index: int) -> Episode:
        entry = self._entry(index)
        group = self._episode_group(entry.index)
        n = entry.length
        ts = self._read(group, "timestamp", n).astype(np.float64)
        if not np.all(np.isfinite(ts)) or (n > 1 and not np.all(np.diff(ts) > 0)):
            raise DatasetError(f"{self.path}/{group.path}/timestamp: must be finite and strictly increasing")
        return Episode(
            index=entry.index,
            task=entry.task,
            timestamps=ts - ts[0],
            states=self._read(group, "state", n).astype(np.float32),
            actions=self._read(group, "action", n).astype(np.float32),
            camera_names=self.info.camera_names,
            image_loader=lambda cam: np.ascontiguousarray(
                self._read(group, f"images/{cam}", n), dtype=np.uint8
            ),
        )

    def extras(self, index: int) -> dict[str, npt.NDArray[Any]]:
        """The per-frame extras of an episode (empty if it has none)."""
        entry = self._entry(index)
        extras = self._episode_group(entry.index).get("extras")
        if not isinstance(extras, zarr.Group):
            return {}
        return {name: np.asarray(arr[: entry.length]) for name, arr in _arrays(extras)}

    def raw_timestamps(self, index: int) -> npt.NDArray[np.float64]:
        """Timestamps exactly as appended (the clock the recorder used), not shifted to start at 0."""
        entry = self._entry(index)
        return self._read(self._episode_group(entry.index), "timestamp", entry.length).astype(np.float64)

    def episode_attrs(self, index: int) -> dict[str, Any]:
        """The stored episode attributes (task, complete, length, dropped_frames, started/ended_unix, outcome,
        reason)."""
        return dict(self._episode_group(self._entry(index).index).attrs)
