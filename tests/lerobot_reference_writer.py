"""Test fixture: write small LeRobot datasets the way the real `lerobot` library lays them out on disk.

Why a second writer: `robodata.lerobot_writer` and `robodata.lerobot_reader` were written together, so a
round trip through both only proves they agree with each other. This module re-derives every path, column,
arrow type and metadata field from the upstream source instead, and shares no code with `replay` (it must
not import it), so a reader bug that our own writer mirrors still shows up. It needs only pyarrow, PyAV,
numpy and Pillow (the real library additionally uses pandas / HF `datasets`; their on-disk results are
reproduced here with pyarrow, including the schema metadata they add).

Upstream sources followed (github.com/huggingface/lerobot):

- `src/lerobot/datasets/utils.py`: DEFAULT_DATA_PATH `data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet`,
  DEFAULT_VIDEO_PATH `videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4`,
  DEFAULT_EPISODES_PATH `meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet`,
  DEFAULT_TASKS_PATH `meta/tasks.parquet`, DEFAULT_IMAGE_PATH (`.../frame-{frame_index:06d}.png`, whose basename
  is the `path` kept in embedded image structs), DEFAULT_FEATURES (timestamp float32, frame_index / episode_index
  / index / task_index int64, shape [1], names null), `create_empty_dataset_info` (info.json fields and order),
  `get_hf_features_from_features` (shape (1,) -> scalar Value, 1-D -> fixed-length Sequence, image -> Image
  struct {bytes, path}, video -> not stored in parquet), `write_json` (indent=4, ensure_ascii=False),
  `write_stats` / `serialize_dict`, `write_tasks` (pandas `DataFrame.to_parquet`), `flatten_dict` (the
  `stats/<feature>/<stat>` column names), `update_chunk_file_indices` (file index rolls into the next chunk at
  `chunks_size`).
- `src/lerobot/datasets/lerobot_dataset.py` / `dataset_metadata.py` (v3.0 recording path): `save_episode`
  (per-frame `task` -> `task_index`, episode tasks = the set of frame tasks, global `index`),
  `_save_episode_data` (one `pq.ParquetWriter(..., compression="snappy", use_dictionary=True)` per data file, one
  `write_table` = one row group per episode, `dataset_from_index` / `dataset_to_index`),
  `_save_episode_video` (each episode encoded to a temporary mp4, then moved to a new file or appended to the
  current one with `concatenate_video_files([latest, episode], latest)`; `from_timestamp` = previous episode's
  `to_timestamp` in that file, `to_timestamp` = from + `get_video_duration_in_s(episode mp4)`),
  `LeRobotDatasetMetadata.save_episode` / `_save_episode_metadata` / `_flush_metadata_buffer` (episode rows
  `{episode_index, tasks, length, data/*, dataset_*_index, videos/<key>/*, stats/*, meta/episodes/*}` built with
  `pa.Table.from_pydict`, buffered 10 at a time = row groups of 10), `save_episode_tasks`
  (`pd.DataFrame({"task_index": ...}, index=tasks)`; unnamed index in lerobot 0.4.x, `pd.Index(..., name="task")`
  in later versions), `update_video_info` (feature `info` block probed from chunk-000/file-000.mp4).
- `src/lerobot/datasets/video_utils.py`: `encode_video_frames` (PyAV `add_stream(vcodec, fps,
  options={"g": "2", "crf": "30"})`, `pix_fmt = "yuv420p"`, frames from PIL images without pts, default vcodec
  `libsvtav1`), `concatenate_video_files` (ffconcat demuxer, packets remuxed without re-encoding into an mp4 with
  `movflags=faststart`), `get_video_duration_in_s` (stream.duration * time_base), `get_video_info`.
- `src/lerobot/datasets/compute_stats.py`: `compute_episode_stats` (min/max/mean/std/count over frames; images
  sampled by `sample_indices`, channel-first, reduced over (N, H, W), scaled by 1/255, shape (3, 1, 1), `count` =
  number of sampled images), `aggregate_stats` (count-weighted mean, pooled variance). Quantiles q01..q99 are
  written by lerobot >= 0.4, not by 0.3.x.
- `src/lerobot/datasets/v30/convert_dataset_v21_to_v30.py`: the layout of every Hub dataset converted from v2.1
  (`concat_data_files` re-writes data through pandas, so vectors become variable-length `list<float>` and the
  file is one pandas-written table; `convert_videos_of_camera` concatenates the per-episode mp4s with
  cumulative durations as from/to timestamps; `generate_episode_metadata_dict` column order; `convert_info` pops
  `total_chunks` / `total_videos`, adds the v3 templates and file sizes, and gives every non-video feature an
  `fps` entry).
- `lerobot/common/datasets/utils.py` (lerobot 0.3.x, v2.1): `meta/episodes.jsonl` `{episode_index, tasks,
  length}`, `meta/tasks.jsonl` `{task_index, task}`, `meta/episodes_stats.jsonl` `{episode_index, stats}`,
  DEFAULT_PARQUET_PATH `data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet`, DEFAULT_VIDEO_PATH
  `videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4`, info.json with `total_videos`
  and `total_chunks`, image paths `frame_{frame_index:06d}.png`.

What is deliberately not reproduced: file rollover is driven by explicit episode boundaries
(`data_file_starts`, `video_file_starts`) instead of by measured MB sizes, so a test can force several
episodes per file *and* a rollover with tiny files (the result is the layout the real size rule produces for
some size limit); the episode's task list and new-task index order follow first appearance where the real
library uses `list(set(tasks))` (arbitrary order), so a reader must never assume either order.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

# ---- upstream constants (src/lerobot/datasets/utils.py) -----------------------------------------------------
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500  # 200 in some 0.4 releases; only informational for readers
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
DEFAULT_TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DEFAULT_EPISODES_PATH = "meta/episodes/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"
LEGACY_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
LEGACY_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (("q01", 0.01), ("q10", 0.10), ("q50", 0.50), ("q90", 0.90), ("q99", 0.99))
METADATA_BUFFER_SIZE = 10  # LeRobotDatasetMetadata(metadata_buffer_size=10)

U8Array = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]


def default_vcodec() -> str:
    """The real default (`libsvtav1`, AV1) when this PyAV build can encode it, else `h264` (libx264)."""
    try:
        av.codec.Codec("libsvtav1", "w")
        return "libsvtav1"
    except Exception:  # any failure to find the encoder means "not available"
        return "h264"


@dataclass
class RefEpisode:
    """One episode as a recorder hands it to LeRobot: per-frame vectors, per-frame task text, camera frames.

    `images` maps the camera feature key (e.g. `observation.images.<cam>`) to RGB uint8 [T, H, W, 3].
    `tasks` is one string per frame (LeRobot's `add_frame(..., task=...)`); usually all equal.
    """

    states: F32Array
    actions: F32Array
    tasks: Sequence[str]
    images: Mapping[str, U8Array] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.states)
        if len(self.actions) != n or len(self.tasks) != n or any(len(v) != n for v in self.images.values()):
            raise ValueError("states, actions, tasks and every camera need one entry per frame")


@dataclass(frozen=True)
class RefSpec:
    """Dataset-wide settings. `*_names_raw` is written into info.json verbatim: a list, {"motors": [...]}, or None.

    `cameras` maps each camera feature key to (height, width); keys need not start with `observation.images.`.
    """

    fps: int
    state_dim: int
    action_dim: int
    state_names_raw: Any
    action_names_raw: Any
    cameras: Mapping[str, tuple[int, int]]  # feature key -> (height, width)
    camera_dtype: str = "video"  # "video" or "image"
    robot_type: str | None = "bi_yam"
    vcodec: str = field(default_factory=default_vcodec)
    # LeRobot itself names these `observation.state` / `action`, but `LeRobotDataset.create(features=...)` takes
    # any keys: openpi's LIBERO conversion (physical-intelligence/libero) uses `state` / `actions` and cameras
    # `image` / `wrist_image`, all written by the real library.
    state_key: str = "observation.state"
    action_key: str = "action"
    # lerobot's newest annotation pipeline (src/lerobot/datasets/language.py) adds features `language_persistent`
    # / `language_events`, dtype "language", shape [1], stored as list<struct<role, content, ...>> columns.
    language_columns: bool = False


# ---- small helpers ---------------------------------------------------------------------------------------------


def _write_json(data: object, path: Path) -> None:
    """utils.write_json: json.dump(indent=4, ensure_ascii=False), no trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=4, ensure_ascii=False)


