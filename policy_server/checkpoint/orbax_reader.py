"""Read an orbax PyTree checkpoint (what openpi training writes as `<run>/<step>/params/`) without JAX.

Why tensorstore and not orbax: orbax needs JAX, and serving or converting a fine-tune should not need a JAX
environment. orbax itself stores every array through tensorstore, so tensorstore reads the same bytes exactly.

Layout (orbax 0.11, as checked against files orbax wrote):
    params/_METADATA            JSON {"tree_metadata": {"('params', 'PaliGemma', ..., 'value')":
                                      {"key_metadata": [{"key": ...}, ...], "value_metadata": {...}}},
                                      "use_zarr3": false, ...}
    params/manifest.ocdbt       the OCDBT database (one key-value store for every array), with its data files
    params/d/*, params/ocdbt.process_*/   under d/ and the per-process sub-databases
    params/_sharding, params/array_metadatas/, params/_CHECKPOINT_METADATA
Each array is a zarr (v2, or v3 with use_zarr3) array under the key "<names joined by '.'>/" of that store.
Without manifest.ocdbt (orbax with OCDBT off) each array is a zarr directory `params/<names joined by '.'>/`.

Memory: arrays are read one at a time, and a layer stack by blocks of rows aligned to its stored chunks (orbax
writes one chunk per array unless it exceeds OCDBT's 2 GiB data files): a read costs about one chunk, compressed
and decoded, never the whole tree.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

METADATA_FILE = "_METADATA"
OCDBT_MANIFEST = "manifest.ocdbt"
ZARR2_META = ".zarray"
ZARR3_META = "zarr.json"
# openpi strips this from every key path: nnx.State leaves, as openpi training saves them, end in "value".
NNX_VALUE_LEAF = "value"
UNFINISHED_MARKER = ".orbax-checkpoint-tmp"


class OrbaxError(ValueError):
    """The orbax directory cannot be read; the message names the file or array and the cause."""


@dataclass(frozen=True)
class ArrayInfo:
    """One stored array: its key path (as a '/'-joined name), the name it is stored under, shape, dtype, and the
    first-axis extent of its stored chunks (a read decodes whole chunks)."""

    key: str
    stored_name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunk_rows: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _key_paths_from_metadata(meta: dict[str, Any], where: Path) -> list[tuple[str, ...]]:
    tree = meta.get("tree_metadata")
    if not isinstance(tree, dict):
        raise OrbaxError(f"{where}: no 'tree_metadata' object (not an orbax PyTree checkpoint of a known version)")
    paths = []
    for raw_key, entry in tree.items():
        keys = None
        if isinstance(entry, dict) and isinstance(entry.get("key_metadata"), list):
            keys = tuple(str(k["key"]) for k in entry["key_metadata"] if isinstance(k, dict) and "key" in k)
        if not keys:
            try:
                parsed = ast.literal_eval(raw_key)  # "('params', 'PaliGemma', ...)": a tuple literal, never code
            except (ValueError, SyntaxError):
                raise OrbaxError(f"{where}: cannot read the key path {raw_key!r}") from None
            keys = tuple(str(k) for k in parsed) if isinstance(parsed, tuple) else (str(parsed),)
        value_meta = entry.get("value_metadata", {}) if isinstance(entry, dict) else {}
        if isinstance(value_meta, dict) and value_meta.get("skip_deserialize"):
            continue
        paths.append(keys)
    return paths


class OrbaxTree:
    """The arrays of one orbax PyTree directory, listed from its metadata and read one at a time.

    `keys` drop a leading 'params' level (openpi nests the tree under it) and a trailing 'value' leaf on every
    path (nnx.State), the same normalisation openpi's `restore_params` applies.
    """

    def __init__(self, params_dir: Path) -> None:
        self.directory = Path(params_dir)
        if UNFINISHED_MARKER in str(self.directory):
            raise OrbaxError(f"{self.directory}: an unfinished orbax save (temporary directory); use a finished step")
        if not self.directory.is_dir():
            raise OrbaxError(f"{self.directory}: not a directory")
        meta_path = self.directory / METADATA_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise OrbaxError(f"{meta_path} is missing: not an orbax PyTree checkpoint, or an incomplete copy") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OrbaxError(f"{meta_path}: not valid JSON ({exc}); the file is damaged or truncated") from None
        if not isinstance(meta, dict):
            raise OrbaxError(f"{meta_path}: expected a JSON object")
        self.zarr_driver = "zarr3" if meta.get("use_zarr3") else "zarr"
        self.ocdbt = (self.directory / OCDBT_MANIFEST).is_file()
        paths = _key_paths_from_metadata(meta, meta_path)
        if not paths:
            raise OrbaxError(f"{meta_path}: lists no arrays")
        strip_value = all(p[-1] == NNX_VALUE_LEAF for p in paths)
        strip_root = all(p[0] == "params" for p in paths)
        self._context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
        self._stored_keys = self._list_stored_keys()
        self.arrays: dict[str, ArrayInfo] = {}
        for path in sorted(paths):
            stored = ".".join(path)
            key_path = path[1 if strip_root else 0: len(path) - (1 if strip_value else 0)]
            self.arrays["/".join(key_path)] = self._open_info("/".join(key_path), stored)

    @property
    def layout(self) -> str:
        return f"{'ocdbt' if self.ocdbt else 'per-array'} {self.zarr_driver}"

    def _kvstore(self, stored_name: str) -> dict[str, Any]:
        base = self.directory.resolve().as_uri() + "/"
        if self.ocdbt:
            return {"driver": "ocdbt", "base": base, "path": stored_name + "/"}
        return {"driver": "file", "path": str(self.directory.resolve() / stored_name) + "/"}

    def _list_stored_keys(self) -> set[str] | None:
        """Every array metadata key the store holds, to name a missing array before any read (OCDBT only)."""
        if not self.ocdbt:
            return None
        base = self.directory.resolve().as_uri() + "/"
        try:
            store = ts.KvStore.open({"driver": "ocdbt", "base": base}, context=self._context).result()
            return {k.decode() for k in store.list().result()}
        except Exception as exc:  # tensorstore raises ValueError/OSError subclasses; any of them means unreadable
            raise OrbaxError(f"{self.directory / OCDBT_MANIFEST}: the OCDBT database cannot be read ({exc}); "
                             "the directory is damaged or an incomplete copy") from None

    def _open(self, key: str, stored_name: str) -> Any:
        meta_name = ZARR3_META if self.zarr_driver == "zarr3" else ZARR2_META
        if self._stored_keys is not None and f"{stored_name}/{meta_name}" not in self._stored_keys:
            raise OrbaxError(f"{self.directory}: array '{key}' (stored as '{stored_name}') is listed in "
                             f"{METADATA_FILE} but missing from the OCDBT database; the directory is incomplete")
        if self._stored_keys is None and not (self.directory / stored_name / meta_name).is_file():
            raise OrbaxError(f"{self.directory / stored_name / meta_name} is missing (array '{key}')")
        spec = {"driver": self.zarr_driver, "kvstore": self._kvstore(stored_name), "open": True}
        try:
            return ts.open(spec, context=self._context).result()
        except Exception as exc:
            raise OrbaxError(f"{self.directory}: array '{key}' cannot be opened ({exc})") from None

    def _open_info(self, key: str, stored_name: str) -> ArrayInfo:
        store = self._open(key, stored_name)
        shape = tuple(int(n) for n in store.shape)
        chunk = store.chunk_layout.read_chunk.shape
        rows = int(chunk[0]) if shape and chunk is not None and chunk[0] else (shape[0] if shape else 1)
        return ArrayInfo(key=key, stored_name=stored_name, shape=shape, dtype=np.dtype(store.dtype.numpy_dtype),
                         chunk_rows=max(1, min(rows, shape[0] if shape else 1)))

    def row_block(self, key: str, row: int) -> tuple[int, int]:
        """The [start, stop) range of first-axis rows stored in the same chunks as `row`: the smallest read that
        holds it (orbax writes one chunk per array unless it exceeds 2 GiB)."""
        info = self.arrays[key]
        start = row - row % info.chunk_rows
        return start, min(start + info.chunk_rows, info.shape[0])

    def read(self, key: str, rows: tuple[int, int] | None = None) -> np.ndarray[Any, Any]:
        """Array `key` (or its first-axis rows [start, stop)) as numpy, checked for its shape; bfloat16 arrays
        come as ml_dtypes.bfloat16."""
        info = self.arrays.get(key)
        if info is None:
            raise OrbaxError(f"{self.directory}: no array '{key}'")
        store = self._open(key, info.stored_name)
        expected = info.shape
        if rows is not None:
            store = store[rows[0]:rows[1]]
            expected = (rows[1] - rows[0], *info.shape[1:])
        try:
            data = np.asarray(store.read().result())
        except Exception as exc:
            raise OrbaxError(f"{self.directory}: array '{key}' (stored as '{info.stored_name}') cannot be read "
                             f"({exc}); the directory is damaged or truncated") from None
        if tuple(data.shape) != expected:
            raise OrbaxError(f"{self.directory}: array '{key}' read as {list(data.shape)}, expected {list(expected)}")
        return data
