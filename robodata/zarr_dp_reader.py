"""Read Diffusion-Policy ReplayBuffer zarr stores (directory or `.zarr.zip`) as `robodata.dataset.Dataset`.

Why: many bimanual demonstrations exist only in DP's format. Layout: `data/<key>` arrays sharing the time
axis, `meta/episode_ends` = cumulative exclusive episode ends. The format names nothing, so the reader maps
keys to roles through `DPKeyMap` (picked by name when not given), makes up joint names, and states every
choice in `DatasetInfo.roles` with the option that changes it: a wrong guess (joint state where the policy was
trained on end-effector poses, a mask taken for a camera) must be visible before it is used. Stores written by
zarr 2 (format 2) are read with zarr 3.

DP's real-robot stores (`*.zarr.zip` caches) code camera arrays with imagecodecs' JPEG 2000
(`imagecodecs_jpeg2k`, one frame per chunk); imagecodecs' numcodecs codecs are registered before any store is
opened, and a codec that is still unknown is reported with the array it belongs to. DP records low-dim arrays
as float64; `Episode` carries float32, so the reader says which arrays are rounded and `DPZarrDataset.array`
returns any array of an episode in its stored dtype.
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
    FileCheck,
    ImageArray,
    check_fps,
    generic_names,
)

# Where DP-style datasets keep the robot state, in the order they are tried. `robot_eef_pose` comes before
# `robot_joint` because DP's real-robot configs (real_pusht_image and the other real_* tasks) train on it, with
# end-effector pose actions; the joint reading is the alternative the roles line offers.
STATE_CANDIDATES: tuple[str, ...] = (
    "state",
    "robot_eef_pose",
    "robot_joint",
    "qpos",
    "agent_pos",
    "observation.state",
    "joint_pos",
    "robot0_joint_pos",
)
ACTION_CANDIDATES: tuple[str, ...] = ("action", "actions")
TIMESTAMP_KEY = "timestamp"
DEFAULT_FPS = 10.0
# A uint8 [T, H, W, 3] array is read as a camera only when its name says so (DP's real stores name them
# camera_0.., its sim stores img / *_image); masks and overlays share the shape and are left out, with a note.
CAMERA_NAME_PARTS: tuple[str, ...] = ("cam", "image", "img", "rgb", "color")
# Episodes whose own frame rate differs from the whole store's by more than this fraction are named.
FPS_OUTLIER_FRACTION = 0.1
# The command-line options that change each role (replay info/doctor/sim/... take them).
ROLE_FLAGS = {"state": "--state-key", "action": "--action-key", "images": "--image-keys",
              "timestamp": "--timestamp-key", "fps": "--fps"}

_codecs_registered = False


def register_image_codecs() -> bool:
    """Register imagecodecs' numcodecs codecs (imagecodecs_jpeg2k, _jpegxl, ...) once; False without imagecodecs.

    DP's real-robot caches are unreadable without them, and zarr only looks codecs up in numcodecs' registry.
    """
    global _codecs_registered
    if _codecs_registered:
        return True
    try:
        from imagecodecs import numcodecs as image_numcodecs
    except ImportError:
        return False
    image_numcodecs.register_codecs(verbose=False)
    _codecs_registered = True
    return True


def _codec_hint(err: Exception) -> str:
    text = str(err)
    if "imagecodecs_" in text:
        if not register_image_codecs():
            return f"{text}; the imagecodecs package provides it (pip install imagecodecs)"
        return f"{text}; the installed imagecodecs does not provide this codec"
    return text


def is_camera_name(key: str) -> bool:
    """Whether an array name says it holds camera frames (see CAMERA_NAME_PARTS)."""
    lowered = key.lower()
    return any(part in lowered for part in CAMERA_NAME_PARTS)


@dataclass(frozen=True)
class DPKeyMap:
    """Which `data/<key>` arrays play which role; None = auto-detect.

    action: first of ACTION_CANDIDATES. state: first of STATE_CANDIDATES. images: every uint8 [T, H, W, 3]
    array whose name says camera (CAMERA_NAME_PARTS); a float one, or any other name, only when listed here
    (float read as 0..255 values). timestamp: "timestamp" when present; otherwise frame_index / fps.
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
    register_image_codecs()
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


def _shape(arr: Any) -> str:
    return f"{arr.dtype} [T, {', '.join(str(int(d)) for d in arr.shape[1:])}]" if arr.ndim > 1 else f"{arr.dtype} [T]"


def _member_names(group: zarr.Group) -> list[str]:
    """Names under a group read from the store's listing, without parsing each member's metadata (which is
    what fails on an unknown codec)."""
    from zarr.core.sync import collect_aiterator

    names = collect_aiterator(group.store.list_dir(group.path))
    return [n for n in names if not n.startswith(".") and n not in {"zarr.json"}]


