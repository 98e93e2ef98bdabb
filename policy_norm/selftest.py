"""Startup self-test: the pipeline inverts itself, and (given data) the data is normalized by these stats.

Why at startup: both checks are cheap and both failures are silent at request time. A broken round trip means
the server emits something other than what the model meant; data that is not normalized by the checkpoint's
stats (never normalized, stats from another dataset, double normalization, wrong mode or delta mask) means the
model sees inputs it never trained on. Refusing to start, with the joint named, is the point.

Round-trip tolerance: |x - denorm(norm(x))| <= ROUND_TRIP_ATOL + ROUND_TRIP_RTOL * max(|x|, spread), where
values pass through float32 model space as they do in serving (float32 carries ~7 significant digits, so
1e-5 relative leaves two digits of margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from policy_norm.datacheck import DataCheckResult, DataCheckThresholds, EpisodeArrays, check_data
from policy_norm.deltas import delta_to_absolute
from policy_norm.errors import SelfTestError
from policy_norm.numeric import MODE_FORMULAS
from policy_norm.pipeline import NormalizationPipeline
from policy_norm.resolve import FeatureNormalizer
from policy_norm.stats import FeatureNormStats

F64 = npt.NDArray[np.float64]

ROUND_TRIP_ATOL = 1e-5
ROUND_TRIP_RTOL = 1e-5


@dataclass(frozen=True)
class RoundTripResult:
    ok: bool
    points: int
    max_error: float
    failures: tuple[str, ...]
    notes: tuple[str, ...]

    def summary(self) -> str:
        head = f"round trip over {self.points} stats-derived points: {'ok' if self.ok else 'FAILED'} " \
               f"(max error {self.max_error:.3g}; tolerance {ROUND_TRIP_ATOL:g} + {ROUND_TRIP_RTOL:g} * scale)"
        return "\n".join([head, *(f"  {f}" for f in self.failures), *(f"  note: {n}" for n in self.notes)])


@dataclass(frozen=True)
class SelfTestResult:
    round_trip: RoundTripResult
    data: DataCheckResult | None

    @property
    def ok(self) -> bool:
        return self.round_trip.ok and (self.data is None or self.data.ok)

    def summary(self) -> str:
        parts = [self.round_trip.summary()]
        parts.append(self.data.summary() if self.data is not None else "data check: skipped (no dataset given)")
        return "\n".join(parts)


def stats_points(feat: FeatureNormStats, nz: FeatureNormalizer) -> F64:
    """Rows of test points per dim: q01, q99, mean, mid-range (and min/max when present)."""
    rows: list[F64] = []
    for key in ("q01", "q99", "mean", "min", "max"):
        arr = feat.get(key)
        if arr is not None:
            rows.append(np.asarray(arr, dtype=np.float64))
    if feat.q01 is not None and feat.q99 is not None:
        rows.append((feat.q01 + feat.q99) / 2.0)
    if not rows:
        rows.append(nz.a)
    return np.stack(rows)


def _scale(nz: FeatureNormalizer) -> F64:
    """Each dim's width in robot units (what a relative tolerance is relative to); 1 where the mode has none."""
    f = MODE_FORMULAS[nz.mode]
    return np.ones(nz.dim) if f.stats is None else np.abs(f.spread(nz.a, nz.b))