def _append_jsonl(row: Mapping[str, Any], path: Path) -> None:
    """jsonlines.Writer.write: compact json + newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _update_chunk_file_indices(chunk_idx: int, file_idx: int, chunks_size: int) -> tuple[int, int]:
    if file_idx == chunks_size - 1:
        return chunk_idx + 1, 0
    return chunk_idx, file_idx + 1


def _flatten_dict(d: Mapping[str, Any], parent: str = "", sep: str = "/") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{parent}{sep}{k}" if parent else k
        if isinstance(v, Mapping):
            out.update(_flatten_dict(v, key, sep))
        else:
            out[key] = v
    return out


def _serialize(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()}


# ---- features / arrow schema (get_hf_features_from_features + datasets' arrow mapping) -------------------------


def _features(spec: RefSpec) -> dict[str, dict[str, Any]]:
    """info.json `features`: recorded features in `hw_to_dataset_features` order, then DEFAULT_FEATURES."""
    feats: dict[str, dict[str, Any]] = {
        spec.action_key: {"dtype": "float32", "shape": [spec.action_dim], "names": spec.action_names_raw},
        spec.state_key: {"dtype": "float32", "shape": [spec.state_dim], "names": spec.state_names_raw},
    }
    for key, (h, w) in spec.cameras.items():
        feats[key] = {"dtype": spec.camera_dtype, "shape": [h, w, 3], "names": ["height", "width", "channels"]}
    feats.update(json.loads(json.dumps(DEFAULT_FEATURES)))
    if spec.language_columns:  # language.language_feature_info()
        for key in LANGUAGE_COLUMNS:
            feats[key] = {"dtype": "language", "shape": [1], "names": None}
    return feats


_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
LANGUAGE_COLUMNS = ("language_persistent", "language_events")
_LANGUAGE_ROW = [
    pa.field("role", pa.string(), nullable=False),
    pa.field("content", pa.string()),
    pa.field("style", pa.string()),
    pa.field("camera", pa.string()),
    pa.field("tool_calls", pa.list_(pa.string())),  # pa.json_() upstream when available
]
_LANGUAGE_TYPES = {
    "language_persistent": pa.list_(
        pa.struct([*_LANGUAGE_ROW[:3], pa.field("timestamp", pa.float32(), False), *_LANGUAGE_ROW[3:]])
    ),
    "language_events": pa.list_(pa.struct(_LANGUAGE_ROW)),
}


def _arrow_type(key: str, ft: Mapping[str, Any]) -> pa.DataType:
    if ft["dtype"] == "language":
        return _LANGUAGE_TYPES[key]
    if ft["dtype"] == "image":
        return _IMAGE_STRUCT
    value = pa.from_numpy_dtype(np.dtype(ft["dtype"]))
    if list(ft["shape"]) == [1]:
        return value
    return pa.list_(value, int(ft["shape"][0]))  # datasets Sequence(length=n) -> fixed_size_list<item>[n]


def _hf_feature_json(ft: Mapping[str, Any], list_type_name: str) -> dict[str, Any]:
    if ft["dtype"] == "language":
        return {"feature": {"role": {"dtype": "string", "_type": "Value"}}, "_type": "List"}  # abridged
    if ft["dtype"] == "image":
        return {"_type": "Image"}
    value = {"dtype": ft["dtype"], "_type": "Value"}
    if list(ft["shape"]) == [1]:
        return value
    return {"feature": value, "length": int(ft["shape"][0]), "_type": list_type_name}


def _hf_schema(features: Mapping[str, Mapping[str, Any]], list_type_name: str) -> pa.Schema:
    """The schema `datasets.Features.arrow_schema` produces, with its `huggingface` metadata.

    `list_type_name` is "Sequence" for datasets 3.x (lerobot 0.3, v2.1) and "List" for datasets >= 4 (v3.0).
    """
    stored = {k: ft for k, ft in features.items() if ft["dtype"] != "video"}
    fields = [pa.field(k, _arrow_type(k, ft)) for k, ft in stored.items()]
    hf = {"info": {"features": {k: _hf_feature_json(ft, list_type_name) for k, ft in stored.items()}}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(hf)})


def _png_bytes(frame: U8Array, compress_level: int = 6) -> bytes:
    """image_writer.write_image: PIL PNG (compress_level 6 for `image` features)."""
    path = Path(tempfile.mkstemp(suffix=".png")[1])
    try:
        Image.fromarray(frame).save(path, compress_level=compress_level)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _episode_table(
    spec: RefSpec,
    features: Mapping[str, Mapping[str, Any]],
    schema: pa.Schema,
    ep: RefEpisode,
    episode_index: int,
    global_start: int,
    task_index: Mapping[str, int],
    frame_name: str,
) -> pa.Table:
    """One episode's frames as `ep_dataset.with_format("arrow")[:]` holds them after `embed_images`."""
    n = len(ep.states)
    columns: dict[str, pa.Array] = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        typ = schema.field(key).type
        if key in (spec.action_key, spec.state_key):
            arr = np.asarray(ep.actions if key == spec.action_key else ep.states, dtype=np.float32)
            columns[key] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), pa.float32()), arr.shape[1])
        elif ft["dtype"] == "image":
            cells = [
                {"bytes": _png_bytes(img), "path": frame_name.format(frame_index=i)}
                for i, img in enumerate(ep.images[key])
            ]
            columns[key] = pa.array(cells, type=typ)
        elif key == "timestamp":
            columns[key] = pa.array(np.arange(n) / spec.fps, pa.float32())  # frame_index / fps
        elif key == "frame_index":
            columns[key] = pa.array(np.arange(n), pa.int64())
        elif key == "episode_index":
            columns[key] = pa.array(np.full(n, episode_index), pa.int64())
        elif key == "index":
            columns[key] = pa.array(np.arange(global_start, global_start + n), pa.int64())
        elif key == "task_index":
            columns[key] = pa.array([task_index[t] for t in ep.tasks], pa.int64())
        elif ft["dtype"] == "language":  # unannotated frames: empty lists
            columns[key] = pa.array([[] for _ in range(n)], typ)
        else:
            raise ValueError(f"reference writer does not know how to fill feature '{key}'")
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


