"""Convert an openpi JAX training step (`<run>/<step>/params` + `assets/`) into a servable checkpoint directory.

What a step holds: `params/` (an orbax PyTree, read by `orbax_reader` without JAX) and
`assets/<asset_id>/norm_stats.json` (what openpi's data pipeline normalized with). What comes out is the openpi
PyTorch layout the loader already serves: `model.safetensors`, `config.json` (with explicit sizes under
`model_extensions` when they match no named variant), `assets/<asset_id>/norm_stats.json` and the tokenizer.

Streaming: tensors are written one at a time (`write_streaming`); each stored JAX array is read once and
sliced into its layers, so the peak memory is about the largest stored array (one layer stack) plus one
converted tensor, never the whole model.

Atomicity: everything is written into a temporary sibling directory that is renamed to the output only when
complete, so an interrupted conversion never leaves a directory that looks servable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from policy_norm.checkpoint import find_openpi_norm_stats
from policy_norm.errors import NormConfigError, NormStatsError
from policy_norm.formats import read_openpi_norm_stats
from policy_server.checkpoint.layouts import CONFIG_FILE, WEIGHTS_FILE
from policy_server.checkpoint.openpi_jax import (
    InferredSizes,
    OutputTensor,
    check_tree,
    infer_sizes,
    plan_outputs,
)
from policy_server.checkpoint.orbax_reader import METADATA_FILE, OrbaxTree
from policy_server.checkpoint.safetensors_io import file_sha256, write_streaming
from policy_server.checkpoint.writer import WriteOptions, openpi_config_json
from policy_server.model.dtype_policy import DtypePolicy, param_dtype
from policy_server.tokenizer import PALIGEMMA_TOKENIZER_URL, TokenizerError, find_tokenizer_model

PARAMS_DIR = "params"
ASSETS_DIR = "assets"
NORM_STATS_FILE = "norm_stats.json"
TOKENIZER_OUT = "assets/tokenizer.model"
# Where openpi itself caches the PaliGemma tokenizer it downloads (`$OPENPI_DATA_HOME/big_vision/...`).
OPENPI_DATA_HOME_ENV = "OPENPI_DATA_HOME"
OPENPI_TOKENIZER = "big_vision/paligemma_tokenizer.model"
# Bumped whenever the conversion's output for the same input changes, so cached conversions are redone.
CONVERTER_VERSION = "1"
StoreDtype = Literal["float32", "bfloat16"]


class ConvertError(ValueError):
    """The step cannot be converted as asked; the message names the file, array or option and the cause."""


@dataclass(frozen=True)
class ConvertOptions:
    dtype: StoreDtype = "float32"
    asset_id: str | None = None
    # Convert without norm stats only when asked explicitly: a model served without them is never normalized.
    allow_no_norm_stats: bool = False
    # Not recorded in the weights: openpi's Pi0.5 defaults, to confirm against the training config.
    action_horizon: int = 50
    max_token_len: int = 200
    tokenizer: Path | None = None


@dataclass
class ConvertReport:
    step_dir: Path
    out_dir: Path
    sizes: InferredSizes
    dtype: StoreDtype
    key_count: int
    weights_bytes: int
    weights_sha256: str
    tree_layout: str
    asset_id: str | None
    norm_stats: Path | None
    tokenizer: str
    to_confirm: list[str] = field(default_factory=list)

    def text(self) -> str:
        s = self.sizes
        g = "width {0.width}, depth {0.depth}, mlp {0.mlp_dim}, heads {0.num_heads}/kv {0.num_kv_heads}/" \
            "head_dim {0.head_dim}"
        v = s.vision
        lines = [
            f"converted {self.step_dir} -> {self.out_dir}",
            f"  params: orbax ({self.tree_layout})",
            f"  Pi0.5 detected by: {s.detected_by}",
            f"  LLM:    {g.format(s.llm)}, vocab {s.vocab_size}",
            f"  expert: {g.format(s.expert)}",
            f"  vision: image {v.image_size}, patch {v.patch_size}, width {v.width}, depth {v.depth}, "
            f"mlp {v.mlp_dim}, heads {v.num_heads}",
            f"  action_dim {s.action_dim}",
            f"  dtype: {self.dtype}" + (" (openpi's inference rule: norms, adaRMS dense, patch/position embeddings "
                                        "and action/time projections float32)" if self.dtype == "bfloat16" else ""),
            f"  keys: {self.key_count}, {WEIGHTS_FILE} {self.weights_bytes / 2**20:.1f} MiB",
            f"  sha256: {self.weights_sha256}",
            "  norm stats: " + (f"assets/{self.asset_id}/{NORM_STATS_FILE} (copied from {self.norm_stats})"
                                if self.norm_stats else "NONE (--no-norm-stats)"),
            f"  tokenizer: {self.tokenizer}",
        ]
        lines += [f"  CONFIRM: {item}" for item in self.to_confirm]
        return "\n".join(lines)


def params_dir(step_dir: Path) -> Path:
    """The orbax params directory of a step (`STEP/params`), or `step_dir` itself when it is one."""
    step_dir = Path(step_dir)
    if (step_dir / PARAMS_DIR / METADATA_FILE).is_file():
        return step_dir / PARAMS_DIR
    if (step_dir / METADATA_FILE).is_file():
        return step_dir
    raise ConvertError(f"{step_dir}: no orbax params (expected {step_dir / PARAMS_DIR / METADATA_FILE}); pass the "
                       "step directory openpi training wrote (RUN/STEP, holding params/ and assets/)")


def is_orbax_step(path: Path) -> bool:
    """Whether `path` is an openpi JAX step (or its params directory) rather than a safetensors checkpoint."""
    path = Path(path)
    return (path / PARAMS_DIR / METADATA_FILE).is_file() or (path / METADATA_FILE).is_file()


def _step_root(step_dir: Path) -> Path:
    """The step directory (holding assets/) for a step or a params path."""
    return step_dir.parent if step_dir.name == PARAMS_DIR and (step_dir / METADATA_FILE).is_file() else step_dir


def find_norm_stats(step_dir: Path, asset_id: str | None) -> tuple[str, Path]:
    """(asset_id, path) of the step's norm_stats.json; refuses none, an unknown id, or several without an id."""
    assets = _step_root(step_dir) / ASSETS_DIR
    found = sorted(p.parent.name for p in assets.glob(f"*/{NORM_STATS_FILE}")) if assets.is_dir() else []
    if asset_id is not None:
        try:  # the serving side's own lookup: a single folder name (no '..' out of assets/), the file present
            path = find_openpi_norm_stats(_step_root(step_dir), asset_id)
        except (NormStatsError, NormConfigError) as exc:
            raise ConvertError(f"--asset-id {asset_id}: {exc}; the step has norm stats for "
                               f"{found or 'no asset id'}") from None
        return asset_id, path
    if not found:
        raise ConvertError(
            f"{_step_root(step_dir)}: no {ASSETS_DIR}/<asset_id>/{NORM_STATS_FILE} (missing norm_stats.json): "
            "openpi training saves the norm stats it normalized with there; without them the model would be "
            "served on unnormalized data. Copy them in, or pass --no-norm-stats to convert the weights alone")
    if len(found) > 1:
        raise ConvertError(f"{assets}: several asset ids hold {NORM_STATS_FILE}: {found}; pass --asset-id ID")
    return found[0], assets / found[0] / NORM_STATS_FILE


