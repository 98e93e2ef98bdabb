"""Parquet/Arrow columns to numpy, with the checks a dataset reader needs.

Why: LeRobot stores vectors as fixed-size lists (older writers: variable lists), scalars as plain columns
(some ported datasets: one-element lists), and images as `{bytes, path}` structs. Converting all of them in
one place means a wrong shape or a null is reported with the file and column, not as an index error later.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, UnidentifiedImageError

from robodata.dataset import DatasetError, ImageArray


def _combined(table: pa.Table, name: str, where: str) -> Any:
    if name not in table.column_names:
        raise DatasetError(f"{where}: missing column '{name}'; columns are {table.column_names}")
    col = table.column(name).combine_chunks()
    if col.null_count:
        raise DatasetError(f"{where}: column '{name}' has {col.null_count} null values")
    return col


def column_matrix(table: pa.Table, name: str, dim: int, where: str) -> npt.NDArray[np.float32]:
    """A vector column as float32 [N, dim]; every row must hold exactly `dim` values."""
    col = _combined(table, name, where)
    n = len(col)
    typ = col.type
    if pa.types.is_fixed_size_list(typ):
        if typ.list_size != dim:
            raise DatasetError(f"{where}: column '{name}' holds vectors of {typ.list_size}, expected {dim}")
        values = col.flatten()
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if n and not np.all(lengths == dim):
            bad = int(np.flatnonzero(lengths != dim)[0])
            raise DatasetError(
                f"{where}: column '{name}' row {bad} has {lengths[bad]} values, expected {dim}"
            )
        values = col.flatten()
    elif dim == 1 and (pa.types.is_floating(typ) or pa.types.is_integer(typ)):
        values = col
    else:
        raise DatasetError(f"{where}: column '{name}' has type {typ}, expected a list of {dim} numbers")
    if values.null_count:
        raise DatasetError(f"{where}: column '{name}' has null entries inside its vectors")
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise DatasetError(f"{where}: column '{name}' holds {values.type}, expected numbers")
    arr = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return np.ascontiguousarray(arr.reshape(n, dim))


def column_float64(table: pa.Table, name: str, where: str) -> npt.NDArray[np.float64]:
    """A scalar numeric column as float64 [N] (a column of one-element lists is accepted too)."""
    col = _combined(table, name, where)
    typ = col.type
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        col = col.flatten()
        if len(col) != table.num_rows:
            raise DatasetError(f"{where}: column '{name}' must hold one value per row")
        typ = col.type
    if not (pa.types.is_floating(typ) or pa.types.is_integer(typ)):
        raise DatasetError(f"{where}: column '{name}' has type {typ}, expected numbers")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def column_int64(table: pa.Table, name: str, where: str) -> npt.NDArray[np.int64]:
    values = column_float64(table, name, where)
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise DatasetError(f"{where}: column '{name}' must hold integers")
    return values.astype(np.int64)


def decode_image_bytes(data: bytes, where: str) -> ImageArray:
    """PNG/JPEG (anything PIL reads) bytes to RGB uint8 [H, W, 3]."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetError(f"{where}: cannot decode image bytes: {err}") from err


def image_column(table: pa.Table, name: str, root: Path, where: str) -> ImageArray:
    """An image column (`{bytes, path}` structs, or raw binary) decoded to RGB uint8 [N, H, W, 3].

    When a struct carries no bytes, `path` is resolved against the dataset root (LeRobot keeps bytes
    embedded; a path-only cell is how non-embedded HF image columns look).
    """
    col = _combined(table, name, where)
    typ = col.type
    cells: list[Any] = col.to_pylist()
    frames: list[ImageArray] = []
    for i, cell in enumerate(cells):
        cw = f"{where}: column '{name}' row {i}"
        if isinstance(cell, dict):
            data = cell.get("bytes")
            if data is None:
                rel = cell.get("path")
                if not rel:
                    raise DatasetError(f"{cw}: image struct has neither bytes nor path")
                candidate = Path(rel) if Path(rel).is_absolute() else root / rel
                if not candidate.is_file():
                    raise DatasetError(f"{cw}: image struct has no bytes and path '{rel}' does not exist")
                data = candidate.read_bytes()
        elif isinstance(cell, bytes | bytearray):
            data = bytes(cell)
        else:
            raise DatasetError(
                f"{cw}: expected an image struct {{bytes, path}} or bytes, column type is {typ}"
            )
        frames.append(decode_image_bytes(data, cw))
    if not frames:
        raise DatasetError(f"{where}: column '{name}' has no rows")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DatasetError(f"{where}: column '{name}' images differ in size: {sorted(shapes)}")
    return np.stack(frames)