def _pinned(nz: FeatureNormalizer, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Dims the 'zero' degenerate policy pins to 0: they are not meant to round-trip."""
    return np.broadcast_to(np.asarray(nz.degenerate, dtype=bool) & (nz.degenerate_policy == "zero"), shape)


def _compare(label: str, names: Sequence[str], x: F64, back: F64, scale: F64, skip: npt.NDArray[np.bool_],
             failures: list[str]) -> float:
    err = np.abs(back - x)
    tol = ROUND_TRIP_ATOL + ROUND_TRIP_RTOL * np.maximum(np.abs(x), scale)
    bad = (err > tol) & ~skip
    for r, j in np.argwhere(bad)[:5]:
        failures.append(
            f"{label}[{j}] ({names[j]}): {x[r, j]:.9g} came back as {back[r, j]:.9g} "
            f"(error {err[r, j]:.3g} > {tol[r, j]:.3g})"
        )
    return float(np.max(np.where(skip, 0.0, err))) if err.size else 0.0


def round_trip_selftest(pipeline: NormalizationPipeline) -> RoundTripResult:
    """denorm(norm(x)) == x within tolerance on stats-derived points, per feature and through the full action
    path (absolute -> delta -> normalize -> pad -> finish)."""
    failures: list[str] = []
    notes: list[str] = []
    max_err = 0.0
    points = 0
    stats = {"state": pipeline.resolved.state_stats, "actions": pipeline.resolved.action_stats}
    for label, nz in (("state", pipeline.resolved.state), ("actions", pipeline.resolved.actions)):
        x = stats_points(stats[label], nz)
        skip = _pinned(nz, x.shape)
        if skip.any():
            notes.append(f"{label}: degenerate dims pinned to 0 are not expected to round-trip")
        n32 = nz.normalize(x).astype(np.float32)
        back = nz.unnormalize(n32)
        max_err = max(max_err, _compare(label, nz.names, x, back, _scale(nz), skip, failures))
        points += x.size

    cfg = pipeline.config
    state_pts = stats_points(stats["state"], pipeline.resolved.state)
    state = state_pts[-1].astype(np.float32)
    model_pts = stats_points(stats["actions"], pipeline.resolved.actions)
    absolute = delta_to_absolute(model_pts, state, pipeline.delta_index)
    lo = np.full(cfg.action_dim, -np.inf)
    hi = np.full(cfg.action_dim, np.inf)
    for j, name in enumerate(cfg.action_names):
        if cfg.joint_limits and name in cfg.joint_limits:
            lo[j], hi[j] = cfg.joint_limits[name]
    if cfg.gripper.convention != "none":
        for d in cfg.gripper_dims():
            lo[d], hi[d] = max(lo[d], 0.0), min(hi[d], 1.0)
    robot_actions = np.clip(absolute, lo, hi).astype(np.float32)
    encoded = pipeline.encode_actions(robot_actions, state)
    # Round-trip points sit at the stats' edges, which a strict pipeline may reject; test the math without strict.
    lenient = pipeline if not cfg.strict else NormalizationPipeline(replace(cfg, strict=False), pipeline.stats)
    finished, _ = lenient.finish(encoded, state)
    nz = pipeline.resolved.actions
    skip = _pinned(nz, robot_actions.shape)
    scale = np.maximum(_scale(nz), np.abs(state[np.maximum(np.asarray(pipeline.delta_index), 0)]))
    max_err = max(max_err, _compare("action path", cfg.action_names, robot_actions.astype(np.float64),
                                    finished.astype(np.float64), scale, skip, failures))
    points += robot_actions.size
    return RoundTripResult(not failures, points, max_err, tuple(failures), tuple(notes))


def startup_selftest(
    pipeline: NormalizationPipeline,
    episodes: Sequence[EpisodeArrays] | None = None,
    allow_data_mismatch: bool = False,
    thresholds: DataCheckThresholds | None = None,
) -> SelfTestResult:
    """Run both checks; raise SelfTestError on a broken round trip, or on data that does not fit the stats
    unless `allow_data_mismatch` (the result still lists every finding)."""
    rt = round_trip_selftest(pipeline)
    data = check_data(pipeline, episodes, thresholds) if episodes is not None else None
    result = SelfTestResult(rt, data)
    if not rt.ok:
        raise SelfTestError(f"normalization self-test failed: {rt.summary()}")
    if data is not None and not data.ok and not allow_data_mismatch:
        raise SelfTestError(
            "the dataset is not normalized by these stats (set allow_data_mismatch to start anyway):\n"
            + data.summary()
        )
    return result
