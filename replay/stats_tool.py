"""`python -m replay stats`: exact norm stats of a dataset, written where openpi or LeRobot expect them.

Why a tool of our own: openpi's `compute_norm_stats.py` estimates q01/q99 from 5000-bin histograms whose
re-binning can bias them badly (openpi PR #1041 shows an expected (0, 1) coming out as (2.0, 2.0)). Here every
statistic is exact over all selected frames: `numpy.quantile` with linear interpolation (error bound 0 against
numpy's exact quantile of the same values), population std (ddof 0) as openpi and LeRobot report it.

Action stats follow the training transforms: with a delta mask, masked dims are stats of
action[t + k] - state[t] over every step k < action_horizon of every chunk t (openpi computes stats after
DeltaActions, over chunks); with `--action-horizon 1` (the default) they are per-frame. Memory is about
frames x horizon x 8 bytes per action dim; `--max-frames N` samples N chunk starts / state frames uniformly
without replacement (seeded), and the quantiles are then exact for that sample.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from policy_norm.deltas import chunk_action_values, delta_state_indices
from policy_norm.errors import NormalizationError
from policy_norm.formats import write_openpi_norm_stats, write_yam_norm_stats
from policy_norm.modes import MODE_NAMES, parse_mode
from policy_norm.numeric import EPSILON_CONVENTIONS, make_bool_mask
from policy_norm.stats import FeatureNormStats, NormStats, StatsSource
from robodata.dataset import Dataset, DatasetError
from robodata.lerobot_meta import ACTION_KEY, STATE_KEY, write_json
from robodata.stats import FeatureStats, compute_feature_stats, stats_to_json

FORMATS = ("openpi", "lerobot", "yam")
LEROBOT_STATS_FILE = "stats.json"
YAM_STATS_FILE = "norm_stats.yam.json"


@dataclass(frozen=True)
class StatsRequest:
    """What to compute: the action delta mask (None = all absolute), chunk horizon, frame cap and seed."""

    delta_mask: tuple[bool, ...] | None = None
    action_horizon: int = 1
    max_frames: int | None = None
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class ComputedStats:
    state: FeatureStats
    actions: FeatureStats
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    frames: int
    action_rows: int
    notes: tuple[str, ...]

    def feature(self, which: str) -> FeatureNormStats:
        stats, names = (self.state, self.state_names) if which == "state" else (self.actions, self.action_names)
        return FeatureNormStats.from_mapping({k: v for k, v in stats.items()}, which, names)


def parse_delta_mask(text: str) -> tuple[bool, ...] | None:
    """'6,-1,6,-1' (openpi's make_bool_mask form) or 'none'."""
    if text.strip().lower() == "none":
        return None
    try:
        dims = [int(p) for p in text.split(",") if p.strip()]
        return make_bool_mask(*dims)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--delta-mask must look like 6,-1,6,-1 (n>0: n delta dims, n<0: |n| absolute dims) or none; got '{text}'"
        ) from err


def _selected_frames(lengths: Sequence[int], max_frames: int | None, seed: int) -> list[npt.NDArray[np.int64]]:
    """Per episode, the frame indices to use (all, or a seeded uniform sample of max_frames overall)."""
    total = int(sum(lengths))
    if max_frames is None or max_frames >= total:
        return [np.arange(n, dtype=np.int64) for n in lengths]
    if max_frames < 2:
        raise DatasetError(f"--max-frames must be >= 2, got {max_frames}")
    picks = np.sort(np.random.default_rng(seed).choice(total, size=max_frames, replace=False))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [picks[(picks >= bounds[e]) & (picks < bounds[e + 1])] - bounds[e] for e in range(len(lengths))]


