"""What an oracle comparison found: the chunks, their error statistics, and the report forms (markdown, JSON).

Why keep the chunks, not only the statistics: the worst-frame plots and frame-by-frame views need the
predicted and ground-truth chunks side by side (`OracleResult.chunk_pair`), and recomputing them would ask
the policy again (and, with a sampling policy, get a different answer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.oracle.core import ChunkPair
from replay.oracle.stats import ErrorStats, WorstFrame, real_rows

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PADDED_EXCLUDE = "exclude"
PADDED_INCLUDE = "include"


@dataclass(frozen=True)
class OracleResult:
    """Per-frame chunks (dataset action order, robot units) and their statistics.

    raw: errors in robot units (rad, gripper 0..1); normalized: the same in the policy's model space (None
    when the policy has no stats, `normalization` says why). jump / truth_jump [N, A]: |first action - current
    state| of the policy's chunk / of the dataset's own (NaN for an action with no state of its name).
    padded_rows: "exclude" (the padded ground-truth rows past an episode end count in no statistic but
    `padded_joint_l1`) or "include"."""

    source: str
    dataset: str
    action_names: tuple[str, ...]
    horizon: int
    located: tuple[tuple[int, int], ...]
    predicted: F32  # [N, H, A]
    truth: F32  # [N, H, A]
    valid: I64  # [N] real ground-truth rows per frame
    raw: ErrorStats
    normalized: ErrorStats | None
    normalization: str
    jump: F64  # [N, A]
    truth_jump: F64  # [N, A]
    worst_frames: tuple[WorstFrame, ...]
    padded_rows: str
    sampled: int
    failures: tuple[str, ...]
    warning_counts: Mapping[str, int]
    notes: tuple[str, ...]

    @property
    def frames(self) -> int:
        return len(self.located)

    @property
    def errors(self) -> F64:
        """[N, H, A] prediction minus ground truth, raw units."""
        return np.asarray(self.predicted, np.float64) - np.asarray(self.truth, np.float64)

    @property
    def real(self) -> npt.NDArray[np.bool_]:
        """[N, H] True on real (not padded) ground-truth rows."""
        return real_rows(self.valid, self.horizon)

    @property
    def mean_first_l1(self) -> float:
        """Mean over joints of the first-action L1 (raw units): the `--fail-above` quantity."""
        return self.raw.mean_first_l1

    def chunk_pair(self, episode: int, frame: int) -> ChunkPair:
        """The predicted and ground-truth chunks of a compared frame (KeyError if it was not compared)."""
        try:
            n = self.located.index((episode, frame))
        except ValueError:
            raise KeyError(f"episode {episode} frame {frame} was not compared") from None
        return ChunkPair(episode, frame, self.predicted[n], self.truth[n], int(self.valid[n]))

    def summary_markdown(self, per_step: bool = True) -> str:
        """The report: what was compared, per joint, per chunk step (unless `per_step` is False), worst frames."""
        from replay.oracle.markdown import summary_markdown

        return summary_markdown(self, per_step)

    def to_json(self) -> dict[str, Any]:
        """Everything but the chunks themselves, JSON-ready (NaN -> null)."""
        def stats(s: ErrorStats | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {
                "first_l1": _clean(s.first_l1), "first_rms": _clean(s.first_rms),
                "chunk_l1": _clean(s.joint_l1), "chunk_rms": _clean(s.joint_rms), "chunk_bias": _clean(s.joint_bias),
                "step_joint_l1": _clean(s.step_joint_l1), "step_joint_rms": _clean(s.step_joint_rms),
                "step_joint_bias": _clean(s.step_joint_bias), "step_l1": _clean(s.step_l1),
                "step_rms": _clean(s.step_rms), "step_frames": [int(v) for v in s.step_frames],
                "padded_joint_l1": _clean(s.padded_joint_l1), "padded_rows": s.padded_rows,
                "mean_first_l1": _clean(s.mean_first_l1), "mean_chunk_l1": _clean(s.mean_chunk_l1),
            }

        first = np.abs(self.errors[:, 0]).mean(axis=1) if self.frames else np.zeros(0)
        return {
            "source": self.source, "dataset": self.dataset, "action_names": list(self.action_names),
            "horizon": self.horizon, "frames": self.frames, "sampled": self.sampled,
            "padded_rows": self.padded_rows, "normalization": self.normalization,
            "raw": stats(self.raw), "normalized": stats(self.normalized),
            "first_action_jump": {"mean": _clean(_nanmean(self.jump)), "max": _clean(_nanmax(self.jump)),
                                  "dataset_mean": _clean(_nanmean(self.truth_jump))},
            "worst_frames": [vars(w) for w in self.worst_frames],
            "per_frame": [
                {"episode": e, "frame": t, "real_rows": int(self.valid[n]), "l1": _clean(self.raw.frame_l1[n]),
                 "first_l1": _clean(first[n]),
                 "normalized_l1": None if self.normalized is None else _clean(self.normalized.frame_l1[n])}
                for n, (e, t) in enumerate(self.located)
            ],
            "failures": list(self.failures), "warning_counts": dict(self.warning_counts), "notes": list(self.notes),
        }


def _nanmean(values: F64) -> F64:
    """Mean over frames per joint, NaN (not a warning) for a joint with no finite value."""
    if not values.size:
        return np.full(values.shape[1:], np.nan)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(values)
        total = np.where(finite, values, 0.0).sum(axis=0)
        return np.asarray(np.where(finite.any(axis=0), total / np.maximum(finite.sum(axis=0), 1), np.nan))


def _nanmax(values: F64) -> F64:
    if not values.size:
        return np.full(values.shape[1:], np.nan)
    filled = np.where(np.isfinite(values), values, -np.inf).max(axis=0)
    return np.asarray(np.where(np.isfinite(filled), filled, np.nan))


def jump_stats(result: OracleResult) -> tuple[F64, F64, F64]:
    """Per joint: mean and max |policy first action - state|, and the dataset's own mean for reference."""
    return _nanmean(result.jump), _nanmax(result.jump), _nanmean(result.truth_jump)


def _clean(value: Any) -> Any:
    """Floats and arrays as JSON values (NaN/inf -> None)."""
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    return value