def _data_arrays(data: zarr.Group, where: str) -> dict[str, zarr.Array[Any]]:
    """Every array under data/, naming the one whose metadata cannot be read (an unknown codec, above all)."""
    try:
        return {k: v for k, v in data.arrays()}
    except Exception:  # zarr raises the codec registry's error, a JSON error, or its own; find the member
        pass
    out: dict[str, zarr.Array[Any]] = {}
    for key in sorted(_member_names(data)):
        try:
            node = data[key]
        except Exception as err:
            raise DatasetError(f"{where}/data/{key}: cannot read the array's metadata: {_codec_hint(err)}") from err
        if isinstance(node, zarr.Array):
            out[key] = node
    return out


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
        arrays = _data_arrays(data, where)
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
        roles: list[str] = []
        self.action_key = self._pick(keys.action, ACTION_CANDIDATES, arrays, "action", roles)
        self.state_key = self._pick(keys.state, STATE_CANDIDATES, arrays, "state", roles)
        self.timestamp_key = keys.timestamp or (TIMESTAMP_KEY if TIMESTAMP_KEY in arrays else None)
        if self.timestamp_key is not None and self.timestamp_key not in arrays:
            raise DatasetError(
                f"{where}/data: timestamp key '{self.timestamp_key}' not found; keys {sorted(arrays)}"
            )
        self.image_keys = self._pick_images(keys.images, arrays, notes, roles)
        role_keys = {self.action_key, self.state_key, self.timestamp_key, *self.image_keys}

        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if ends.size else np.zeros(0, np.int64)
        self._bounds: dict[int, tuple[int, int]] = {}
        for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
            if e == s:
                notes.append(f"episode {i} is empty in meta/episode_ends (skipped)")
                continue
            self._bounds[i] = (int(s), int(e))
        # The frame rate is the store's, estimated over every episode before a subset is chosen.
        fps = self._fps(arrays, notes, roles)
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
        notes.append(
            f"DP zarr stores no joint names; using state_0..state_{state_dim - 1} (data/{self.state_key}) and "
            f"action_0..action_{action_dim - 1} (data/{self.action_key})"
        )
        rounded = [k for k in (self.state_key, self.action_key) if arrays[k].dtype != np.float32]
        if rounded:
            listing = ", ".join(f"data/{k} ({arrays[k].dtype})" for k in rounded)
            notes.append(
                f"{listing} read as float32 states/actions (relative rounding <= 6e-8, e.g. 1e-7 rad at 2 rad); "
                "DPZarrDataset.array(key, episode) returns the stored dtype"
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
            roles=tuple(roles),
        )

    def close(self) -> None:
        """Release the zip file handle (directory stores hold none)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    # ---- key mapping ----------------------------------------------------------------------------------

    def _pick(self, given: str | None, candidates: Iterable[str], arrays: dict[str, Any], role: str,
              roles: list[str]) -> str:
        flag = ROLE_FLAGS[role]
        if given is not None:
            if given not in arrays:
                raise DatasetError(
                    f"{self.path}/data: {role} key '{given}' not found; keys are {sorted(arrays)}"
                )
            roles.append(f"{role:<9s} data/{given} {_shape(arrays[given])} (given)")
            return given
        present = [k for k in candidates if k in arrays]
        if not present:
            raise DatasetError(
                f"{self.path}/data: no {role} array; looked for {list(candidates)}, keys are {sorted(arrays)} "
                f"(pass {flag} KEY, or a DPKeyMap with {role}=...)"
            )
        others = f"; also present: {', '.join(present[1:])}" if len(present) > 1 else ""
        roles.append(f"{role:<9s} data/{present[0]} {_shape(arrays[present[0]])} (picked by name{others}; "
                     f"change with {flag} KEY)")
        return present[0]

    def _pick_images(
        self, given: tuple[str, ...] | None, arrays: dict[str, Any], notes: list[str], roles: list[str]
    ) -> tuple[str, ...]:
        def is_hwc3(arr: Any) -> bool:
            return bool(arr.ndim == 4 and arr.shape[-1] == 3)

        flag = ROLE_FLAGS["images"]
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
            roles.append(f"{'cameras':<9s} {', '.join(given) or 'none'} (given)")
            return tuple(given)
        uint8 = sorted(k for k, a in arrays.items() if is_hwc3(a) and a.dtype == np.uint8)
        found = tuple(k for k in uint8 if is_camera_name(k))
        unnamed = [k for k in uint8 if not is_camera_name(k)]
        floats = sorted(k for k, a in arrays.items() if is_hwc3(a) and np.issubdtype(a.dtype, np.floating))
        listing = ", ".join(f"{k} {_shape(arrays[k])}" for k in found) or "none"
        roles.append(f"{'cameras':<9s} {listing} (uint8 [T, H, W, 3] arrays named like cameras; change with "
                     f"{flag} A,B)")
        if unnamed:
            notes.append(
                f"uint8 [T, H, W, 3] arrays {unnamed} have no camera name ({'/'.join(CAMERA_NAME_PARTS)}) and are "
                f"not read as cameras; pass {flag} {','.join([*found, *unnamed])} if they are"
            )
        if floats:
            notes.append(
                f"float [T, H, W, 3] arrays {floats} not read as cameras; "
                f"pass {flag} to read them as 0..255 images"
            )
        return found

    def _dim(self, arr: Any, key: str) -> int:
        if arr.ndim == 1:
            return 1
        if arr.ndim != 2:
            raise DatasetError(f"{self.path}/data/{key}: expected [T, D], got shape {arr.shape}")
        return int(arr.shape[1])

    def _fps(self, arrays: dict[str, Any], notes: list[str], roles: list[str]) -> float:
        """The store's frame rate: given, else the median step of the timestamps inside every episode (an
        episode recorded at another rate is named, not allowed to decide), else DEFAULT_FPS."""
        where = str(self.path)
        flag = ROLE_FLAGS["fps"]
        if self.options.fps is not None:
            roles.append(f"{'fps':<9s} {self.options.fps:g} (given)")
            return check_fps(float(self.options.fps), where)
        if self.timestamp_key is not None and self._bounds:
            raw = np.asarray(arrays[self.timestamp_key][:], dtype=np.float64)
            stamps = raw.reshape(raw.shape[0], -1)[:, 0]
            steps: list[npt.NDArray[np.float64]] = []
            per_episode: dict[int, float] = {}
            for i, (s, e) in self._bounds.items():
                diffs = np.diff(stamps[s:e])
                diffs = diffs[np.isfinite(diffs) & (diffs > 0)]
                if diffs.size:
                    steps.append(diffs)
                    per_episode[i] = float(np.median(diffs))
            if steps:
                fps = 1.0 / float(np.median(np.concatenate(steps)))
                odd = {i: 1.0 / d for i, d in per_episode.items() if abs(1.0 / d - fps) > FPS_OUTLIER_FRACTION * fps}
                roles.append(f"{'fps':<9s} {fps:.3f} (median step of data/{self.timestamp_key} over "
                             f"{len(per_episode)} episodes; change with {flag} HZ)")
                if odd:
                    shown = ", ".join(f"{i} at {r:.2f} Hz" for i, r in list(odd.items())[:8])
                    more = f" and {len(odd) - 8} more" if len(odd) > 8 else ""
                    notes.append(f"episodes recorded at another rate than the store's {fps:.3f} Hz: {shown}{more}")
                return check_fps(fps, where)
        roles.append(f"{'fps':<9s} {DEFAULT_FPS:g} (not stored, assumed; change with {flag} HZ)")
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
        try:
            return np.asarray(_member(self._data, key, f"{self.path}/data")[s:e])
        except DatasetError:
            raise
        except Exception as err:  # a chunk that does not decode (codec error, truncated zip member)
            raise DatasetError(f"{self.path}/data/{key}: rows {s}..{e - 1} cannot be read: {_codec_hint(err)}") from err

    def verify_files(self, full: bool = False) -> list[FileCheck]:
        """Every data array: its first and last rows of the selected episodes decode (codec, truncated zip);
        `full`: every row."""
        checks: list[FileCheck] = []
        rows = sorted({r for s, e in self._bounds.values() for r in (s, e - 1)})
        first, last = (rows[0], rows[-1]) if rows else (0, 0)
        episodes = tuple(self.episode_indices())
        for key in sorted(self._data.array_keys()):
            arr = _member(self._data, key, f"{self.path}/data")
            codecs = ", ".join(type(c).__name__ for c in getattr(arr, "compressors", ())) or "uncompressed"
            detail = f"{arr.dtype} {list(arr.shape)}, {codecs}"
            try:
                spans = [(s, e) for s, e in self._bounds.values()] if full else [(first, first + 1), (last, last + 1)]
                for s, e in spans:
                    self._read(key, s, e)
            except DatasetError as err:
                checks.append(FileCheck(self.path / "data" / key, "array", detail, str(err), episodes))
                continue
            checks.append(FileCheck(self.path / "data" / key, "array", detail, None, episodes))
        return checks

    def array(self, key: str, index: int) -> npt.NDArray[Any]:
        """One episode's rows of `data/<key>` in the dtype the store holds (float64 stays float64)."""
        if index not in self._bounds:
            raise DatasetError(
                f"{self.path}: episode {index} not readable here; episodes are {self.episode_indices()}"
            )
        s, e = self._bounds[index]
        return self._read(key, s, e)

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