# ---- stats (compute_stats.py) --------------------------------------------------------------------------------


def _sample_indices(n: int) -> list[int]:
    """compute_stats.sample_indices / estimate_num_samples with their defaults."""
    min_num = min(100, n)
    num = max(min_num, min(int(n**0.75), 10_000))
    return [int(i) for i in np.round(np.linspace(0, n - 1, num)).astype(int)]


def _feature_stats(arr: np.ndarray, axis: int | tuple[int, ...], keepdims: bool, quantiles: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "min": np.min(arr, axis=axis, keepdims=keepdims),
        "max": np.max(arr, axis=axis, keepdims=keepdims),
        "mean": np.mean(arr, axis=axis, keepdims=keepdims),
        "std": np.std(arr, axis=axis, keepdims=keepdims),
        "count": np.array([len(arr)]),
    }
    if quantiles:
        for key, q in QUANTILES:
            out[key] = np.quantile(arr, q, axis=axis, keepdims=keepdims)
    return out


def _episode_stats(
    spec: RefSpec,
    features: Mapping[str, Mapping[str, Any]],
    ep: RefEpisode,
    episode_index: int,
    global_start: int,
    task_index: Mapping[str, int],
    quantiles: bool,
) -> dict[str, dict[str, np.ndarray]]:
    n = len(ep.states)
    buffer: dict[str, np.ndarray] = {
        spec.action_key: np.asarray(ep.actions, dtype=np.float32),
        spec.state_key: np.asarray(ep.states, dtype=np.float32),
        "timestamp": np.asarray([i / spec.fps for i in range(n)]),  # np.stack of python floats -> float64
        "frame_index": np.arange(n),
        "episode_index": np.full(n, episode_index),
        "index": np.arange(global_start, global_start + n),
        "task_index": np.asarray([task_index[t] for t in ep.tasks]),
    }
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key, ft in features.items():
        if ft["dtype"] in ("string", "language"):
            continue  # compute_episode_stats skips non-numeric features
        if ft["dtype"] in ("image", "video"):
            imgs = np.asarray(ep.images[key])[_sample_indices(n)].transpose(0, 3, 1, 2)  # channel first
            raw = _feature_stats(imgs, (0, 2, 3), True, quantiles)
            stats[key] = {k: v if k == "count" else np.squeeze(v / 255.0, axis=0) for k, v in raw.items()}
        else:
            data = buffer[key]
            stats[key] = _feature_stats(data, 0, data.ndim == 1, quantiles)
    return stats


