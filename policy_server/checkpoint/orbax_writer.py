"""Write an orbax-layout PyTree directory with tensorstore, as orbax 0.11 writes one (for tests and benchmarks).

Why: the converter's tests and its memory benchmark need openpi-shaped JAX trees of any size (a Pi0 tree, a
full-size tree) without a JAX environment. Each array is a zarr v2 array with the metadata orbax writes
(`{"chunks": shape, "compressor": {"id": "zstd"}}`, giving `.zarray` files byte-identical to orbax's) in one OCDBT
database with orbax's OCDBT configuration, plus `_METADATA` in orbax's format, so `orbax_reader` reads it through
the same path as a real openpi checkpoint. Unlike orbax it writes the root database directly (no per-process
sub-databases merged afterwards); orbax restores either.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from policy_server.checkpoint.orbax_reader import METADATA_FILE, NNX_VALUE_LEAF

# orbax's OCDBT settings (orbax.checkpoint tensorstore_utils.add_ocdbt_write_options).
OCDBT_CONFIG = {"max_inline_value_bytes": 1024, "max_decoded_node_bytes": 100_000_000, "manifest_kind": "single"}
# Arrays above this are split into chunks along the first axis (orbax caps chunks at OCDBT's 2 GiB data files).
MAX_CHUNK_BYTES = 2**31
# How orbax records each array's sharding (base64 of the stored name -> JSON); restoring with orbax reads it.
SHARDING_FILE = "_sharding"
SINGLE_DEVICE_SHARDING = {"sharding_type": "SingleDeviceSharding", "device_str": "TFRT_CPU_0"}

ArrayMaker = Callable[[tuple[str, ...]], np.ndarray[Any, Any]]


def _zarr_dtype(dtype: np.dtype[Any]) -> str:
    return "bfloat16" if dtype.name == "bfloat16" else dtype.str


def write_orbax_tree(
    params_dir: Path,
    entries: Sequence[tuple[tuple[str, ...], tuple[int, ...], np.dtype[Any]]],
    make: ArrayMaker,
    *,
    root: str = "params",
    nnx_value: bool = True,
    ocdbt: bool = True,
) -> None:
    """Write `entries` (key path, shape, dtype) into `params_dir`, calling `make(path)` for one array at a time.

    Key paths are stored as openpi training stores them: under `root` and, with `nnx_value`, ending in 'value'.
    `ocdbt` False writes orbax's other layout: one zarr directory per array, `params_dir/<name>/`.
    """
    params_dir = Path(params_dir)
    params_dir.mkdir(parents=True, exist_ok=False)
    base = {"driver": "file", "path": str(params_dir.resolve())}
    context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
    tree: dict[str, Any] = {}
    sharding: dict[str, str] = {}
    for path, shape, dtype in entries:
        full = (root, *path, *((NNX_VALUE_LEAF,) if nnx_value else ()))
        name = ".".join(full)
        dtype = np.dtype(dtype)
        chunks = list(shape)
        while chunks and chunks[0] > 1 and math.prod(chunks) * dtype.itemsize > MAX_CHUNK_BYTES:
            chunks[0] = (chunks[0] + 1) // 2
        kvstore = {"driver": "ocdbt", "base": base, "path": name + "/", "config": OCDBT_CONFIG,
                   "assume_config": True} if ocdbt else {"driver": "file", "path": f"{base['path']}/{name}/"}
        spec = {
            "driver": "zarr",
            "kvstore": kvstore,
            "metadata": {"shape": list(shape), "chunks": chunks, "compressor": {"id": "zstd"},
                         "dtype": _zarr_dtype(dtype)},
            "create": True,
        }
        store = ts.open(spec, context=context).result()
        data = np.asarray(make(path))
        if tuple(data.shape) != tuple(shape) or data.dtype != dtype:
            raise ValueError(f"{'/'.join(path)}: made {data.dtype} {list(data.shape)}, declared {dtype} {list(shape)}")
        store.write(data).result()
        del data
        tree[str(full)] = {
            "key_metadata": [{"key": k, "key_type": 2} for k in full],
            "value_metadata": {"value_type": "jax.Array", "skip_deserialize": False, "write_shape": list(shape)},
        }
        sharding[base64.b64encode(name.encode()).decode()] = json.dumps(SINGLE_DEVICE_SHARDING)
    meta = {"tree_metadata": tree, "use_zarr3": False, "store_array_data_equal_to_fill_value": True,
            "custom_metadata": None}
    (params_dir / METADATA_FILE).write_text(json.dumps(meta))
    (params_dir / SHARDING_FILE).write_text(json.dumps(sharding, separators=(",", ":")))
