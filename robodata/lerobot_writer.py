"""Write LeRobot datasets (v3.0 or v2.1) from whole episodes.

Why: the sample dataset, the test fixtures and exports of our own recordings must be real LeRobot datasets
that LeRobot itself (and our reader) loads. The writer produces the files LeRobot writes: `meta/info.json`,
tasks, episode metadata, stats, parquet frames with LeRobot's column types (float32 fixed-size lists for
vectors, float32 `timestamp`, int64 `frame_index`/`episode_index`/`index`/`task_index`), and mp4 video
(AV1 via libsvtav1 by default, like LeRobot >= 0.5) or PNG `{bytes, path}` image columns.

v3.0 concatenates episodes into one parquet file and one mp4 per camera (each episode is encoded on its own
and remuxed onto the end of the camera's file, rolling over to the next file at `data_files_size_in_mb` /
`video_files_size_in_mb`) and records each episode's rows and [from, to) seconds; v2.1 writes one parquet
and one mp4 per episode. `info.json` is written last, so an interrupted write never
looks like a finished dataset.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from robodata.dataset import DatasetError, ImageArray
from robodata.lerobot_meta import (
    ACTION_KEY,
    BOOKKEEPING_FEATURES,
    CAMERA_PREFIX,
    INFO_PATH,
    STATE_KEY,
    STATS_PATH,
    V2_DATA_PATH,
    V2_EPISODES_PATH,
    V2_TASKS_PATH,
    V2_VIDEO_PATH,
    V3_DATA_PATH,
    V3_EPISODES_PATH,
    V3_TASKS_PATH,
    V3_VIDEO_PATH,
    V21,
    V21_EPISODES_STATS_PATH,
    V30,
    pandas_index_metadata,
    write_json,
    write_jsonl,
)
from robodata.stats import (
    FeatureStats,
    channel_histograms,
    compute_feature_stats,
    image_stats_from_histograms,
    stats_to_json,
)
from robodata.video import VideoConcatenator, VideoEncoding, encode_video, probe_video_info

CAMERA_STORAGES = ("video", "image")


@dataclass(frozen=True)
class CameraFeature:
    """One camera feature of the dataset to write (a LeRobot video or image column `observation.images.<name>`):
    short name and frame size. Not a policy's camera input (that is `policy_norm.spec.CameraSpec`)."""

    name: str
    height: int
    width: int

    @property
    def key(self) -> str:
        return f"{CAMERA_PREFIX}{self.name}"


@dataclass(frozen=True)
class LeRobotWriterConfig:
    """What to write. `camera_storage` "video" = mp4 per camera, "image" = PNG bytes in the parquet."""

    fps: int
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[CameraFeature, ...] = ()
    version: str = V30
    robot_type: str | None = None
    camera_storage: str = "video"
    video: VideoEncoding = field(default_factory=VideoEncoding)
    chunks_size: int = 1000
    data_files_size_in_mb: float = 100
    video_files_size_in_mb: float = 200
    # Replace an existing dataset at the target (only a LeRobot dataset or an empty folder is replaced).
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.version not in (V30, V21):
            raise DatasetError(f"writer version must be '{V30}' or '{V21}', got '{self.version}'")
        if self.camera_storage not in CAMERA_STORAGES:
            raise DatasetError(
                f"camera_storage must be one of {CAMERA_STORAGES}, got '{self.camera_storage}'"
            )
        if not (isinstance(self.fps, int) and self.fps > 0):
            raise DatasetError(f"fps must be a positive integer (LeRobot stores an int), got {self.fps!r}")
        for label, names in (("state_names", self.state_names), ("action_names", self.action_names)):
            if not names or len(set(names)) != len(names):
                raise DatasetError(f"{label} must be non-empty and unique, got {list(names)}")
        cam_names = [c.name for c in self.cameras]
        if len(set(cam_names)) != len(cam_names):
            raise DatasetError(f"camera names must be unique, got {cam_names}")
        for cam in self.cameras:
            if cam.height <= 0 or cam.width <= 0:
                raise DatasetError(f"camera '{cam.name}' size must be positive, got {cam.height}x{cam.width}")
        if self.chunks_size <= 0 or self.data_files_size_in_mb <= 0 or self.video_files_size_in_mb <= 0:
            raise DatasetError("chunks_size and file size limits must be positive")


