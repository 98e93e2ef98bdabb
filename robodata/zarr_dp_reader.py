"""Read Diffusion-Policy ReplayBuffer zarr stores (directory or `.zarr.zip`) as `robodata.dataset.Dataset`.

Why: many bimanual demonstrations exist only in DP's format. Layout: `data/<key>` arrays sharing the time
axis, `meta/episode_ends` = cumulative exclusive episode ends. The format names nothing, so the reader maps
keys to roles through `DPKeyMap` (auto-detected when not given), makes up joint names, and says so in the
notes. Stores written by zarr 2 (format 2) are read with zarr 3.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.storage import ZipStore

from robodata.dataset import (
    CameraInfo,
    Dataset,
    DatasetError,
    DatasetInfo,
    Episode,
    EpisodeMeta,
    FeatureSpec,
    ImageArray,
    check_fps,
    generic_names,
)

# Where DP-style datasets keep the robot state, in the order they are tried.
STATE_CANDIDATES: tuple[str, ...] = (
    "state",
    "robot_joint",
    "qpos",
    "agent_pos",
    "observation.state",
    "joint_pos",
    "robot0_joint_pos",
    "robot_eef_pose",
)
ACTION_CANDIDATES: tuple[str, ...] = ("action", "actions")
TIMESTAMP_KEY = "timestamp"
DEFAULT_FPS = 10.0


@dataclass(frozen=True)
class DPKeyMap:
    """Which `data/<key>` arrays play which role; None = auto-detect.

    action: first of ACTION_CANDIDATES. state: first of STATE_CANDIDATES. images: every uint8 [T, H, W, 3]
    array (a float [T, H, W, 3] array is only used when listed here, read as 0..255 values).
    timestamp: "timestamp" when present; otherwise frame_index / fps.
    """

    action: str | None = None
    state: str | None = None
    images: tuple[str, ...] | None = None
    timestamp: str | None = None


@dataclass(frozen=True)
class DPZarrOptions:
    """fps: the control rate; None = estimated from a timestamp array, else DEFAULT_FPS (noted)."""

    keys: DPKeyMap = field(default_factory=DPKeyMap)
    fps: float | None = None
    episodes: tuple[int, ...] | None = None


def open_zarr_group(path: Path) -> tuple[zarr.Group, ZipStore | None]:
    """Open a zarr group read-only from a directory or a `.zip` file (the store is returned to be closed)."""
    if not path.exists():
        raise DatasetError(f"{path}: not found")
    store: ZipStore | None = None
    if path.is_file() and not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: a file, but not a zip file (a zarr store is a directory or a .zip)")
    try:
        if path.is_file():
            store = ZipStore(str(path), mode="r")
            group = zarr.open_group(store=store, mode="r")
        else:
            group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several unrelated types for "not a zarr group"
        if store is not None:
            store.close()
        raise DatasetError(f"{path}: cannot open as a zarr group: {err}") from err
    return group, store


def _member(group: zarr.Group, key: str, where: str) -> zarr.Array[Any]:
    if key not in group:
        raise DatasetError(f"{where}: no array '{key}'; members are {sorted(group.keys())}")
    node = group[key]
    if not isinstance(node, zarr.Array):
        raise DatasetError(f"{where}: '{key}' is a group, expected an array")
    return node


class DPZarrDataset(Dataset):
    """A Diffusion-Policy ReplayBuffer zarr store."""

    def __init__(self, path: str | Path, options: DPZarrOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or DPZarrOptions()
        root, self._store = open_zarr_group(self.path)
        where = str(self.path)
        for name in ("data", "meta"):
            if name not in root or not isinstance(root[name], zarr.Group):
                raise DatasetError(f"{where}: missing group '{name}' (a DP ReplayBuffer has data/ and meta/)")
        data = root["data"]
        meta = root["meta"]
        if not isinstance(data, zarr.Group) or not isinstance(meta, zarr.Group):
            raise DatasetError(f"{where}: 'data' and 'meta' must be groups")
        self._data = data
        ends_arr = _member(meta, "episode_ends", f"{where}/meta")
        ends = np.asarray(ends_arr[:])
        if ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
            raise DatasetError(
                f"{where}/meta/episode_ends must be a 1-D integer array, got {ends.dtype} {ends.shape}"
            )
        if ends.size and (ends[0] < 0 or np.any(np.diff(ends) < 0)):
            raise DatasetError(f"{where}/meta/episode_ends must be non-negative and non-decreasing")
        notes: list[str] = []
        arrays = {k: v for k, v in data.arrays()}
        n_steps = int(ends[-1]) if ends.size else 0
        for key, arr in arrays.items():
            if arr.ndim == 0 or arr.shape[0] < n_steps:
                raise DatasetError(
                    f"{where}/data/{key} has shape {arr.shape}; every data array needs >= {n_steps} rows "
                    f"(meta/episode_ends[-1])"
                )
            if arr.shape[0] > n_steps:
                notes.append(
                    f"data/{key} has {arr.shape[0] - n_steps} rows past the last episode end (ignored)"
                )

        keys = self.options.keys
        self.action_key = self._pick(keys.action, ACTION_CANDIDATES, arrays, "action")
        self.state_key = self._pick(keys.state, STATE_CANDIDATES, arrays, "state")
        self.timestamp_key = keys.timestamp or (TIMESTAMP_KEY if TIMESTAMP_KEY in arrays else None)
        if self.timestamp_key is not None and self.timestamp_key not in arrays:
            raise DatasetError(
                f"{where}/data: timestamp key '{self.timestamp_key}' not found; keys {sorted(arrays)}"
            )
        self.image_keys = self._pick_images(keys.images, arrays, notes)
        role_keys = {self.action_key, self.state_key, self.timestamp_key, *self.image_keys}

        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if ends.size else np.zeros(0, np.int64)
        self._bounds: dict[int, tuple[int, int]] = {}
        for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
            if e == s:
                notes.append(f"episode {i} is empty in meta/episode_ends (skipped)")
                continue
            self._bounds[i] = (int(s), int(e))
        if self.options.episodes is not None:
            wanted = sorted(set(int(e) for e in self.options.episodes))
            missing = [e for e in wanted if e not in self._bounds]
            if missing:
                raise DatasetError(
                    f"{where}: episodes {missing} not in the store (it has {len(ends)} episodes)"
                )
            notes.append(f"reading {len(wanted)} of {len(self._bounds)} episodes")
            self._bounds = {e: self._bounds[e] for e in wanted}

        action_dim = self._dim(arrays[self.action_key], self.action_key)
        state_dim = self._dim(arrays[self.state_key], self.state_key)
        fps = self._fps(arrays, notes)
        notes.append(
            f"DP zarr stores no joint names; using state_0..state_{state_dim - 1} (data/{self.state_key}) and "
            f"action_0..action_{action_dim - 1} (data/{self.action_key})"
        )
        ignored = sorted(set(arrays) - role_keys)
        if ignored:
            notes.append(f"data arrays not used: {ignored}")
        cameras = tuple(
            CameraInfo(
                name=k, height=int(arrays[k].shape[1]), width=int(arrays[k].shape[2]), source_key=f"data/{k}"
            )
            for k in self.image_keys
        )
        features = {
            f"data/{k}": FeatureSpec(
                name=f"data/{k}", dtype=str(a.dtype), shape=tuple(int(s) for s in a.shape[1:])
            )
            for k, a in sorted(arrays.items())
        }
        self.info = DatasetInfo(
            format="dp-zarr",
            path=self.path,
            fps=fps,
            num_episodes=len(self._bounds),
            num_frames=sum(e - s for s, e in self._bounds.values()),
            state_names=generic_names("state", state_dim),
            action_names=generic_names("action", action_dim),
            cameras=cameras,
            tasks=(),
            robot_type=None,
            features=features,
            stats=None,
            notes=tuple(notes + ["DP zarr stores no statistics and no task text"]),
        )

    def close(self) -> None:
        """Release the zip file handle (directory stores hold none)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    # ---- key mapping ----------------------------------------------------------------------------------

    def _pick(self, given: str | None, candidates: Iterable[str], arrays: dict[str, Any], role: str) -> str:
        if given is not None:
            if given not in arrays:
                raise DatasetError(
                    f"{self.path}/data: {role} key '{given}' not found; keys are {sorted(arrays)}"
                )
            return given
        for key in candidates:
            if key in arrays:
                return key
        raise DatasetError(
            f"{self.path}/data: no {role} array; looked for {list(candidates)}, keys are {sorted(arrays)} "
            f"(pass a DPKeyMap with {role}=...)"
        )

    def _pick_images(
        self, given: tuple[str, ...] | None, arrays: dict[str, Any], notes: list[str]
    ) -> tuple[str, ...]:
        def is_hwc3(arr: Any) -> bool:
            return bool(arr.ndim == 4 and arr.shape[-1] == 3)

        if given is not None:
            for key in given:
                if key not in arrays:
                    raise DatasetError(
                        f"{self.path}/data: image key '{key}' not found; keys are {sorted(arrays)}"
                    )
                arr = arrays[key]
                if not is_hwc3(arr):
                    raise DatasetError(
                        f"{self.path}/data/{key}: images must be [T, H, W, 3], got {arr.shape}"
                    )
                if arr.dtype != np.uint8:
                    if not np.issubdtype(arr.dtype, np.floating):
                        raise DatasetError(
                            f"{self.path}/data/{key}: images must be uint8 or float, got {arr.dtype}"
                        )
                    notes.append(f"data/{key} is {arr.dtype}; read as 0..255 values, rounded to uint8")
            return tuple(given)
        found = tuple(sorted(k for k, a in arrays.items() if is_hwc3(a) and a.dtype == np.uint8))
        floats = sorted(k for k, a in arrays.items() if is_hwc3(a) and np.issubdtype(a.dtype, np.floating))
        if floats:
            notes.append(
                f"float [T, H, W, 3] arrays {floats} not read as cameras; "
                "list them in DPKeyMap.images to read them as 0..255 images"
            )
        return found

    def _dim(self, arr: Any, key: str) -> int:
        if arr.ndim == 1:
            return 1
        if arr.ndim != 2:
            raise DatasetError(f"{self.path}/data/{key}: expected [T, D], got shape {arr.shape}")
        return int(arr.shape[1])

    def _fps(self, arrays: dict[str, Any], notes: list[str]) -> float:
        where = str(self.path)
        if self.options.fps is not None:
            return check_fps(float(self.options.fps), where)
        if self.timestamp_key is not None and self._bounds:
            s, e = next(iter(self._bounds.values()))
            ts = np.asarray(arrays[self.timestamp_key][s:e], dtype=np.float64).reshape(-1)
            if ts.size > 1 and np.all(np.diff(ts) > 0):
                fps = 1.0 / float(np.median(np.diff(ts)))
                notes.append(f"fps {fps:.3f} estimated from data/{self.timestamp_key} (pass fps= to set it)")
                return check_fps(fps, where)
        notes.append(f"fps not stored; assuming {DEFAULT_FPS:g} (pass fps= to set it)")
        return DEFAULT_FPS

    # ---- episodes -------------------------------------------------------------------------------------

    def episode_indices(self) -> list[int]:
        return sorted(self._bounds)

    def episode_meta(self, index: int) -> EpisodeMeta:
        if index not in self._bounds:
            raise DatasetError(
                f"{self.path}: episode {index} not readable here; episodes are {self.episode_indices()}"
            )
        s, e = self._bounds[index]
        return EpisodeMeta(index=index, length=e - s, task="")

    def _read(self, key: str, s: int, e: int) -> npt.NDArray[Any]:
        return np.asarray(_member(self._data, key, f"{self.path}/data")[s:e])

    def episode(self, index: int) -> Episode:
        if index not in self._bounds:
            raise DatasetError(
                f"{self.path}: episode {index} not readable here; episodes are {self.episode_indices()}"
            )
        s, e = self._bounds[index]
        n = e - s
        states = self._matrix(self.state_key, s, e)
        actions = self._matrix(self.action_key, s, e)
        if self.timestamp_key is not None:
            raw = self._read(self.timestamp_key, s, e).astype(np.float64).reshape(n, -1)
            if raw.shape[1] != 1:
                raise DatasetError(
                    f"{self.path}/data/{self.timestamp_key}: expected [T], got [T, {raw.shape[1]}]"
                )
            ts = raw[:, 0]
            if not np.all(np.isfinite(ts)) or (n > 1 and not np.all(np.diff(ts) > 0)):
                raise DatasetError(
                    f"{self.path}/data/{self.timestamp_key}: episode {index} timestamps must be finite and increasing"
                )
            ts = ts - ts[0]
        else:
            ts = np.arange(n, dtype=np.float64) / self.info.fps
        return Episode(
            index=index,
            task="",
            timestamps=ts,
            states=states,
            actions=actions,
            camera_names=self.info.camera_names,
            image_loader=lambda cam: self._images(cam, s, e),
        )

    def _matrix(self, key: str, s: int, e: int) -> npt.NDArray[np.float32]:
        arr = self._read(key, s, e)
        if arr.ndim == 1:
            arr = arr[:, None]
        if not np.issubdtype(arr.dtype, np.number):
            raise DatasetError(f"{self.path}/data/{key}: expected numbers, got {arr.dtype}")
        out = arr.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise DatasetError(f"{self.path}/data/{key}: rows {s}..{e - 1} hold non-finite values")
        return out

    def _images(self, camera: str, s: int, e: int) -> ImageArray:
        arr = self._read(camera, s, e)
        if arr.dtype == np.uint8:
            return np.ascontiguousarray(arr, dtype=np.uint8)
        converted: ImageArray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return converted