def _aggregate_stats(per_episode: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> dict[str, dict[str, Any]]:
    """compute_stats.aggregate_stats (quantiles: count-weighted mean, as lerobot >= 0.4 does)."""
    out: dict[str, dict[str, Any]] = {}
    for key in per_episode[0]:
        entries = [s[key] for s in per_episode]
        means = np.stack([e["mean"] for e in entries])
        variances = np.stack([np.asarray(e["std"]) ** 2 for e in entries])
        counts = np.stack([e["count"] for e in entries])
        total = counts.sum(axis=0)
        while counts.ndim < means.ndim:
            counts = np.expand_dims(counts, axis=-1)
        mean = (means * counts).sum(axis=0) / total
        var = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
        agg: dict[str, Any] = {
            "min": np.min(np.stack([e["min"] for e in entries]), axis=0),
            "max": np.max(np.stack([e["max"] for e in entries]), axis=0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": total,
        }
        for q, _ in QUANTILES:
            if all(q in e for e in entries):
                agg[q] = (np.stack([e[q] for e in entries]) * counts).sum(axis=0) / total
        out[key] = agg
    return out


# ---- video (video_utils.py) ------------------------------------------------------------------------------------


def encode_episode_video(frames: U8Array, path: Path, fps: int, vcodec: str) -> None:
    """video_utils.encode_video_frames: PyAV, g=2, crf=30, yuv420p, frames from PIL images with no pts set."""
    os.environ.setdefault("SVT_LOG", "1")  # keep SVT-AV1's banner off stderr
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"g": "2", "crf": "30"}
    with av.open(str(path), "w") as output:
        stream = output.add_stream(vcodec, fps, options=options)
        if not isinstance(stream, av.VideoStream):
            raise TypeError(f"{vcodec} did not open a video stream")
        stream.pix_fmt = "yuv420p"
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        for img in frames:
            # Upstream: VideoFrame.from_image(PIL RGB image), which is this rgb24 frame; no pts is set.
            rgb = np.asarray(Image.fromarray(img).convert("RGB"))
            packet = stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24"))
            if packet:
                output.mux(packet)
        packet = stream.encode()
        if packet:
            output.mux(packet)


def video_duration_s(path: Path) -> float:
    """video_utils.get_video_duration_in_s."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is None:
            raise ValueError(f"{path}: no duration")
        return float(container.duration / av.time_base)


def concatenate_videos(inputs: Sequence[Path], output: Path) -> None:
    """video_utils.concatenate_video_files: ffconcat demuxer, packet remux, movflags=faststart, then move."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".ffconcat", delete=False) as f:
        f.write("ffconcat version 1.0\n")
        for p in inputs:
            f.write(f"file '{Path(p).resolve()}'\n")
        listing = f.name
    with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as f:
        tmp_out = f.name
    try:
        src = av.open(listing, mode="r", format="concat", options={"safe": "0"})
        dst = av.open(tmp_out, mode="w", options={"movflags": "faststart"})
        mapping = {}
        for s in src.streams:
            if s.type in ("video", "audio", "subtitle"):
                mapping[s.index] = dst.add_stream_from_template(template=s, opaque=True)
                mapping[s.index].time_base = s.time_base
        for packet in src.demux():
            if packet.stream.index not in mapping or packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            dst.mux(packet)
        src.close()
        dst.close()
        shutil.move(tmp_out, output)
    finally:
        Path(listing).unlink(missing_ok=True)
        Path(tmp_out).unlink(missing_ok=True)


def video_info(path: Path) -> dict[str, Any]:
    """video_utils.get_video_info (+ get_audio_info's `has_audio: False`)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(stream.base_rate or 0),
            "video.channels": 3,
        }
        info["has_audio"] = len(container.streams.audio) > 0
    return info


# ---- tasks parquet (pandas DataFrame.to_parquet) ---------------------------------------------------------------


def write_tasks_parquet(path: Path, tasks: Sequence[str], index_name: str | None) -> None:
    """`pd.DataFrame({"task_index": range(n)}, index=tasks).to_parquet(path)` as pyarrow writes it.

    index_name None: an unnamed string index -> column `__index_level_0__` (lerobot 0.4.x and the v2.1 -> v3.0
    converter); "task": `pd.Index(tasks, name="task")` (later lerobot). Either way the text is the pandas index,
    recorded in the `pandas` schema metadata, after the `task_index` column.
    """
    field_name = index_name if index_name is not None else "__index_level_0__"
    pandas_meta = {
        "index_columns": [field_name],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": index_name,
                "field_name": field_name,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field(field_name, pa.string())],
        metadata={"pandas": json.dumps(pandas_meta)},
    )
    table = pa.Table.from_arrays(
        [pa.array(range(len(tasks)), pa.int64()), pa.array(list(tasks), pa.string())], schema=schema
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


# ---- v3.0 ------------------------------------------------------------------------------------------------------


def _register_tasks(ep: RefEpisode, task_index: dict[str, int]) -> list[str]:
    """save_episode_tasks: new tasks get the next indices. Returns the episode's task list."""
    episode_tasks = list(dict.fromkeys(ep.tasks))  # upstream: list(set(tasks)), arbitrary order
    for task in episode_tasks:
        if task not in task_index:
            task_index[task] = len(task_index)
    return episode_tasks


def _starts(starts: Sequence[int] | None, n: int) -> set[int]:
    s = set(starts or (0,))
    if 0 not in s or any(not 0 <= i < n for i in s):
        raise ValueError(f"file start episodes must include 0 and lie in [0, {n}), got {sorted(s)}")
    return s


def write_v30(
    root: Path,
    spec: RefSpec,
    episodes: Sequence[RefEpisode],
    *,
    data_file_starts: Sequence[int] | None = None,
    video_file_starts: Mapping[str, Sequence[int]] | None = None,
    chunks_size: int = DEFAULT_CHUNK_SIZE,
    tasks_index_name: str | None = None,
) -> Path:
    """A v3.0 dataset as `LeRobotDataset.create(...)`, `add_frame` x T, `save_episode()` x E, `finalize()` write it.

    `data_file_starts` / `video_file_starts[key]`: episode indices that open a new data / video file (the real
    library opens one when the current file would exceed `data_files_size_in_mb` / `video_files_size_in_mb`;
    each camera rolls over independently). `chunks_size` small makes file indices roll into chunk-001.
    """
    root.mkdir(parents=True, exist_ok=False)
    features = _features(spec)
    video_keys = [k for k, ft in features.items() if ft["dtype"] == "video"]
    info: dict[str, Any] = {
        "codebase_version": "v3.0",
        "robot_type": spec.robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": DEFAULT_DATA_FILE_SIZE_IN_MB,
        "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB,
        "fps": spec.fps,
        "splits": {},
        "data_path": DEFAULT_DATA_PATH,
        "video_path": DEFAULT_VIDEO_PATH if video_keys else None,
        "features": features,
    }
    _write_json(info, root / INFO_PATH)
    schema = _hf_schema(features, "List")
    data_starts = _starts(data_file_starts, len(episodes))
    vid_starts = {k: _starts((video_file_starts or {}).get(k), len(episodes)) for k in video_keys}

    task_index: dict[str, int] = {}
    all_stats: list[dict[str, dict[str, np.ndarray]]] = []
    meta_buffer: list[dict[str, Any]] = []
    meta_writer: pq.ParquetWriter | None = None
    data_writer: pq.ParquetWriter | None = None
    data_chunk, data_file = 0, 0
    vid_state: dict[str, tuple[int, int, float]] = {}  # key -> (chunk, file, to_timestamp of the last episode)
    total_frames = 0

    def flush_meta() -> None:
        nonlocal meta_writer
        if not meta_buffer:
            return
        combined: dict[str, list[Any]] = {}
        for row in meta_buffer:
            for key, value in row.items():
                combined.setdefault(key, []).append(value.tolist() if isinstance(value, np.ndarray) else value)
        table = pa.Table.from_pydict(combined)
        if meta_writer is None:
            path = root / DEFAULT_EPISODES_PATH.format(chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            meta_writer = pq.ParquetWriter(path, schema=table.schema, compression="snappy", use_dictionary=True)
        meta_writer.write_table(table)
        meta_buffer.clear()

    try:
        for ep_idx, ep in enumerate(episodes):
            n = len(ep.states)
            episode_tasks = _register_tasks(ep, task_index)
            write_tasks_parquet(root / DEFAULT_TASKS_PATH, list(task_index), tasks_index_name)
            stats = _episode_stats(spec, features, ep, ep_idx, total_frames, task_index, quantiles=True)

            # _save_episode_data
            if ep_idx in data_starts and ep_idx > 0:
                assert data_writer is not None
                data_writer.close()
                data_writer = None
                data_chunk, data_file = _update_chunk_file_indices(data_chunk, data_file, chunks_size)
            table = _episode_table(
                spec, features, schema, ep, ep_idx, total_frames, task_index, "frame-{frame_index:06d}.png"
            )
            if data_writer is None:
                path = root / DEFAULT_DATA_PATH.format(chunk_index=data_chunk, file_index=data_file)
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(path, schema=table.schema, compression="snappy", use_dictionary=True)
            data_writer.write_table(table)
            metadata: dict[str, Any] = {
                "data/chunk_index": data_chunk,
                "data/file_index": data_file,
                "dataset_from_index": total_frames,
                "dataset_to_index": total_frames + n,
            }

            # _save_episode_video, per camera
            for key in video_keys:
                tmp_dir = Path(tempfile.mkdtemp(dir=root))
                ep_path = tmp_dir / f"{key}_{ep_idx:03d}.mp4"
                encode_episode_video(np.asarray(ep.images[key]), ep_path, spec.fps, spec.vcodec)
                duration = video_duration_s(ep_path)
                if ep_idx == 0 or ep_idx in vid_starts[key]:
                    chunk, file = (0, 0)
                    if ep_idx > 0:
                        chunk, file = _update_chunk_file_indices(*vid_state[key][:2], chunks_size)
                    start = 0.0
                    new_path = root / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                    new_path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(ep_path), str(new_path))
                else:
                    chunk, file, start = vid_state[key]
                    latest = root / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                    concatenate_videos([latest, ep_path], latest)
                shutil.rmtree(tmp_dir)
                if ep_idx == 0:  # update_video_info, from chunk-000/file-000
                    first = root / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
                    info["features"][key]["info"] = video_info(first)
                    _write_json(info, root / INFO_PATH)
                metadata["episode_index"] = ep_idx
                metadata[f"videos/{key}/chunk_index"] = chunk
                metadata[f"videos/{key}/file_index"] = file
                metadata[f"videos/{key}/from_timestamp"] = start
                metadata[f"videos/{key}/to_timestamp"] = start + duration
                vid_state[key] = (chunk, file, start + duration)

            # LeRobotDatasetMetadata.save_episode
            row: dict[str, Any] = {"episode_index": ep_idx, "tasks": episode_tasks, "length": n}
            row.update(metadata)
            row.update(_flatten_dict({"stats": stats}))
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            meta_buffer.append(row)
            if len(meta_buffer) >= METADATA_BUFFER_SIZE:
                flush_meta()
            total_frames += n
            all_stats.append(stats)
            info["total_episodes"] = ep_idx + 1
            info["total_frames"] = total_frames
            info["total_tasks"] = len(task_index)
            info["splits"] = {"train": f"0:{ep_idx + 1}"}
            _write_json(info, root / INFO_PATH)
            _write_json(_serialize(_aggregate_stats(all_stats)), root / STATS_PATH)
        flush_meta()  # finalize()
    finally:
        if data_writer is not None:
            data_writer.close()
        if meta_writer is not None:
            meta_writer.close()
    return root


# ---- v2.1 ------------------------------------------------------------------------------------------------------


def write_v21(
    root: Path,
    spec: RefSpec,
    episodes: Sequence[RefEpisode],
    *,
    chunks_size: int = DEFAULT_CHUNK_SIZE,
    with_stats_json: bool = False,
) -> Path:
    """A v2.1 dataset as lerobot 0.3.x records it: one parquet and one mp4 per episode in `chunk-{ep // size}`.

    `with_stats_json`: also keep the v2.0-era `meta/stats.json` that datasets converted v2.0 -> v2.1 carry.
    """
    root.mkdir(parents=True, exist_ok=False)
    features = _features(spec)
    video_keys = [k for k, ft in features.items() if ft["dtype"] == "video"]
    info: dict[str, Any] = {
        "codebase_version": "v2.1",
        "robot_type": spec.robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "total_videos": 0,
        "total_chunks": 0,
        "chunks_size": chunks_size,
        "fps": spec.fps,
        "splits": {},
        "data_path": LEGACY_DATA_PATH,
        "video_path": LEGACY_VIDEO_PATH if video_keys else None,
        "features": features,
    }
    _write_json(info, root / INFO_PATH)
    schema = _hf_schema(features, "Sequence")
    task_index: dict[str, int] = {}
    total_frames = 0
    all_stats = []
    for ep_idx, ep in enumerate(episodes):
        n = len(ep.states)
        chunk = ep_idx // chunks_size
        episode_tasks = []
        for task in dict.fromkeys(ep.tasks):
            episode_tasks.append(task)
            if task not in task_index:
                task_index[task] = len(task_index)
                _append_jsonl({"task_index": task_index[task], "task": task}, root / LEGACY_TASKS_PATH)
        stats = _episode_stats(spec, features, ep, ep_idx, total_frames, task_index, quantiles=False)
        table = _episode_table(
            spec, features, schema, ep, ep_idx, total_frames, task_index, "frame_{frame_index:06d}.png"
        )
        path = root / LEGACY_DATA_PATH.format(episode_chunk=chunk, episode_index=ep_idx)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)  # datasets.Dataset.to_parquet: one file per episode
        for key in video_keys:
            vpath = root / LEGACY_VIDEO_PATH.format(episode_chunk=chunk, video_key=key, episode_index=ep_idx)
            encode_episode_video(np.asarray(ep.images[key]), vpath, spec.fps, spec.vcodec)
            if ep_idx == 0:
                info["features"][key]["info"] = video_info(vpath)
        _append_jsonl({"episode_index": ep_idx, "tasks": episode_tasks, "length": n}, root / LEGACY_EPISODES_PATH)
        _append_jsonl({"episode_index": ep_idx, "stats": _serialize(stats)}, root / LEGACY_EPISODES_STATS_PATH)
        total_frames += n
        all_stats.append(stats)
        info["total_episodes"] = ep_idx + 1
        info["total_frames"] = total_frames
        info["total_tasks"] = len(task_index)
        info["total_videos"] += len(video_keys)
        info["total_chunks"] = max(info["total_chunks"], chunk + 1)
        info["splits"] = {"train": f"0:{ep_idx + 1}"}
        _write_json(info, root / INFO_PATH)
    if with_stats_json:
        _write_json(_serialize(_aggregate_stats(all_stats)), root / STATS_PATH)
    return root


