"""Reading safetensors files tensor by tensor with plain file reads, hashing as we go.

Why not mmap: pages of a memory-mapped file count toward the process's resident memory, so mapping a 7 GB
checkpoint and copying each tensor out of it peaks near twice the file size. Reading each tensor straight into
its final buffer keeps the peak near the file size (plus one tensor when a dtype conversion is needed).
Reading in file order also lets us hash the whole file in the same pass: the weight hash is the file's sha256.

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
"__metadata__": {...}}, then the data region; offsets are relative to the data region.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """The file is not a valid safetensors file; the message names the file and the problem."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsIndex:
    path: Path
    header_bytes: bytes
    data_start: int
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]

    @property
    def total_bytes(self) -> int:
        return self.data_start + max((e.end for e in self.entries.values()), default=0)


def read_index(path: Path) -> SafetensorsIndex:
    """Parse the header only (no tensor data is read)."""
    try:
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise SafetensorsError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw_len)
            if n > MAX_HEADER_BYTES:
                raise SafetensorsError(f"{path}: header of {n} bytes is implausible")
            header = f.read(n)
    except OSError as exc:
        raise SafetensorsError(f"{path}: cannot read ({exc})") from exc
    try:
        parsed = json.loads(header)
    except json.JSONDecodeError as exc:
        raise SafetensorsError(f"{path}: header is not valid JSON ({exc})") from exc
    metadata = parsed.pop("__metadata__", {}) or {}
    entries = {}
    for name, info in parsed.items():
        dtype = DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise SafetensorsError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')}")
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        if end - begin != math.prod(shape) * torch.empty((), dtype=dtype).element_size():
            raise SafetensorsError(f"{path}: tensor '{name}' {list(shape)} {dtype} has {end - begin} bytes")
        entries[name] = TensorEntry(name, dtype, shape, begin, end)
    return SafetensorsIndex(path, raw_len + header, 8 + n, entries, dict(metadata))


class _BackgroundHasher:
    """Feeds buffers to a hash on one worker thread, in order, so hashing overlaps the next file read
    (hashlib releases the GIL on large buffers). `flush()` waits for everything submitted."""

    def __init__(self, hasher: hashlib._Hash) -> None:
        self._hasher = hasher
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights-hash")
        self._pending: Future[None] | None = None

    def update(self, data: bytes | memoryview) -> None:
        self.flush()
        self._pending = self._pool.submit(self._hasher.update, data)

    def flush(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def close(self) -> None:
        self.flush()
        self._pool.shutdown()


def iter_tensors(index: SafetensorsIndex, hasher: hashlib._Hash | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) in file order, each read into its own buffer; feeds every byte to `hasher`.

    A yielded tensor may still be being hashed until the next one is read; callers only read it, and the
    hash is complete once the iterator is exhausted.
    """
    if hasher is None:
        yield from _read_tensors(index, None)
        return
    background = _BackgroundHasher(hasher)
    try:
        background.update(index.header_bytes)
        yield from _read_tensors(index, background)
    finally:
        background.close()


def _read_tensors(index: SafetensorsIndex, hasher: _BackgroundHasher | None) -> Iterator[tuple[str, torch.Tensor]]:
    ordered = sorted(index.entries.values(), key=lambda e: e.begin)
    position = 0
    with index.path.open("rb", buffering=0) as f:
        f.seek(index.data_start)
        for entry in ordered:
            if entry.begin != position:
                gap = f.read(entry.begin - position)  # safetensors has no gaps, but be exact about hashing
                if hasher is not None:
                    hasher.update(gap)
            tensor = torch.empty(entry.shape, dtype=entry.dtype)
            # A byte view of the tensor's own memory: the file is read straight into the tensor.
            view = tensor.view(-1).view(torch.uint8).numpy().data if entry.nbytes else memoryview(b"")
            got = 0
            while got < entry.nbytes:
                n = f.readinto(view[got:])
                if not n:
                    raise SafetensorsError(f"{index.path}: file ends inside tensor '{entry.name}'")
                got += n
            if hasher is not None:
                hasher.update(view)
            position = entry.end
            yield entry.name, tensor
        if hasher is not None:
            while chunk := f.read(1 << 20):  # trailing bytes, if any
                hasher.update(chunk)


FLOAT_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})


@dataclass(frozen=True)
class NonFinite:
    """What a tensor holds besides finite numbers: counts and the index of the first non-finite element."""

    nan: int
    inf: int
    first: tuple[int, ...]

    def describe(self) -> str:
        parts = [f"{count} {label} value{'s' if count != 1 else ''}"
                 for count, label in ((self.nan, "NaN"), (self.inf, "infinite")) if count]
        return f"{' and '.join(parts)} (first at {list(self.first)})"


def find_non_finite(tensor: torch.Tensor) -> NonFinite | None:
    """None when every element of a floating-point tensor is finite (integer tensors always are).

    The check is one vectorised reduction per tensor: `aminmax` propagates NaN and an infinity is its own min
    or max, so both ends are finite exactly when every element is. It allocates nothing the size of the tensor,
    unlike `isfinite(t).all()` (a bool tensor as large as the weights and several times slower on CPU);
    the element-wise pass that counts and locates runs only when the tensor is refused.
    """
    if tensor.dtype not in FLOAT_DTYPES or tensor.numel() == 0:
        return None
    lo, hi = torch.aminmax(tensor.reshape(-1))
    if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
        return None
    flat = tensor.reshape(-1)
    first_flat = int(torch.nonzero(~torch.isfinite(flat))[0, 0])
    first: list[int] = []
    for size in reversed(tensor.shape):
        first.append(first_flat % size)
        first_flat //= size
    return NonFinite(nan=int(torch.isnan(flat).sum()), inf=int(torch.isinf(flat).sum()),
                     first=tuple(reversed(first)))


def file_sha256(path: Path, h: Any = None) -> str:
    """sha256 of the file's bytes; with `h`, the bytes go into that running hash (whose hex digest is returned)."""
    h = hashlib.sha256() if h is None else h
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return str(h.hexdigest())


_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def write_streaming(
    path: Path,
    entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
    make_tensor: Callable[[str, torch.dtype, tuple[int, ...]], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> int:
    """Write a safetensors file one tensor at a time (never holding more than one in memory).

    Used to produce full-size checkpoints (billions of parameters) on machines that could not hold the whole
    model. Returns the number of bytes written.
    """
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data region to 8 bytes
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, dtype, shape in entries:
            tensor = make_tensor(name, dtype, shape).to(dtype).contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise SafetensorsError(f"{name}: made {list(tensor.shape)}, declared {list(shape)}")
            # The array itself, not .tobytes(): a copy would double the memory of the largest tensor.
            if tensor.numel():
                f.write(tensor.view(-1).view(torch.uint8).numpy().data)
    return 8 + len(raw) + offset