def compute_norm_stats(ds: Dataset, request: StatsRequest) -> ComputedStats:
    info = ds.info
    mask = request.delta_mask if request.delta_mask is not None else (False,) * info.action_dim
    if len(mask) != info.action_dim:
        raise DatasetError(
            f"--delta-mask has {len(mask)} entries but the dataset has {info.action_dim} action dims "
            f"({', '.join(info.action_names)})"
        )
    if request.action_horizon < 1:
        raise DatasetError(f"--action-horizon must be >= 1, got {request.action_horizon}")
    try:
        indices = delta_state_indices(info.action_names, info.state_names, mask)
    except NormalizationError as err:
        raise DatasetError(str(err)) from err
    notes: list[str] = []
    for j, si in enumerate(indices):
        if si >= 0 and info.action_names[j] != info.state_names[si]:
            notes.append(f"delta dim {info.action_names[j]} is taken relative to state dim {si} "
                         f"({info.state_names[si]}) by index")
    episode_ids = ds.episode_indices()
    lengths = [ds.episode_meta(i).length for i in episode_ids]
    frames = _selected_frames(lengths, request.max_frames, request.seed)
    states: list[npt.NDArray[np.float64]] = []
    actions: list[npt.NDArray[np.float64]] = []
    for e, index in enumerate(tqdm(episode_ids, desc="stats", unit="episode", disable=not request.progress or None)):
        if frames[e].size == 0:
            continue
        ep = ds.episode(index)
        states.append(np.asarray(ep.states[frames[e]], dtype=np.float64))
        actions.append(chunk_action_values(ep.states, ep.actions, indices, request.action_horizon, frames[e]))
    if not states:
        raise DatasetError(f"{info.path}: no frames to compute stats over")
    state_arr = np.concatenate(states)
    action_arr = np.concatenate(actions)
    for label, arr in (("states", state_arr), ("actions", action_arr)):
        if not np.all(np.isfinite(arr)):
            row, col = (int(v) for v in np.argwhere(~np.isfinite(arr))[0])
            raise DatasetError(f"{label} hold NaN/inf (e.g. row {row}, dim {col}); run `python -m replay doctor` "
                               f"to locate them")
    if request.max_frames is not None and request.max_frames < sum(lengths):
        notes.append(f"stats over a seeded sample of {state_arr.shape[0]} of {sum(lengths)} frames")
    if request.action_horizon > 1:
        notes.append(f"action stats over every step of every chunk (horizon {request.action_horizon}, "
                     f"{action_arr.shape[0]} rows)")
    if any(mask):
        notes.append(f"action stats of deltas on {sum(mask)} dims: "
                     f"{[n for n, m in zip(info.action_names, mask, strict=True) if m]}")
    return ComputedStats(
        state=compute_feature_stats(state_arr),
        actions=compute_feature_stats(action_arr),
        state_names=info.state_names,
        action_names=info.action_names,
        frames=int(state_arr.shape[0]),
        action_rows=int(action_arr.shape[0]),
        notes=tuple(notes),
    )


def write_stats(
    computed: ComputedStats,
    out: Path,
    fmt: str,
    *,
    asset_id: str | None = None,
    mode: str | None = None,
    epsilon: str = "openpi",
    request: StatsRequest | None = None,
    dataset: str = "",
) -> Path:
    """Write in `fmt`; returns the file written."""
    if fmt == "openpi":
        if not asset_id or "/" in asset_id or asset_id in (".", ".."):
            raise DatasetError(
                "--format openpi needs --asset-id (the asset id the training config uses, e.g. 'yam'); the file "
                "goes to <out>/<asset_id>/norm_stats.json"
            )
        return write_openpi_norm_stats(out / asset_id / "norm_stats.json", computed.feature("state"),
                                       computed.feature("actions"))
    if fmt == "lerobot":
        path = out / LEROBOT_STATS_FILE
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, stats_to_json({STATE_KEY: computed.state, ACTION_KEY: computed.actions}))
        return path
    if fmt == "yam":
        if mode is None:
            raise DatasetError(f"--format yam needs --mode ({'/'.join(MODE_NAMES)}): our format records the mode")
        norm_mode = parse_mode(mode, "--mode", DatasetError)
        req = request or StatsRequest()
        stats = NormStats(
            state=computed.feature("state"),
            actions=computed.feature("actions"),
            source=StatsSource("yam", str(out)),
            mode=norm_mode,
            epsilon=epsilon,
            action_delta_mask=req.delta_mask,
            provenance={
                "dataset": dataset,
                "tool": "python -m replay stats",
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "frames": str(computed.frames),
                "action_rows": str(computed.action_rows),
                "quantiles": "exact (numpy.quantile, linear interpolation)",
                "std": "population (ddof 0)",
                "max_frames": str(req.max_frames),
                "seed": str(req.seed),
            },
        )
        return write_yam_norm_stats(out / YAM_STATS_FILE, stats, norm_mode, epsilon, req.action_horizon)
    raise DatasetError(f"--format must be one of {FORMATS}, got '{fmt}'")


