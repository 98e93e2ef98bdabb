"""`python -m replay oracle`: send each sampled dataset frame to a policy and compare its chunk with the
dataset's own next H actions.

Why: a policy that reproduces its own training demonstrations poorly from the first action on is almost
never the model's fault -- it is the normalization stats, the delta mask, the gripper convention or the image
preprocessing. Served on its own dataset, the dataset policy must give exactly 0 on every joint and step
(anything else is the deploy path); a real checkpoint's numbers say where it departs from the data, per joint
and per chunk step, in raw units and in the policy's own normalized units. The oracle reports and does not
judge: exit 0 whenever the comparison ran (2 when it could not; 1 only with --fail-above, when the mean
first-action L1 exceeds it).

Padded rows: ground truth past an episode's end repeats its last action (as the dataset policy pads). Those
rows are excluded from every statistic by default and reported on their own (per-joint "padded L1").

The Python API (what the robot client and the tests call):

    source = open_policy_source(server="host:50051")          # or checkpoint=Path(...)
    result = run_oracle(dataset, source, OracleOptions(stride=5))
    result.summary_markdown(); result.raw.step_joint_l1; result.worst_frames
    frame_chunks(dataset, source, episode, frame)             # one frame's (predicted, ground truth) pair
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from replay.oracle.core import (
    Alignment,
    ChunkPair,
    Collected,
    OracleError,
    align,
    collect,
    frame_chunks,
    sample_dataset_frames,
)
from replay.oracle.result import PADDED_EXCLUDE, PADDED_INCLUDE, OracleResult
from replay.oracle.sources import ChunkSource, open_policy_source
from replay.oracle.stats import ErrorStats, WorstFrame, error_stats, real_rows, worst_frames
from robodata.dataset import Dataset

__all__ = ["ChunkPair", "ErrorStats", "OracleError", "OracleOptions", "OracleResult", "WorstFrame", "frame_chunks",
           "open_policy_source", "run_oracle", "summarize"]

EXIT_OK = 0
EXIT_ABOVE_THRESHOLD = 1
EXIT_CANNOT_RUN = 2


@dataclass(frozen=True)
class OracleOptions:
    """Which frames, how to ask, how to count.

    stride / max_frames: every stride-th frame of each episode, evenly thinned to max_frames (None: all).
    episodes: only these episode indices (None: every readable one); frames: exact (episode, frame) pairs
    instead of sampling. batch_size: observations per source batch call. worst: how many worst frames.
    padded_rows: "exclude" (default) or "include" the padded ground-truth rows in the statistics.
    normalized: also compare in the policy's normalized units. allow_positional_names: match joints by
    position when the names differ but the dims agree (otherwise differing names are an error)."""

    stride: int = 10
    max_frames: int | None = None
    episodes: tuple[int, ...] | None = None
    frames: tuple[tuple[int, int], ...] | None = None
    batch_size: int = 16
    worst: int = 5
    padded_rows: str = PADDED_EXCLUDE
    normalized: bool = True
    allow_positional_names: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("stride", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"OracleOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"OracleOptions.max_frames must be >= 1 or None, got {self.max_frames}")
        if self.worst < 0:
            raise ValueError(f"OracleOptions.worst must be >= 0, got {self.worst}")
        if self.padded_rows not in (PADDED_EXCLUDE, PADDED_INCLUDE):
            raise ValueError(f"OracleOptions.padded_rows must be '{PADDED_EXCLUDE}' or '{PADDED_INCLUDE}', "
                             f"got {self.padded_rows!r}")


def pick_frames(ds: Dataset, options: OracleOptions) -> list[tuple[int, int]]:
    """The (episode, frame) pairs to compare; raises OracleError naming unknown episodes or frames."""
    known = ds.episode_indices()
    if options.frames is not None:
        lengths = {e: ds.episode_meta(e).length for e in {e for e, _ in options.frames} if e in known}
        bad = [(e, t) for e, t in options.frames if e not in lengths or not 0 <= t < lengths[e]]
        if bad:
            raise OracleError(f"OracleOptions.frames: {bad[:5]} are not frames of the dataset")
        return list(options.frames)
    if options.episodes is not None:
        unknown = sorted(set(options.episodes) - set(known))
        if unknown:
            raise OracleError(f"OracleOptions.episodes: {unknown} not in the dataset (episodes {known[:20]})")
    return sample_dataset_frames(ds, options.stride, options.max_frames, options.episodes)


def run_oracle(dataset: Dataset, source: ChunkSource, options: OracleOptions | None = None) -> OracleResult:
    """Compare `source`'s chunks with `dataset`'s actions; raises OracleError when nothing could be compared."""
    opts = options or OracleOptions()
    alignment = align(source, dataset.info, opts.allow_positional_names)
    picks = pick_frames(dataset, opts)
    if not picks:
        raise OracleError(f"{dataset.info.path}: no frame to compare")
    view, normalization = source.normalized_view() if opts.normalized else (None, "not requested")
    from tqdm import tqdm

    with tqdm(total=len(picks), disable=not opts.progress, unit="frame", desc="oracle", leave=False) as bar:
        collected = collect(dataset, source, alignment, picks, view=view, batch_size=opts.batch_size,
                            progress=bar.update)
    if not collected.located:
        first = collected.failures[0] if collected.failures else "no answer"
        raise OracleError(f"none of the {len(picks)} sampled frame(s) could be compared; first: {first}")
    return summarize(collected, source.description, str(dataset.info.path), normalization, opts, alignment)


def _alignment_notes(alignment: Alignment, source: str) -> list[str]:
    notes = []
    for what, match in (("state", alignment.state), ("action", alignment.action)):
        if match.positional:
            notes.append(f"the policy's {what} names differ from the dataset's; matched by position")
    if alignment.missing_cameras:
        notes.append(f"{source} expects camera(s) {list(alignment.missing_cameras)} that the dataset lacks; frames "
                     f"are sent without them and validated as the server validates them (a required camera refuses "
                     f"the frame; an optional one leaves its slot masked), so the errors are not representative")
    return notes


def summarize(collected: Collected, source: str, dataset: str, normalization: str, options: OracleOptions,
              alignment: Alignment | None = None) -> OracleResult:
    """Statistics of what `collect` gathered (at least one frame)."""
    predicted = np.stack(collected.predicted)
    truth = np.stack(collected.truth)
    valid = np.asarray(collected.valid, dtype=np.int64)
    err = predicted.astype(np.float64) - truth.astype(np.float64)
    real = real_rows(valid, predicted.shape[1])
    include = options.padded_rows == PADDED_INCLUDE
    raw = error_stats(err, real, include)
    normalized = None
    if collected.norm_error:
        normalized = error_stats(np.stack(collected.norm_error), real, include)
    counted = np.ones_like(real) if include else real
    names = collected.action_names
    states = np.stack(collected.states).astype(np.float64)
    state_of = [collected.state_names.index(n) if n in collected.state_names else -1 for n in names]
    current = np.stack([states[:, s] if s >= 0 else np.full(len(states), np.nan) for s in state_of], axis=1)
    notes = _alignment_notes(alignment, source) if alignment is not None else []
    notes += collected.notes
    stateless = [n for n, s in zip(names, state_of, strict=True) if s < 0]
    if stateless:
        notes.append(f"no state of the same name for action(s) {stateless}: their first-action jump is left out")
    if collected.norm_failures:
        notes.append(f"{len(collected.norm_failures)} frame(s) could not be normalized (left out of the normalized "
                     f"view); first: {collected.norm_failures[0]}")
    return OracleResult(
        source=source, dataset=dataset, action_names=names, horizon=int(predicted.shape[1]),
        located=tuple(collected.located), predicted=predicted, truth=truth, valid=valid, raw=raw,
        normalized=normalized, normalization=normalization,
        jump=np.abs(predicted[:, 0].astype(np.float64) - current), truth_jump=np.abs(truth[:, 0] - current),
        worst_frames=worst_frames(err, counted, raw, collected.located, names, options.worst),
        padded_rows=options.padded_rows, sampled=collected.sampled, failures=tuple(collected.failures),
        warning_counts=dict(collected.warnings), notes=tuple(notes),
    )


# ---- command line ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    policy = parser.add_mutually_exclusive_group(required=True)
    policy.add_argument("--server", default=None, metavar="HOST:PORT", help="ask the policy server at HOST:PORT")
    policy.add_argument("--checkpoint", type=Path, default=None, metavar="DIR",
                        help="load this Pi0.5 checkpoint in this process and ask it")
    parser.add_argument("--device", default="cpu", help="--checkpoint device (cpu, cuda, cuda:N)")
    parser.add_argument("--stride", type=_positive, default=OracleOptions.stride,
                        help="compare every K-th frame of each episode")
    parser.add_argument("--max-frames", type=_positive, default=None,
                        help="at most N frames, evenly spread over the episodes (default: all sampled)")
    parser.add_argument("--noise-seed", type=int, default=0,
                        help="flow-sampling noise seed sent with every request (reproducible errors)")
    parser.add_argument("--batch-size", type=_positive, default=OracleOptions.batch_size,
                        help="observations per batch call to the policy")
    parser.add_argument("--worst", type=int, default=OracleOptions.worst, help="list this many worst frames")
    parser.add_argument("--include-padded", action="store_true",
                        help="count the padded ground-truth rows past an episode's end in the statistics")
    parser.add_argument("--out", type=Path, default=None,
                        help="write report.md, results.json and PNG plots here")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-rrd", action="store_true",
                        help="skip the rerun recordings (--out: one oracle_episode_<e>.rrd per episode)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--fail-above", type=float, default=None, metavar="X",
                        help="exit 1 when the mean first-action L1 (raw units) exceeds X")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def options_from_args(args: argparse.Namespace) -> OracleOptions:
    return OracleOptions(stride=args.stride, max_frames=args.max_frames, batch_size=args.batch_size,
                         worst=max(args.worst, 0), progress=not args.no_progress,
                         padded_rows=PADDED_INCLUDE if args.include_padded else PADDED_EXCLUDE)


def run(ds: Dataset, args: argparse.Namespace, out: TextIO, err: TextIO | None = None) -> int:
    """The `oracle` command: 0 when the comparison ran, 2 when it could not, 1 past --fail-above."""
    errors = err if err is not None else sys.stderr
    try:
        options = options_from_args(args)
        source = open_policy_source(args.server, args.checkpoint, noise_seed=args.noise_seed, device=args.device)
    except Exception as exc:  # any way a policy fails to start is reported, never a traceback
        errors.write(f"error: could not start the policy: {type(exc).__name__}: {exc}\n")
        return EXIT_CANNOT_RUN
    try:
        result = run_oracle(ds, source, options)
    except OracleError as exc:
        errors.write(f"error: {exc}\n")
        return EXIT_CANNOT_RUN
    finally:
        source.close()
    out.write(result.summary_markdown(per_step=False) + "\n")
    if args.out is not None:
        from replay.oracle.report import write_outputs

        for path in write_outputs(result, args.out, plots=not args.no_plots):
            out.write(f"wrote {path}\n")
        if not args.no_rrd:
            from replay.oracle.rerun_view import write_oracle_rrd

            for path in write_oracle_rrd(result, ds, args.out):
                out.write(f"wrote {path}\n")
    if args.fail_above is not None and result.mean_first_l1 > args.fail_above:
        out.write(f"mean first-action L1 {result.mean_first_l1:.4g} is above --fail-above {args.fail_above:g}\n")
        return EXIT_ABOVE_THRESHOLD
    return EXIT_OK