@dataclass
class EpisodeData:
    """One episode to write. `timestamps` (seconds from the episode start) default to frame_index / fps."""

    task: str
    states: npt.ArrayLike
    actions: npt.ArrayLike
    images: Mapping[str, ImageArray] = field(default_factory=dict)
    timestamps: npt.ArrayLike | None = None


@dataclass
class _Checked:
    task: str
    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.float32]
    images: dict[str, ImageArray]
    timestamps: npt.NDArray[np.float32]

    @property
    def length(self) -> int:
        return int(self.states.shape[0])


@dataclass
class _FileCursor:
    """Where the next episode goes for one rolling file series (data parquet or one camera's mp4)."""

    chunk_index: int = 0
    file_index: int = 0

    def advance(self, chunks_size: int) -> None:
        self.file_index += 1
        if self.file_index >= chunks_size:
            self.file_index = 0
            self.chunk_index += 1


def _fixed_list(values: npt.NDArray[np.float32]) -> pa.Array:
    n, dim = values.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=pa.float32()), dim)


def _png_bytes(img: ImageArray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _vector_feature(names: tuple[str, ...]) -> dict[str, Any]:
    return {"dtype": "float32", "shape": [len(names)], "names": list(names)}


class LeRobotWriter:
    """Writes episodes to a new LeRobot dataset; `close()` (or leaving the `with` block) writes the metadata."""

    def __init__(self, root: str | Path, config: LeRobotWriterConfig) -> None:
        self.root = Path(root)
        self.config = config
        self._prepare_root()
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._episode_stats: list[dict[str, FeatureStats]] = []
        self._total_frames = 0
        self._numeric: dict[str, list[npt.NDArray[np.float64]]] = {}
        self._hists: dict[str, npt.NDArray[np.int64]] = {}
        self._data_cursor = _FileCursor()
        self._data_writer: pq.ParquetWriter | None = None
        self._data_path: Path | None = None
        self._video_cursors = {cam.key: _FileCursor() for cam in config.cameras}
        self._video_files: dict[str, VideoConcatenator] = {}
        self._tmp_dir = self.root / ".tmp_videos"
        self._video_info: dict[str, dict[str, object]] = {}
        self._closed = False

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._release()

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def _prepare_root(self) -> None:
        if self.root.exists():
            contents = list(self.root.iterdir()) if self.root.is_dir() else [self.root]
            if contents:
                if not self.config.overwrite:
                    raise DatasetError(f"{self.root}: already exists and is not empty (set overwrite=True)")
                if not (self.root / INFO_PATH).is_file():
                    raise DatasetError(
                        f"{self.root}: refusing to overwrite a folder that is not a LeRobot dataset "
                        f"(no {INFO_PATH})"
                    )
                shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- validation -----------------------------------------------------------------------------------

    def _check(self, ep: EpisodeData) -> _Checked:
        where = f"episode {len(self._episodes)}"
        cfg = self.config
        if not isinstance(ep.task, str) or not ep.task.strip():
            raise DatasetError(f"{where}: task must be a non-empty string, got {ep.task!r}")
        states = self._matrix(ep.states, "states", len(cfg.state_names), where)
        actions = self._matrix(ep.actions, "actions", len(cfg.action_names), where)
        n = states.shape[0]
        if actions.shape[0] != n:
            raise DatasetError(f"{where}: actions has {actions.shape[0]} frames, states has {n}")
        if n == 0:
            raise DatasetError(f"{where}: an episode needs at least one frame")
        if ep.timestamps is None:
            ts = (np.arange(n, dtype=np.float64) / cfg.fps).astype(np.float32)
        else:
            raw = np.asarray(ep.timestamps, dtype=np.float64)
            if raw.shape != (n,):
                raise DatasetError(f"{where}: timestamps must be [T={n}], got shape {raw.shape}")
            if not np.all(np.isfinite(raw)) or np.any(raw < 0):
                raise DatasetError(f"{where}: timestamps must be finite and >= 0")
            ts = raw.astype(np.float32)
            if n > 1 and not np.all(np.diff(ts) > 0):
                raise DatasetError(f"{where}: timestamps must be strictly increasing (as float32)")
        images: dict[str, ImageArray] = {}
        expected = {cam.name for cam in cfg.cameras}
        extra = sorted(set(ep.images) - expected)
        if extra:
            raise DatasetError(f"{where}: images for unknown cameras {extra}; cameras are {sorted(expected)}")
        for cam in cfg.cameras:
            if cam.name not in ep.images:
                raise DatasetError(f"{where}: images['{cam.name}'] missing (expected uint8 [T, H, W, 3])")
            frames = np.asarray(ep.images[cam.name])
            want = (n, cam.height, cam.width, 3)
            if frames.dtype != np.uint8 or frames.shape != want:
                raise DatasetError(
                    f"{where}: images['{cam.name}'] must be uint8 {list(want)}, got {frames.dtype} {list(frames.shape)}"
                )
            images[cam.name] = frames
        return _Checked(ep.task, states, actions, images, ts)

    @staticmethod
    def _matrix(values: npt.ArrayLike, label: str, dim: int, where: str) -> npt.NDArray[np.float32]:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{where}: {label} is not numeric: {err}") from err
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise DatasetError(f"{where}: {label} must be [T, {dim}], got shape {list(arr.shape)}")
        if not np.all(np.isfinite(arr)):
            raise DatasetError(f"{where}: {label} has non-finite values")
        return arr.astype(np.float32)

    # ---- episode writing ------------------------------------------------------------------------------

    def add_episode(self, episode: EpisodeData) -> int:
        """Validate and write one episode; returns its episode index."""
        if self._closed:
            raise DatasetError(f"{self.root}: writer is closed")
        ep = self._check(episode)
        cfg = self.config
        ep_index = len(self._episodes)
        task_index = self._tasks.setdefault(ep.task, len(self._tasks))
        n = ep.length
        first = self._total_frames
        columns: dict[str, np.ndarray[Any, Any]] = {
            STATE_KEY: ep.states,
            ACTION_KEY: ep.actions,
            "timestamp": ep.timestamps,
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, ep_index, dtype=np.int64),
            "index": np.arange(first, first + n, dtype=np.int64),
            "task_index": np.full(n, task_index, dtype=np.int64),
        }
        table = self._frame_table(columns, ep)
        record: dict[str, Any] = {"episode_index": ep_index, "tasks": [ep.task], "length": n}
        if cfg.version == V30:
            record.update(self._write_v3_data(table, first, n))
        else:
            self._write_v2_data(table, ep_index)
        if cfg.camera_storage == "video":
            for cam in cfg.cameras:
                if cfg.version == V30:
                    record.update(self._write_v3_video(cam, ep.images[cam.name], ep_index))
                else:
                    self._write_v2_video(cam, ep.images[cam.name], ep_index)

        stats: dict[str, FeatureStats] = {}
        with_q = cfg.version == V30
        for key, values in columns.items():
            arr = np.asarray(values, dtype=np.float64)
            arr2 = arr.reshape(n, -1)
            stats[key] = compute_feature_stats(arr2, with_quantiles=with_q)
            self._numeric.setdefault(key, []).append(arr2)
        for cam in cfg.cameras:
            hist = channel_histograms(ep.images[cam.name])
            stats[cam.key] = image_stats_from_histograms(hist, n, with_quantiles=with_q)
            self._hists[cam.key] = self._hists[cam.key] + hist if cam.key in self._hists else hist
        self._episodes.append(record)
        self._episode_stats.append(stats)
        self._total_frames += n
        return ep_index

    def _frame_table(self, columns: Mapping[str, np.ndarray[Any, Any]], ep: _Checked) -> pa.Table:
        arrays: dict[str, pa.Array] = {
            STATE_KEY: _fixed_list(ep.states),
            ACTION_KEY: _fixed_list(ep.actions),
        }
        if self.config.camera_storage == "image":
            sep = "-" if self.config.version == V30 else "_"
            for cam in self.config.cameras:
                frames = ep.images[cam.name]
                data = [_png_bytes(img) for img in frames]
                paths = [f"frame{sep}{i:06d}.png" for i in range(len(frames))]
                arrays[cam.key] = pa.StructArray.from_arrays(
                    [pa.array(data, type=pa.binary()), pa.array(paths, type=pa.string())],
                    names=["bytes", "path"],
                )
        arrays["timestamp"] = pa.array(columns["timestamp"], type=pa.float32())
        for key in ("frame_index", "episode_index", "index", "task_index"):
            arrays[key] = pa.array(columns[key], type=pa.int64())
        return pa.table(arrays)

    def _write_v3_data(self, table: pa.Table, first: int, n: int) -> dict[str, Any]:
        cfg = self.config
        if self._data_writer is not None and self._data_path is not None:
            if self._data_path.stat().st_size >= cfg.data_files_size_in_mb * 1024 * 1024:
                self._data_writer.close()
                self._data_writer = None
                self._data_cursor.advance(cfg.chunks_size)
        cursor = self._data_cursor
        if self._data_writer is None:
            rel = V3_DATA_PATH.format(chunk_index=cursor.chunk_index, file_index=cursor.file_index)
            self._data_path = self.root / rel
            self._data_path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(self._data_path, table.schema, compression="snappy")
        self._data_writer.write_table(table)
        return {
            "data/chunk_index": cursor.chunk_index,
            "data/file_index": cursor.file_index,
            "dataset_from_index": first,
            "dataset_to_index": first + n,
        }

    def _write_v2_data(self, table: pa.Table, ep_index: int) -> None:
        chunk = ep_index // self.config.chunks_size
        path = self.root / V2_DATA_PATH.format(episode_chunk=chunk, episode_index=ep_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy")

    def _write_v3_video(self, cam: CameraFeature, frames: ImageArray, ep_index: int) -> dict[str, Any]:
        """Encode the episode on its own, then append it to the camera's current file (LeRobot v3 layout)."""
        cfg = self.config
        segment = self._tmp_dir / f"{cam.name}_{ep_index:06d}.mp4"
        encode_video(segment, frames, cfg.fps, cfg.video)
        cursor = self._video_cursors[cam.key]
        concat = self._video_files.get(cam.key)
        limit = cfg.video_files_size_in_mb * 1024 * 1024
        if concat is not None and concat.segments and concat.size_bytes() + segment.stat().st_size >= limit:
            concat.close()
            concat = None
            cursor.advance(cfg.chunks_size)
        if concat is None:
            rel = V3_VIDEO_PATH.format(
                video_key=cam.key, chunk_index=cursor.chunk_index, file_index=cursor.file_index
            )
            concat = VideoConcatenator(self.root / rel)
            self._video_files[cam.key] = concat
        start, end = concat.append(segment, len(frames) / cfg.fps)
        segment.unlink()
        return {
            f"videos/{cam.key}/chunk_index": cursor.chunk_index,
            f"videos/{cam.key}/file_index": cursor.file_index,
            f"videos/{cam.key}/from_timestamp": float(start),
            f"videos/{cam.key}/to_timestamp": float(end),
        }

    def _write_v2_video(self, cam: CameraFeature, frames: ImageArray, ep_index: int) -> None:
        cfg = self.config
        chunk = ep_index // cfg.chunks_size
        path = self.root / V2_VIDEO_PATH.format(
            episode_chunk=chunk, video_key=cam.key, episode_index=ep_index
        )
        encode_video(path, frames, cfg.fps, cfg.video)
        if cam.key not in self._video_info:
            self._video_info[cam.key] = probe_video_info(path)

    # ---- finalization ---------------------------------------------------------------------------------

    def _release(self) -> None:
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        for concat in self._video_files.values():
            concat.close()
        self._video_files.clear()
        shutil.rmtree(self._tmp_dir, ignore_errors=True)
        self._closed = True

    def close(self) -> None:
        """Close the files and write tasks, episode metadata, stats and info.json (last)."""
        if self._closed:
            return
        if not self._episodes:
            self._release()
            raise DatasetError(f"{self.root}: no episodes were added; nothing to write")
        self._release()
        cfg = self.config
        if cfg.camera_storage == "video" and cfg.version == V30:
            for cam in cfg.cameras:
                first = self.root / V3_VIDEO_PATH.format(video_key=cam.key, chunk_index=0, file_index=0)
                self._video_info[cam.key] = probe_video_info(first)
        if cfg.version == V30:
            self._finish_v3()
        else:
            self._finish_v2()
        write_json(self.root / INFO_PATH, self._info())

    def _dataset_stats(self) -> dict[str, FeatureStats]:
        stats: dict[str, FeatureStats] = {}
        for key, parts in self._numeric.items():
            stats[key] = compute_feature_stats(np.concatenate(parts, axis=0))
        for key, hist in self._hists.items():
            stats[key] = image_stats_from_histograms(hist, self._total_frames)
        return stats

    def _finish_v3(self) -> None:
        names = sorted(self._tasks, key=self._tasks.__getitem__)
        tasks_table = pa.table(
            {
                "task_index": pa.array([self._tasks[t] for t in names], type=pa.int64()),
                "task": pa.array(names, type=pa.string()),
            }
        )
        tasks_table = tasks_table.replace_schema_metadata(
            {b"pandas": pandas_index_metadata("task", [("task_index", "int64")])}
        )
        path = self.root / V3_TASKS_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(tasks_table, path)

        rows: list[dict[str, Any]] = []
        for record, ep_stats in zip(self._episodes, self._episode_stats, strict=True):
            row = dict(record)
            for feature, feat in ep_stats.items():
                for stat, value in feat.items():
                    arr = np.asarray(value)
                    row[f"stats/{feature}/{stat}"] = (
                        np.rint(arr).astype(np.int64).tolist() if stat == "count" else arr.tolist()
                    )
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            rows.append(row)
        columns = list(rows[0])
        table = pa.Table.from_pydict({c: [r[c] for r in rows] for c in columns})
        ep_path = self.root / V3_EPISODES_PATH.format(chunk_index=0, file_index=0)
        ep_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, ep_path, compression="snappy")
        write_json(self.root / STATS_PATH, stats_to_json(self._dataset_stats()))

    def _finish_v2(self) -> None:
        names = sorted(self._tasks, key=self._tasks.__getitem__)
        write_jsonl(self.root / V2_TASKS_PATH, [{"task_index": self._tasks[t], "task": t} for t in names])
        write_jsonl(self.root / V2_EPISODES_PATH, self._episodes)
        write_jsonl(
            self.root / V21_EPISODES_STATS_PATH,
            [
                {"episode_index": rec["episode_index"], "stats": stats_to_json(ep_stats)}
                for rec, ep_stats in zip(self._episodes, self._episode_stats, strict=True)
            ],
        )

    def _info(self) -> dict[str, Any]:
        cfg = self.config
        features: dict[str, Any] = {
            STATE_KEY: _vector_feature(cfg.state_names),
            ACTION_KEY: _vector_feature(cfg.action_names),
        }
        for cam in cfg.cameras:
            entry: dict[str, Any] = {
                "dtype": cfg.camera_storage,
                "shape": [cam.height, cam.width, 3],
                "names": ["height", "width", "channels"],
            }
            if cfg.camera_storage == "video":
                entry["info"] = self._video_info[cam.key]
            features[cam.key] = entry
        for key, dtype in BOOKKEEPING_FEATURES.items():
            features[key] = {"dtype": dtype, "shape": [1], "names": None}
        n_eps = len(self._episodes)
        has_video = cfg.camera_storage == "video" and bool(cfg.cameras)
        info: dict[str, Any] = {
            "codebase_version": cfg.version,
            "robot_type": cfg.robot_type,
            "total_episodes": n_eps,
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
        }
        if cfg.version == V21:
            info["total_videos"] = n_eps * len(cfg.cameras) if has_video else 0
            info["total_chunks"] = math.ceil(n_eps / cfg.chunks_size)
            info["chunks_size"] = cfg.chunks_size
        else:
            info["chunks_size"] = cfg.chunks_size
            info["data_files_size_in_mb"] = cfg.data_files_size_in_mb
            info["video_files_size_in_mb"] = cfg.video_files_size_in_mb
        info["fps"] = cfg.fps
        info["splits"] = {"train": f"0:{n_eps}"}
        info["data_path"] = V3_DATA_PATH if cfg.version == V30 else V2_DATA_PATH
        info["video_path"] = (V3_VIDEO_PATH if cfg.version == V30 else V2_VIDEO_PATH) if has_video else None
        info["features"] = features
        return info


def write_lerobot_dataset(root: str | Path, config: LeRobotWriterConfig, episodes: list[EpisodeData]) -> Path:
    """Write all `episodes` to a new dataset at `root` and return its path."""
    with LeRobotWriter(root, config) as writer:
        for ep in episodes:
            writer.add_episode(ep)
    return Path(root)