def print_stats_table(computed: ComputedStats, out: TextIO) -> None:
    for label, stats, names in (("state", computed.state, computed.state_names),
                                ("actions", computed.actions, computed.action_names)):
        out.write(f"{label} ({len(names)} dims)\n")
        cols = ("mean", "std", "min", "max", "q01", "q99")
        width = max(12, *(len(n) for n in names))
        out.write("  " + " " * width + "".join(f"{c:>10s}" for c in cols) + "\n")
        for i, name in enumerate(names):
            out.write("  " + f"{name:<{width}s}" + "".join(f"{float(stats[c][i]):10.4f}" for c in cols) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="openpi: <out>/<asset-id>/norm_stats.json; lerobot: <out>/stats.json; "
                             "yam: <out>/norm_stats.yam.json")
    parser.add_argument("--asset-id", default=None, help="openpi asset id (required for --format openpi)")
    parser.add_argument("--delta-mask", type=parse_delta_mask, default=None,
                        help="action delta mask as make_bool_mask dims, e.g. 6,-1,6,-1; default none (absolute)")
    parser.add_argument("--action-horizon", type=int, default=1,
                        help="chunk length for action stats (openpi counts every step of every chunk); default 1")
    parser.add_argument("--max-frames", type=int, default=None, help="use a seeded sample of this many frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-frames sample")
    parser.add_argument("--mode", choices=MODE_NAMES, default=None, help="--format yam: the mode these stats are for")
    parser.add_argument("--epsilon", choices=EPSILON_CONVENTIONS, default="openpi",
                        help="--format yam: epsilon convention to record (default openpi)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")


def run(ds: Dataset, args: argparse.Namespace, out: TextIO) -> int:
    request = StatsRequest(
        delta_mask=args.delta_mask,
        action_horizon=args.action_horizon,
        max_frames=args.max_frames,
        seed=args.seed,
        progress=not args.quiet,
    )
    if args.format == "openpi" and not args.asset_id:
        raise DatasetError("--format openpi needs --asset-id (e.g. --asset-id yam)")
    if args.format == "yam" and args.mode is None:
        raise DatasetError(f"--format yam needs --mode ({'/'.join(MODE_NAMES)})")
    computed = compute_norm_stats(ds, request)
    path = write_stats(computed, args.out, args.format, asset_id=args.asset_id, mode=args.mode,
                       epsilon=args.epsilon, request=request, dataset=str(ds.info.path))
    if not args.quiet:
        print_stats_table(computed, out)
    notes = list(computed.notes)
    if args.format == "openpi" and request.delta_mask is not None and any(request.delta_mask):
        notes.append("openpi's norm_stats.json does not record the delta mask: set action_delta_mask (and "
                     "action_horizon) in the policy config to match these stats")
    if args.format == "lerobot":
        notes.append("stats.json holds observation.state and action only (no image stats)")
    for note in notes:
        out.write(f"note: {note}\n")
    out.write(f"wrote {path} ({computed.frames} frames, {computed.action_rows} action rows)\n")
    return 0
