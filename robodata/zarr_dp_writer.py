"""Write Diffusion-Policy ReplayBuffer zarr stores (zarr format 2, directory or `.zarr.zip`).

Why: tests need real DP stores, and exporting our recordings for DP training wants the same layout DP's
ReplayBuffer writes: `data/<key>` chunked only along time (about 2 MB per chunk), Blosc lz4 level 5 without
shuffle ("default") or zstd level 5 with bit-shuffle ("disk"), and an uncompressed int64
`meta/episode_ends`. Every array is written once, so a zip store never holds duplicate entries.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import numpy.typing as npt
import zarr
from zarr.storage import LocalStore, ZipStore

from robodata.dataset import DatasetError

COMPRESSORS = ("default", "disk")
CHUNK_TARGET_BYTES = 2 * 1024 * 1024


def _compressor(name: str) -> numcodecs.abc.Codec:
    if name == "default":
        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
    if name == "disk":
        return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    raise DatasetError(f"compressor must be one of {COMPRESSORS}, got '{name}'")


def _time_chunk(shape: tuple[int, ...], itemsize: int) -> int:
    """Rows per chunk so a chunk holds about CHUNK_TARGET_BYTES (at least 1 row)."""
    row_bytes = itemsize * math.prod(shape[1:]) if len(shape) > 1 else itemsize
    return max(1, min(shape[0], CHUNK_TARGET_BYTES // max(row_bytes, 1)))


def write_dp_zarr(
    path: str | Path,
    episodes: Sequence[Mapping[str, npt.ArrayLike]],
    compressor: str = "default",
    overwrite: bool = False,
) -> Path:
    """Write episodes (each {key: array [T_i, ...]}, same keys and per-key trailing shape) to `path`.

    A path ending in `.zip` gives a single-file ZipStore, anything else a directory store.
    """
    out = Path(path)
    if not episodes:
        raise DatasetError(f"{out}: no episodes to write")
    keys = list(episodes[0])
    if not keys:
        raise DatasetError(f"{out}: episode 0 has no arrays")
    columns: dict[str, list[npt.NDArray[Any]]] = {k: [] for k in keys}
    ends: list[int] = []
    total = 0
    for i, ep in enumerate(episodes):
        if sorted(ep) != sorted(keys):
            raise DatasetError(f"{out}: episode {i} has keys {sorted(ep)}, expected {sorted(keys)}")
        lengths = {k: np.asarray(v).shape[0] if np.asarray(v).ndim else -1 for k, v in ep.items()}
        if len(set(lengths.values())) != 1 or min(lengths.values()) <= 0:
            raise DatasetError(
                f"{out}: episode {i} arrays must share a non-zero first dimension, got {lengths}"
            )
        for k in keys:
            arr = np.asarray(ep[k])
            if columns[k] and arr.shape[1:] != columns[k][0].shape[1:]:
                raise DatasetError(
                    f"{out}: episode {i} data/{k} has trailing shape {arr.shape[1:]}, "
                    f"expected {columns[k][0].shape[1:]}"
                )
            columns[k].append(arr)
        total += next(iter(lengths.values()))
        ends.append(total)

    if out.exists():
        if not overwrite:
            raise DatasetError(f"{out}: already exists (set overwrite=True)")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    store: ZipStore | LocalStore = (
        ZipStore(str(out), mode="w") if out.suffix == ".zip" else LocalStore(str(out))
    )
    try:
        root = zarr.open_group(store=store, mode="w", zarr_format=2)
        data = root.require_group("data")
        meta = root.require_group("meta")
        codec = _compressor(compressor)
        for k in keys:
            values = np.concatenate(columns[k], axis=0)
            chunks = (_time_chunk(values.shape, values.dtype.itemsize), *values.shape[1:])
            zarr_arr = data.create_array(
                k, shape=values.shape, chunks=chunks, dtype=values.dtype, compressors=codec
            )
            zarr_arr[...] = values
        ends_arr = meta.create_array(
            "episode_ends", shape=(len(ends),), chunks=(max(len(ends), 1),), dtype=np.int64, compressors=None
        )
        ends_arr[...] = np.asarray(ends, dtype=np.int64)
    finally:
        if isinstance(store, ZipStore):
            store.close()
    return out
