"""LeRobot on-disk conventions shared by the reader and the writer: paths, info.json features, names, tasks.

Why separate: the reader and the writer must agree on every path template, column name and metadata field;
keeping them here makes a format fact a single edit. Facts (LeRobot v2.1 = lerobot <= 0.3, v3.0 = >= 0.4):

- v3.0: `meta/tasks.parquet` is a pandas DataFrame whose index is the task text and whose column is
  `task_index`; read with pyarrow the text is a column named after the index ("task") or `__index_level_0__`.
- v2.x: `meta/tasks.jsonl` rows `{"task_index", "task"}`, `meta/episodes.jsonl` rows
  `{"episode_index", "tasks", "length"}`; v2.1 adds `meta/episodes_stats.jsonl`, v2.0 has `meta/stats.json`.
- Feature `names` may be a list, a dict of lists (`{"motors": [...]}`), or null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from robodata.dataset import CameraInfo, DatasetError, FeatureSpec, generic_names

V30 = "v3.0"
V21 = "v2.1"
V20 = "v2.0"

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
V3_TASKS_PATH = "meta/tasks.parquet"
V3_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V2_TASKS_PATH = "meta/tasks.jsonl"
V2_EPISODES_PATH = "meta/episodes.jsonl"
V21_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
V2_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

STATE_KEY = "observation.state"
ACTION_KEY = "action"
CAMERA_PREFIX = "observation.images."
# Bookkeeping columns every LeRobot dataset has, with the dtype LeRobot declares for them.
BOOKKEEPING_FEATURES: dict[str, str] = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
CAMERA_DTYPES = ("video", "image")


def load_json(path: Path) -> Any:
    """Parse a JSON file, turning a missing file or bad JSON into a DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: invalid JSON: {err}") from err


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (blank lines skipped); each row must be an object."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}:{lineno}: invalid JSON: {err}") from err
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{lineno}: expected an object, got {type(row).__name__}")
        rows.append(row)
    return rows


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def require(obj: Mapping[str, Any], key: str, where: str, expected: str) -> Any:
    """obj[key], or a DatasetError naming the file/field and what was expected."""
    if key not in obj:
        raise DatasetError(f"{where}: missing field '{key}' (expected {expected})")
    return obj[key]


def require_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = require(obj, key, where, "an integer")
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise DatasetError(f"{where}: field '{key}' must be an integer, got {value!r}")
    return int(value)


def read_fps(info: Mapping[str, Any], where: str) -> float:
    value = require(info, "fps", where, "a positive number")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise DatasetError(f"{where}: field 'fps' must be a positive number, got {value!r}")
    return float(value)


# Placeholder spellings seen in the wild for the same value ({chunk_index} vs {chunk}, ...).
_TEMPLATE_ALIASES = {
    "chunk_index": ("chunk", "episode_chunk"),
    "file_index": ("file",),
    "episode_chunk": ("chunk",),
}


def format_template(template: str, where: str, **values: Any) -> str:
    """Fill a path template from info.json, naming the template when a placeholder is unknown."""
    filled = dict(values)
    for key, aliases in _TEMPLATE_ALIASES.items():
        if key in values:
            for alias in aliases:
                filled.setdefault(alias, values[key])
    try:
        return template.format(**filled)
    except (KeyError, IndexError, ValueError) as err:
        raise DatasetError(
            f"{where}: cannot fill path template '{template}' with {sorted(values)}: {err!r}"
        ) from err


def flatten_names(raw: Any) -> list[str] | None:
    """Per-dimension names from a feature's `names`: a list, a dict of lists, or None."""
    if raw is None:
        return None
    if isinstance(raw, list | tuple):
        if all(isinstance(n, str) for n in raw):
            return [str(n) for n in raw]
        if all(isinstance(n, list | tuple) for n in raw):  # e.g. [["x", "y"]] in some ported datasets
            return [str(n) for sub in raw for n in sub]
        return None
    if isinstance(raw, dict):
        flat: list[str] = []
        for value in raw.values():
            sub = flatten_names(value)
            if sub is None:
                return None
            flat.extend(sub)
        return flat
    return None