def _check_norm_stats(path: Path) -> None:
    """Read them as the server will at load (policy_norm), so a file it would refuse is refused here, named."""
    try:
        read_openpi_norm_stats(path)
    except (NormStatsError, NormConfigError) as exc:
        raise ConvertError(f"norm stats to carry: {exc}") from None


def find_tokenizer(step_dir: Path, explicit: Path | None) -> Path | None:
    """The SentencePiece model to carry: --tokenizer, else one inside the step, else openpi's own cache."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise ConvertError(f"--tokenizer {explicit} is not a file")
        return Path(explicit)
    try:
        return find_tokenizer_model(_step_root(step_dir))
    except TokenizerError:
        pass
    home = Path(os.environ.get(OPENPI_DATA_HOME_ENV) or Path.home() / ".cache" / "openpi")
    candidate = home / OPENPI_TOKENIZER
    return candidate if candidate.is_file() else None


def _to_torch(array: np.ndarray[Any, Any]) -> torch.Tensor:
    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    if array.dtype == np.float32:
        return torch.from_numpy(array)
    return torch.from_numpy(array.astype(np.float32))


def _store_dtype(name: str, dtype: StoreDtype) -> torch.dtype:
    return param_dtype(name, DtypePolicy(dtype))


def read_tree(step_dir: Path) -> tuple[OrbaxTree, InferredSizes]:
    """Open the params, refuse anything but a complete Pi0.5 tree, and read its sizes."""
    tree = OrbaxTree(params_dir(step_dir))
    shapes = {k: a.shape for k, a in tree.arrays.items()}
    sizes = infer_sizes(shapes)
    check_tree(shapes, sizes)
    return tree, sizes


def _write_weights(tree: OrbaxTree, outputs: list[OutputTensor], path: Path, dtype: StoreDtype) -> int:
    by_name = {t.name: t for t in outputs}
    # The one block held: (source, first row, stop row or None for the whole array) -> its data.
    held: dict[tuple[str, int, int | None], np.ndarray[Any, Any]] = {}

    def block(out: OutputTensor) -> np.ndarray[Any, Any]:
        if out.layer is None:
            key: tuple[str, int, int | None] = (out.source, 0, None)
        else:
            start, stop = tree.row_block(out.source, out.layer)
            key = (out.source, start, stop)
        if key not in held:
            held.clear()  # drop the previous block before reading the next: one stored chunk at a time
            held[key] = tree.read(out.source, None if key[2] is None else (key[1], key[2]))
        data = held[key]
        return data if out.layer is None else data[out.layer - key[1]]

    def make(name: str, _dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        out = by_name[name]
        tensor = _to_torch(out.make(block(out)))
        if out.layer is None:
            held.clear()  # a whole array makes one tensor: let it go as soon as that tensor is cast
        if tuple(tensor.shape) != shape:
            raise ConvertError(f"{name}: made {list(tensor.shape)} from '{out.source}', expected {list(shape)}")
        return tensor

    entries = [(t.name, _store_dtype(t.name, dtype), t.shape) for t in outputs]
    return write_streaming(path, entries, make, metadata={"format": "pt"})


def convert_openpi_step(step_dir: Path, out_dir: Path, options: ConvertOptions | None = None) -> ConvertReport:
    """Convert `step_dir` into `out_dir` (which must not exist); returns the report. Nothing is left at `out_dir`
    unless the conversion completed."""
    options = options or ConvertOptions()
    step_dir, out_dir = Path(step_dir), Path(out_dir)
    if out_dir.exists():
        raise ConvertError(f"--out {out_dir} exists; choose a new directory (nothing is overwritten)")
    tree, sizes = read_tree(step_dir)
    cfg = sizes.config(action_horizon=options.action_horizon, max_token_len=options.max_token_len)
    asset_id: str | None
    stats: Path | None
    if options.allow_no_norm_stats and options.asset_id is None and not any(
            (_step_root(step_dir) / ASSETS_DIR).glob(f"*/{NORM_STATS_FILE}")):
        asset_id, stats = None, None
    else:
        asset_id, stats = find_norm_stats(step_dir, options.asset_id)
        _check_norm_stats(stats)
    tokenizer = find_tokenizer(step_dir, options.tokenizer)
    outputs = plan_outputs(sizes)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        weights = tmp / WEIGHTS_FILE
        size = _write_weights(tree, outputs, weights, options.dtype)
        config = openpi_config_json(cfg, WriteOptions(store_dtype=options.dtype))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if stats is not None and asset_id is not None:
            (tmp / ASSETS_DIR / asset_id).mkdir(parents=True)
            shutil.copyfile(stats, tmp / ASSETS_DIR / asset_id / NORM_STATS_FILE)
        if tokenizer is not None:
            (tmp / TOKENIZER_OUT).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tokenizer, tmp / TOKENIZER_OUT)
        sha = file_sha256(weights)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    confirm = [f"action_horizon {cfg.action_horizon} and max_token_len {cfg.max_token_len} are not recorded in the "
               "weights (--action-horizon / --max-token-len; openpi's Pi0.5 defaults are 50 / 200): check them "
               "against the training config's model.action_horizon / max_token_len"]
    if tokenizer is None:
        confirm.append(f"no tokenizer found: copy PaliGemma's SentencePiece model ({PALIGEMMA_TOKENIZER_URL}) to "
                       f"{out_dir / TOKENIZER_OUT}, or pass --tokenizer to serve")
    return ConvertReport(
        step_dir=step_dir, out_dir=out_dir, sizes=sizes, dtype=options.dtype, key_count=len(outputs),
        weights_bytes=size, weights_sha256=sha, tree_layout=tree.layout, asset_id=asset_id, norm_stats=stats,
        tokenizer=f"{TOKENIZER_OUT} (from {tokenizer})" if tokenizer else "NONE", to_confirm=confirm,
    )


def content_hash(directory: Path) -> str:
    """sha256 over every file of `directory` (relative paths and bytes, in sorted order)."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        file_sha256(path, h)
        h.update(b"\0")
    return h.hexdigest()