# ---- v2.1 -> v3.0 conversion (convert_dataset_v21_to_v30.py) ----------------------------------------------------


def _pandas_roundtrip_table(tables: Sequence[pa.Table]) -> pa.Table:
    """`pd.concat([pd.read_parquet(p) ...]).to_parquet(out, index=False)` for numeric columns: fixed-size lists
    come back from pandas as object arrays of numpy arrays and are written as variable-length `list<item>`; the
    `huggingface` metadata is replaced by `pandas` metadata."""
    table = pa.concat_tables(tables)
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    pandas_cols: list[dict[str, Any]] = []
    for f in table.schema:
        col = table.column(f.name).combine_chunks()
        if pa.types.is_fixed_size_list(f.type):
            col = col.cast(pa.list_(f.type.value_type))
            pandas_type, numpy_type = f"list[{f.type.value_type}]", "object"
        elif pa.types.is_struct(f.type):
            pandas_type, numpy_type = "object", "object"
        else:
            pandas_type = numpy_type = str(f.type.to_pandas_dtype().__name__)
        arrays.append(col)
        fields.append(pa.field(f.name, col.type))
        pandas_cols.append(
            {
                "name": f.name,
                "field_name": f.name,
                "pandas_type": pandas_type,
                "numpy_type": numpy_type,
                "metadata": None,
            }
        )
    pandas_meta = {
        "index_columns": [],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": pandas_cols,
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata={"pandas": json.dumps(pandas_meta)}))


