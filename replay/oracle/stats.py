"""Error statistics of predicted chunks against ground truth: per joint, per chunk step, per frame.

Why masked means: ground truth past an episode's end is padding (the last action repeated), not a
demonstration, so by default only real rows count (`counted`); the padded rows get their own per-joint L1 so
a policy that wanders after the end is still visible. Steps that no frame has a counted row for are NaN,
never 0. L1 is the mean |error|, RMS the root of the mean squared error, bias the mean signed error
(prediction minus ground truth: a constant offset from a normalization bug shows up with its sign).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ErrorStats:
    """One unit system's statistics (raw robot units, or the policy's model space)."""

    step_joint_l1: F64  # [H, A]
    step_joint_rms: F64  # [H, A]
    step_joint_bias: F64  # [H, A]
    step_frames: npt.NDArray[np.int64]  # [H]: frames with a counted row at that step
    joint_l1: F64  # [A] over every counted row of every frame
    joint_rms: F64  # [A]
    joint_bias: F64  # [A]
    first_l1: F64  # [A] step 0 (always a real row)
    first_rms: F64  # [A]
    step_l1: F64  # [H] mean over joints
    step_rms: F64  # [H] over joints and frames
    frame_joint_l1: F64  # [N, A] over each frame's counted rows
    frame_l1: F64  # [N] mean over joints
    padded_joint_l1: F64  # [A] over padded rows only (NaN when there are none)
    padded_rows: int

    @property
    def mean_first_l1(self) -> float:
        return float(np.mean(self.first_l1))

    @property
    def mean_chunk_l1(self) -> float:
        return float(np.mean(self.joint_l1))


def _masked_mean(values: F64, mask: BoolArray, axis: tuple[int, ...]) -> F64:
    """Mean of `values` [N, H, A] over `axis` where `mask` [N, H] holds and the value is finite (a frame the
    normalized view could not encode is NaN there); NaN where nothing is counted."""
    weights = np.broadcast_to(mask[..., None], values.shape) & np.isfinite(values)
    total = np.where(weights, values, 0.0).sum(axis=axis)
    count = weights.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan), dtype=np.float64)


def real_rows(valid: npt.ArrayLike, horizon: int) -> BoolArray:
    """[N, H]: True on the real (not padded) ground-truth rows of each frame."""
    return np.arange(horizon)[None, :] < np.asarray(valid, dtype=np.int64)[:, None]


def error_stats(err: F64, real: BoolArray, include_padded: bool = False) -> ErrorStats:
    """Statistics of `err` [N, H, A] (prediction minus ground truth); `real` [N, H] marks real rows. With
    `include_padded` the padded rows count in every statistic (the doctor's convention)."""
    counted = np.ones_like(real) if include_padded else real
    absolute, squared = np.abs(err), err**2
    step_joint_l1 = _masked_mean(absolute, counted, (0,))
    step_joint_ms = _masked_mean(squared, counted, (0,))
    frame_joint_l1 = _masked_mean(absolute, counted, (1,))
    padded = ~real
    return ErrorStats(
        step_joint_l1=step_joint_l1,
        step_joint_rms=np.sqrt(step_joint_ms),
        step_joint_bias=_masked_mean(err, counted, (0,)),
        step_frames=counted.sum(axis=0).astype(np.int64),
        joint_l1=_masked_mean(absolute, counted, (0, 1)),
        joint_rms=np.sqrt(_masked_mean(squared, counted, (0, 1))),
        joint_bias=_masked_mean(err, counted, (0, 1)),
        first_l1=step_joint_l1[0],
        first_rms=np.sqrt(step_joint_ms[0]),
        step_l1=_masked_mean(absolute, counted, (0, 2)),
        step_rms=np.sqrt(_masked_mean(squared, counted, (0, 2))),
        frame_joint_l1=frame_joint_l1,
        frame_l1=_masked_mean(absolute, counted, (1, 2)),
        padded_joint_l1=_masked_mean(absolute, padded, (0, 1)),
        padded_rows=int(padded.sum()),
    )


@dataclass(frozen=True)
class WorstFrame:
    """A frame whose chunk is far from ground truth, at its worst joint (raw units)."""

    episode: int
    frame: int
    joint: str
    chunk_l1: float  # that joint's mean |error| over the frame's counted rows
    first_error: float  # that joint's |error| on the first action
    max_error: float  # that joint's largest |error| over the counted rows
    max_step: int  # the chunk step of max_error


def worst_frames(err: F64, counted: BoolArray, stats: ErrorStats, located: Sequence[tuple[int, int]],
                 names: Sequence[str], count: int) -> tuple[WorstFrame, ...]:
    """The `count` frames with the largest per-joint chunk L1, worst first (ties keep frame order); frames
    without any error are not listed (a perfect policy has no worst frame)."""
    if not len(located):
        return ()
    per_frame = np.nan_to_num(stats.frame_joint_l1, nan=-1.0)
    joint = per_frame.argmax(axis=1)
    score = per_frame.max(axis=1)
    out = []
    for n in np.argsort(-score, kind="stable")[: max(count, 0)]:
        if not score[n] > 0:
            break
        j = int(joint[n])
        column = np.where(counted[n], np.abs(err[n, :, j]), -1.0)
        step = int(column.argmax())
        out.append(WorstFrame(located[n][0], located[n][1], names[j], float(score[n]), float(abs(err[n, 0, j])),
                              float(column[step]), step))
    return tuple(out)