CACHE_ENV = "POLICY_SERVER_CONVERT_CACHE"
CACHE_SUBDIR = "yam-vla-deploy/converted"


def default_cache_root() -> Path:
    """Where `serve` keeps conversions: $POLICY_SERVER_CONVERT_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/<project>."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / CACHE_SUBDIR


def cache_key(step_dir: Path, options: ConvertOptions) -> str:
    """What a conversion depends on: the params' bytes, the chosen norm stats' bytes, the tokenizer's bytes,
    the options and the converter version. Any change gives another cache entry."""
    h = hashlib.sha256()
    h.update(f"converter {CONVERTER_VERSION}\0".encode())
    h.update(content_hash(params_dir(step_dir)).encode())
    opts = {"dtype": options.dtype, "asset_id": options.asset_id, "no_stats": options.allow_no_norm_stats,
            "action_horizon": options.action_horizon, "max_token_len": options.max_token_len}
    h.update(json.dumps(opts, sort_keys=True).encode())
    for path in sorted((_step_root(step_dir) / ASSETS_DIR).glob(f"*/{NORM_STATS_FILE}")):
        h.update(path.parent.name.encode() + b"\0" + path.read_bytes())
    tokenizer = find_tokenizer(step_dir, options.tokenizer)
    if tokenizer is not None:
        h.update(b"tokenizer\0" + tokenizer.read_bytes())
    return h.hexdigest()


def convert_command(step_dir: Path, options: ConvertOptions) -> str:
    """The command line that converts `step_dir` as `options` ask (printed when serving may not convert)."""
    parts = ["python -m policy_server convert", f"--openpi-params {step_dir}", "--out CONVERTED_DIR"]
    if options.asset_id:
        parts.append(f"--asset-id {options.asset_id}")
    if options.dtype != "float32":
        parts.append(f"--dtype {options.dtype}")
    if options.allow_no_norm_stats:
        parts.append("--no-norm-stats")
    return " ".join(parts)


def ensure_converted(step_dir: Path, options: ConvertOptions, *, cache_root: Path | None = None,
                     allow_convert: bool = True) -> tuple[Path, ConvertReport | None]:
    """The converted directory for an openpi JAX step: reused from the cache when present, else converted into
    it (atomically; a partial conversion is never at the cache path). Returns (directory, report or None when
    reused). With `allow_convert` False a missing conversion is refused with the command to run."""
    root = cache_root or default_cache_root()
    target = root / cache_key(step_dir, options)[:32]
    if (target / WEIGHTS_FILE).is_file():
        return target, None
    if not allow_convert:
        raise ConvertError(f"{step_dir} is an openpi JAX (orbax) checkpoint and conversion at serve time is "
                           f"disabled; convert it first:\n  {convert_command(step_dir, options)}\nthen serve "
                           "--checkpoint CONVERTED_DIR")
    try:
        return target, convert_openpi_step(step_dir, target, options)
    except OSError:
        if (target / WEIGHTS_FILE).is_file():  # another process finished the same conversion first
            return target, None
        raise
