"""One Episode/Dataset API over every dataset format the stack reads.

Every tool (dataset policy, replay, oracle, stats, doctor, calibration checks) reads demonstrations through
these types, so a format difference (LeRobot v2.1 vs v3.0, Diffusion-Policy zarr, our recordings) is handled in
exactly one reader and never leaks into the tools.

Conventions, asserted at the boundary (`Episode.__post_init__`):
- `states` is float32 [T, state_dim], `actions` float32 [T, action_dim], `timestamps` float64 [T] in seconds
  from the episode start.
- Images are RGB uint8 [H, W, 3] (never BGR); `Episode.images(cam)` returns [T, H, W, 3].
- Joint names come from the dataset when it stores them; otherwise generic names are generated and the reader
  adds a note saying so (`DatasetInfo.notes`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]


class DatasetError(ValueError):
    """A dataset is missing a file or field, or holds values of the wrong shape/type. The message names it."""


@dataclass(frozen=True)
class FeatureSpec:
    """One stored feature as the dataset declares it (LeRobot `info.json` style)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CameraInfo:
    """A camera stream: its short name (e.g. "top"), frame size, and the key it is stored under."""

    name: str
    height: int
    width: int
    source_key: str


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds, independent of its on-disk format."""

    format: str  # "lerobot-v3.0" | "lerobot-v2.1" | "dp-zarr" | "recording-zarr"
    path: Path
    fps: float
    num_episodes: int
    num_frames: int
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[CameraInfo, ...]
    tasks: tuple[str, ...]
    robot_type: str | None = None
    features: Mapping[str, FeatureSpec] = field(default_factory=dict)
    # Stored statistics as {feature: {stat: array}} (e.g. {"action": {"mean": ..., "q01": ...}}), or None.
    stats: Mapping[str, Mapping[str, npt.NDArray[np.float64]]] | None = None
    # Human-readable remarks a reader wants the user to see (generated names, skipped episodes, ...).
    notes: tuple[str, ...] = ()
    # Which stored array plays which role when the format does not say (DP zarr), one line per role with the
    # option that changes it, e.g. "state     data/robot_eef_pose float64 [T, 6] (picked by name; ...)".
    roles: tuple[str, ...] = ()

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def camera(self, name: str) -> CameraInfo:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise DatasetError(f"camera '{name}' not in dataset; cameras are {list(self.camera_names)}")


@dataclass(frozen=True)
class Frame:
    """Everything recorded at one control step."""

    episode_index: int
    frame_index: int
    timestamp: float
    state: FloatArray
    action: FloatArray
    images: Mapping[str, ImageArray]
    task: str


ImageLoader = Callable[[str], ImageArray]


@dataclass
class Episode:
    """One demonstration. Numeric arrays are loaded eagerly; images are decoded on first request per camera."""

    index: int
    task: str
    timestamps: npt.NDArray[np.float64]
    states: FloatArray
    actions: FloatArray
    camera_names: tuple[str, ...]
    image_loader: ImageLoader | None = None
    _image_cache: dict[str, ImageArray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        if self.timestamps.ndim != 1:
            raise DatasetError(f"episode {self.index}: timestamps must be [T], got shape {self.timestamps.shape}")
        for label, arr in (("states", self.states), ("actions", self.actions)):
            if arr.ndim != 2 or arr.shape[0] != n:
                raise DatasetError(f"episode {self.index}: {label} must be [T={n}, D], got shape {arr.shape}")
            if arr.dtype != np.float32:
                raise DatasetError(f"episode {self.index}: {label} must be float32, got {arr.dtype}")
        if self.timestamps.dtype != np.float64:
            raise DatasetError(f"episode {self.index}: timestamps must be float64, got {self.timestamps.dtype}")

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def length(self) -> int:
        return len(self.timestamps)

    def images(self, camera: str) -> ImageArray:
        """All frames of one camera as RGB uint8 [T, H, W, 3], decoded once and cached."""
        if camera not in self.camera_names:
            raise DatasetError(f"episode {self.index}: no camera '{camera}'; cameras are {list(self.camera_names)}")
        if camera not in self._image_cache:
            if self.image_loader is None:
                raise DatasetError(f"episode {self.index}: images were not loaded for this episode")
            frames = self.image_loader(camera)
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise DatasetError(
                    f"episode {self.index}: camera '{camera}' must decode to uint8 [T, H, W, 3], "
                    f"got {frames.dtype} {frames.shape}"
                )
            if frames.shape[0] != len(self):
                raise DatasetError(
                    f"episode {self.index}: camera '{camera}' decoded {frames.shape[0]} frames, "
                    f"episode has {len(self)}"
                )
            self._image_cache[camera] = frames
        return self._image_cache[camera]

    def frame(self, i: int, with_images: bool = True) -> Frame:
        if not 0 <= i < len(self):
            raise IndexError(f"episode {self.index}: frame {i} outside [0, {len(self)})")
        images = {cam: self.images(cam)[i] for cam in self.camera_names} if with_images else {}
        return Frame(
            episode_index=self.index,
            frame_index=i,
            timestamp=float(self.timestamps[i]),
            state=self.states[i],
            action=self.actions[i],
            images=images,
            task=self.task,
        )

    def action_chunk(self, start: int, horizon: int) -> tuple[FloatArray, int]:
        """Actions [start, start + horizon), padded by repeating the last action.

        Returns the [horizon, action_dim] chunk and how many of its rows are real (not padding), so a caller
        that pads can say so instead of hiding it.
        """
        if not 0 <= start < len(self):
            raise IndexError(f"episode {self.index}: step {start} outside [0, {len(self)})")
        real = self.actions[start : start + horizon]
        valid = len(real)
        if valid == horizon:
            return real.copy(), valid
        pad = np.repeat(self.actions[-1:], horizon - valid, axis=0)
        return np.concatenate([real, pad], axis=0), valid


@dataclass(frozen=True)
class FileCheck:
    """One stored file (or array) of a dataset, looked at without reading it all: what it holds, and what is
    wrong with it (None = readable). `episodes`: the episode indices whose data lie in it."""

    path: Path
    kind: str  # "data", "video <camera>", "array"
    detail: str
    problem: str | None = None
    episodes: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class EpisodeMeta:
    """What a listing needs about an episode, readable without loading its arrays."""

    index: int
    length: int
    task: str


class Dataset(ABC):
    """A readable dataset: metadata plus episodes by index."""

    info: DatasetInfo

    @abstractmethod
    def episode_indices(self) -> list[int]:
        """Indices of the readable episodes, ascending (not necessarily contiguous)."""

    @abstractmethod
    def episode(self, index: int) -> Episode:
        """Load one episode; raises DatasetError naming the index if it does not exist."""

    def episode_meta(self, index: int) -> EpisodeMeta:
        """Index, length and task of one episode. Readers whose metadata holds these override this so a
        listing does not load every episode; the default loads it."""
        ep = self.episode(index)
        return EpisodeMeta(index=ep.index, length=len(ep), task=ep.task)

    def verify_files(self, full: bool = False) -> list[FileCheck]:
        """Check that every file the dataset's index names can be read (footers, containers, frame counts),
        quickly: a reader opens data files lazily, so a truncated or missing one would otherwise surface only
        when its episode is read. `full`: read every data page and decode every video frame as well (damage in
        the middle of a file; as slow as reading the dataset). Formats that store everything in what the
        constructor already read return []."""
        return []

    def rename_joints(self, state_names: tuple[str, ...], action_names: tuple[str, ...], note: str) -> None:
        """Give the state and action dimensions other names (same count, same order: a rename, never a
        reorder), e.g. a dataset's `left_joint_0` as the robot's `left_joint1`. Every tool then sees the new
        names; the note (where the names came from) is kept with the dataset's notes. Feature specs that carried
        the old names carry the new ones."""
        info = self.info
        for label, old, new in (("state", info.state_names, state_names), ("action", info.action_names, action_names)):
            if len(old) != len(new):
                raise DatasetError(f"{info.path}: renaming {label} names needs {len(old)} names, got {len(new)}")
        renames = {info.state_names: state_names, info.action_names: action_names}
        features = {key: replace(spec, names=renames.get(spec.names, spec.names)) if spec.names else spec
                    for key, spec in info.features.items()}
        self.info = replace(info, state_names=tuple(state_names), action_names=tuple(action_names),
                            features=features, notes=(*info.notes, note))

    def __len__(self) -> int:
        return len(self.episode_indices())

    def __iter__(self) -> Iterator[Episode]:
        for i in self.episode_indices():
            yield self.episode(i)


def generic_names(prefix: str, dim: int) -> tuple[str, ...]:
    """Names for dimensions a format does not name (e.g. DP zarr): prefix_0 ... prefix_{dim-1}."""
    return tuple(f"{prefix}_{i}" for i in range(dim))


def check_fps(fps: float, where: str) -> float:
    if not (math.isfinite(fps) and fps > 0):
        raise DatasetError(f"{where}: fps must be a positive finite number, got {fps}")
    return float(fps)