def parse_features(info: Mapping[str, Any], where: str) -> dict[str, FeatureSpec]:
    """`info["features"]` as FeatureSpecs, with names flattened; raises naming the feature on bad entries."""
    raw = require(info, "features", where, "an object of features")
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{where}: field 'features' must be a non-empty object")
    out: dict[str, FeatureSpec] = {}
    for key, ft in raw.items():
        fw = f"{where}: features['{key}']"
        if not isinstance(ft, dict):
            raise DatasetError(f"{fw} must be an object, got {type(ft).__name__}")
        dtype = require(ft, "dtype", fw, "a dtype string")
        shape = require(ft, "shape", fw, "a list of integers")
        if not isinstance(dtype, str):
            raise DatasetError(f"{fw}.dtype must be a string, got {dtype!r}")
        if not isinstance(shape, list | tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise DatasetError(f"{fw}.shape must be a list of non-negative integers, got {shape!r}")
        names = flatten_names(ft.get("names"))
        out[str(key)] = FeatureSpec(
            name=str(key),
            dtype=dtype,
            shape=tuple(int(s) for s in shape),
            names=tuple(names) if names else None,
        )
    return out


def vector_names(
    features: Mapping[str, FeatureSpec], key: str, where: str
) -> tuple[tuple[str, ...], str | None]:
    """Per-dimension names of a 1-D feature and an optional note when generic names had to be made up."""
    if key not in features:
        raise DatasetError(
            f"{where}: no feature '{key}' (expected a float vector); features are {sorted(features)}"
        )
    spec = features[key]
    if len(spec.shape) != 1:
        raise DatasetError(f"{where}: features['{key}'].shape must be [dim], got {list(spec.shape)}")
    dim = spec.shape[0]
    prefix = "action" if key == ACTION_KEY else "state" if key == STATE_KEY else key.replace(".", "_")
    if spec.names is None:
        return generic_names(
            prefix, dim
        ), f"'{key}' has no names in info.json; using {prefix}_0..{prefix}_{dim - 1}"
    if len(spec.names) != dim:
        return generic_names(prefix, dim), (
            f"'{key}' names ({len(spec.names)}) do not match its dimension {dim}; using generic names"
        )
    return spec.names, None


def is_camera_key(key: str, spec: FeatureSpec) -> bool:
    """A camera is any feature of dtype video or image, whatever its key.

    That is LeRobot's own rule (`LeRobotDatasetMetadata.camera_keys`). Keys are usually `observation.images.*`,
    but datasets created with custom features use others (openpi's LIBERO conversion: `image`, `wrist_image`);
    matching on the key prefix silently dropped those cameras.
    """
    return spec.dtype in CAMERA_DTYPES


def camera_short_name(key: str) -> str:
    if key.startswith(CAMERA_PREFIX):
        return key[len(CAMERA_PREFIX) :]
    return key[len("observation.") :] if key.startswith("observation.") else key


def camera_info(key: str, spec: FeatureSpec, where: str) -> CameraInfo:
    """Camera size from the feature shape: HWC unless names say channels come first (CHW)."""
    if len(spec.shape) != 3:
        raise DatasetError(
            f"{where}: features['{key}'].shape must have 3 dims (H, W, C), got {list(spec.shape)}"
        )
    names = [n.lower() for n in spec.names] if spec.names else None
    channel_words = {"channel", "channels", "c", "rgb"}
    if names is not None and names[0] in channel_words:
        _, h, w = spec.shape
    elif names is not None and names[-1] in channel_words:
        h, w, _ = spec.shape
    elif spec.shape[-1] in (1, 3, 4):
        h, w, _ = spec.shape
    elif spec.shape[0] in (1, 3, 4):
        _, h, w = spec.shape
    else:
        raise DatasetError(
            f"{where}: cannot tell the channel axis of features['{key}'] shape {list(spec.shape)}"
        )
    return CameraInfo(name=camera_short_name(key), height=int(h), width=int(w), source_key=key)


def find_cameras(features: Mapping[str, FeatureSpec], where: str) -> tuple[CameraInfo, ...]:
    cams = [camera_info(k, s, where) for k, s in features.items() if is_camera_key(k, s)]
    seen: dict[str, str] = {}
    for cam in cams:
        if cam.name in seen:
            raise DatasetError(
                f"{where}: cameras '{seen[cam.name]}' and '{cam.source_key}' share the name '{cam.name}'"
            )
        seen[cam.name] = cam.source_key
    return tuple(cams)


def read_tasks_parquet(path: Path) -> dict[int, str]:
    """task_index -> task text from a v3 `meta/tasks.parquet`, whichever way pandas stored the text."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"{path}: cannot read parquet: {err}") from err
    if "task_index" not in table.column_names:
        raise DatasetError(f"{path}: missing column 'task_index'; columns are {table.column_names}")
    text_col: str | None = None
    meta = table.schema.metadata or {}
    if b"pandas" in meta:
        try:
            pandas_meta = json.loads(meta[b"pandas"])
            for idx in pandas_meta.get("index_columns", []):
                if isinstance(idx, str) and idx in table.column_names:
                    text_col = idx
                    break
        except (json.JSONDecodeError, AttributeError):
            text_col = None
    if text_col is None:
        for candidate in ("task", "__index_level_0__"):
            if candidate in table.column_names:
                text_col = candidate
                break
    if text_col is None:
        strings = [
            name
            for name, typ in zip(table.column_names, table.schema.types, strict=True)
            if pa.types.is_string(typ) or pa.types.is_large_string(typ)
        ]
        if len(strings) == 1:
            text_col = strings[0]
    if text_col is None:
        raise DatasetError(
            f"{path}: cannot find the task text; expected a 'task' or '__index_level_0__' column "
            f"(pandas index), columns are {table.column_names}"
        )
    indices = table.column("task_index").to_pylist()
    texts = table.column(text_col).to_pylist()
    out: dict[int, str] = {}
    for i, (idx, text) in enumerate(zip(indices, texts, strict=True)):
        if idx is None or text is None:
            raise DatasetError(f"{path}: row {i} has a null task_index or task text")
        out[int(idx)] = str(text)
    return out


def pandas_index_metadata(index_name: str, columns: list[tuple[str, str]]) -> bytes:
    """The `pandas` schema metadata pyarrow writes for a DataFrame with a named string index.

    Writing it lets pandas (LeRobot's loader) read `meta/tasks.parquet` back with the task text as the index.
    `columns` are (name, numpy dtype) of the data columns; the index column is a string column.
    """
    cols: list[dict[str, Any]] = [
        {"name": name, "field_name": name, "pandas_type": dtype, "numpy_type": dtype, "metadata": None}
        for name, dtype in columns
    ]
    cols.append(
        {
            "name": index_name,
            "field_name": index_name,
            "pandas_type": "unicode",
            "numpy_type": "object",
            "metadata": None,
        }
    )
    meta = {
        "index_columns": [index_name],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": cols,
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return json.dumps(meta).encode("utf-8")