def convert_v21_to_v30(
    old_root: Path,
    new_root: Path,
    *,
    data_file_starts: Sequence[int] | None = None,
    video_file_starts: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """What `convert_dataset_v21_to_v30.py` leaves on disk for a v2.1 dataset written by `write_v21`."""
    info = json.loads((old_root / INFO_PATH).read_text(encoding="utf-8"))
    episodes_legacy = [json.loads(line) for line in (old_root / LEGACY_EPISODES_PATH).read_text().splitlines()]
    stats_legacy = [json.loads(line) for line in (old_root / LEGACY_EPISODES_STATS_PATH).read_text().splitlines()]
    tasks_legacy = [json.loads(line) for line in (old_root / LEGACY_TASKS_PATH).read_text().splitlines()]
    n_eps = len(episodes_legacy)
    new_root.mkdir(parents=True, exist_ok=False)
    write_tasks_parquet(
        new_root / DEFAULT_TASKS_PATH, [t["task"] for t in sorted(tasks_legacy, key=lambda t: t["task_index"])], None
    )

    # convert_data: group per-episode parquet files, concatenate through pandas.
    data_starts = _starts(data_file_starts, n_eps)
    ep_paths = sorted((old_root / "data").glob("*/*.parquet"))
    data_meta: list[dict[str, Any]] = []
    chunk, file = 0, 0
    frames = 0
    group: list[pa.Table] = []

    def flush_data(c: int, f: int) -> None:
        out = new_root / DEFAULT_DATA_PATH.format(chunk_index=c, file_index=f)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_pandas_roundtrip_table(group), out)

    for i, p in enumerate(ep_paths):
        if i in data_starts and i > 0:
            flush_data(chunk, file)
            group = []
            chunk, file = _update_chunk_file_indices(chunk, file, DEFAULT_CHUNK_SIZE)
        table = pq.read_table(p)
        group.append(table)
        data_meta.append(
            {
                "episode_index": i,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": frames,
                "dataset_to_index": frames + table.num_rows,
            }
        )
        frames += table.num_rows
    flush_data(chunk, file)

    # convert_videos: per camera (sorted keys), concatenate per-episode files; timestamps from durations.
    video_keys = sorted(k for k, ft in info["features"].items() if ft["dtype"] == "video")
    video_meta: list[dict[str, Any]] = [{"episode_index": i} for i in range(n_eps)]
    for key in video_keys:
        starts = _starts((video_file_starts or {}).get(key), n_eps)
        paths = sorted((old_root / "videos").glob(f"*/{key}/*.mp4"))
        chunk, file, t = 0, 0, 0.0
        acc: list[Path] = []
        for i, p in enumerate(paths):
            if i in starts and i > 0:
                concatenate_videos(
                    acc, new_root / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                )
                chunk, file = _update_chunk_file_indices(chunk, file, DEFAULT_CHUNK_SIZE)
                t, acc = 0.0, []
            dur = video_duration_s(p)
            video_meta[i].update(
                {
                    f"videos/{key}/chunk_index": chunk,
                    f"videos/{key}/file_index": file,
                    f"videos/{key}/from_timestamp": t,
                    f"videos/{key}/to_timestamp": t + dur,
                }
            )
            acc.append(p)
            t += dur
        concatenate_videos(acc, new_root / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file))

    # convert_episodes_metadata: HF Dataset.from_generator(rows).to_parquet(...)
    rows: list[dict[str, Any]] = []
    per_episode_stats = []
    for i in range(n_eps):
        st = {f: {k: np.asarray(v) for k, v in s.items()} for f, s in stats_legacy[i]["stats"].items()}
        per_episode_stats.append(st)
        row = {**data_meta[i], **(video_meta[i] if video_keys else {}), **episodes_legacy[i]}
        row.update(_flatten_dict({"stats": st}))
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        rows.append(row)
    combined: dict[str, list[Any]] = {}
    for row in rows:
        for key, value in row.items():
            combined.setdefault(key, []).append(value.tolist() if isinstance(value, np.ndarray) else value)
    table = pa.Table.from_pydict(combined)
    hf_features = {name: _hf_value_json(typ) for name, typ in zip(table.schema.names, table.schema.types, strict=True)}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": hf_features}})})
    out = new_root / DEFAULT_EPISODES_PATH.format(chunk_index=0, file_index=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    _write_json(_serialize(_aggregate_stats(per_episode_stats)), new_root / STATS_PATH)

    # convert_info
    info["codebase_version"] = "v3.0"
    info.pop("total_chunks", None)
    info.pop("total_videos", None)
    info["data_files_size_in_mb"] = DEFAULT_DATA_FILE_SIZE_IN_MB
    info["video_files_size_in_mb"] = DEFAULT_VIDEO_FILE_SIZE_IN_MB
    info["data_path"] = DEFAULT_DATA_PATH
    info["video_path"] = DEFAULT_VIDEO_PATH
    info["fps"] = int(info["fps"])
    for ft in info["features"].values():
        if ft["dtype"] != "video":
            ft["fps"] = info["fps"]
    _write_json(info, new_root / INFO_PATH)
    return new_root


def _hf_value_json(typ: pa.DataType) -> dict[str, Any]:
    """datasets' feature JSON for an inferred arrow type (informational schema metadata only)."""
    if pa.types.is_list(typ):
        return {"feature": _hf_value_json(typ.value_type), "_type": "List"}
    return {
        "dtype": {"int64": "int64", "double": "float64", "string": "string"}.get(str(typ), str(typ)),
        "_type": "Value",
    }


def expected_video_segments(root: Path) -> dict[int, dict[str, tuple[Path, float, float]]]:
    """episode -> camera key -> (mp4 path, from_timestamp, to_timestamp), read straight from meta/episodes.

    Tests use it to check that the fixture really placed episodes at non-zero offsets inside shared files.
    """
    info = json.loads((root / INFO_PATH).read_text(encoding="utf-8"))
    keys = [k for k, ft in info["features"].items() if ft["dtype"] == "video"]
    out: dict[int, dict[str, tuple[Path, float, float]]] = {}
    for path in sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            out[int(row["episode_index"])] = {
                k: (
                    root
                    / info["video_path"].format(
                        video_key=k,
                        chunk_index=row[f"videos/{k}/chunk_index"],
                        file_index=row[f"videos/{k}/file_index"],
                    ),
                    float(row[f"videos/{k}/from_timestamp"]),
                    float(row[f"videos/{k}/to_timestamp"]),
                )
                for k in keys
            }
    return out


def mean_abs_diff(a: U8Array, b: U8Array) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_close_frames(decoded: U8Array, written: U8Array, max_mean_abs: float) -> None:
    """Each decoded frame is within codec tolerance of the frame written at its index, and closer to it than to
    any other written frame of the episode (so an off-by-one or wrong-offset decode cannot pass)."""
    if decoded.shape != written.shape:
        raise AssertionError(f"decoded {decoded.shape} vs written {written.shape}")
    for i in range(len(written)):
        diffs = [mean_abs_diff(decoded[i], w) for w in written]
        if diffs[i] > max_mean_abs:
            raise AssertionError(f"frame {i}: mean abs diff {diffs[i]:.2f} > {max_mean_abs}")
        if int(np.argmin(diffs)) != i:
            raise AssertionError(f"frame {i} decodes closest to written frame {int(np.argmin(diffs))}: {diffs}")


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


__all__ = [
    "RefEpisode",
    "RefSpec",
    "assert_close_frames",
    "convert_v21_to_v30",
    "default_vcodec",
    "expected_video_segments",
    "frame_count",
    "write_tasks_parquet",
    "write_v21",
    "write_v30",
]
