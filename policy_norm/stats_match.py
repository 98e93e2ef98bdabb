"""Do a dataset's stored stats describe its data? Compared like with like, and the cause named when they don't.

Why: stored stats are what a trainer normalizes with. A checker that recomputes them differently from their
writer cries wolf on every real dataset: LeRobot 0.4+ stores each quantile as the frame-count-weighted mean of
per-episode quantiles, which is not the quantile of all frames (on a 5-episode bimanual dataset written by
LeRobot 0.6.1 they differ by up to 0.6 rad). So the caller recomputes the stats under every convention a writer
may have used (see robodata.stats: LeRobot's per-episode mean, exact whole-data quantiles, no quantiles for
LeRobot v2.1) and this module keeps the one that matches; only when none does is anything reported.

A dim whose stored stats do not match is attributed to the cause its numbers point to, tried in this order:
1. a unit change: the stored stats are the data's scaled by a known factor (180/pi: stats in degrees, data in
   radians; pi/180 the reverse; 100 or 1/100: a 0..100 gripper against 0..1);
2. identity placeholders (q01 -1 / q99 +1, or mean 0 / std 1, exactly): the data would never be normalized;
3. the data as stored already looks normalized while the stats are in robot units: double normalization;
4. the stats look like stats of normalized data while the data is in robot units: never normalized;
5. z-score vs quantile swap: the quantile fields hold mean -/+ std, or mean/std hold the quantile mid-point and
   half-range;
6. otherwise: stats from another dataset (or another recording of this robot).

Severity: the named causes 1-5 are errors. "Another dataset" is an error when normalizing the data with the
stored stats would squash it (its 1%..99% span under a third of the [-1, 1] the model trained on), blow it up
(over three times) or shift its centre outside [-1, 1]; otherwise a warning, with the figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
StatsMap = Mapping[str, npt.ArrayLike]

QUANTILE_KEYS: tuple[str, ...] = ("q01", "q10", "q50", "q90", "q99")
EXACT_KEYS: tuple[str, ...] = ("mean", "std", "min", "max")
# (factor stored / data, what the stored stats are in, what the data is in)
UNIT_FACTORS: tuple[tuple[float, str, str], ...] = (
    (180.0 / math.pi, "degrees", "radians"),
    (math.pi / 180.0, "radians", "degrees"),
    (100.0, "0..100 (percent)", "0..1"),
    (0.01, "0..1", "0..100 (percent)"),
)

CAUSE_UNIT = "unit"
CAUSE_IDENTITY = "identity"
CAUSE_DOUBLE = "double_normalization"
CAUSE_NORMALIZED_STATS = "never_normalized"
CAUSE_MODE_SWAP = "mode_swap"
CAUSE_OTHER = "another_dataset"


@dataclass(frozen=True)
class StatsMatchThresholds:
    """Stated thresholds of the stored-stats comparison.

    tolerance: a stored stat describes the data when it is within this x the dim's spread (max of std and
    q99 - q01 of the data) of the same stat recomputed in the writer's convention.
    unit_tolerance: the same, for the data scaled by a unit factor (in the scaled spread).
    signature_tolerance: how close data or stats must be to -1/+1 (q01/q99) or 0/1 (mean/std) to look
    normalized: tight, because robot data in radians often spans about [-1, 1] too; normalized data and stats of
    it hit those values almost exactly in the convention they were computed in.
    identity_tolerance: how exactly placeholder stats hold -1/+1 or 0/1.
    squash / blow_up: normalized 1%..99% half-span below / above these is squashed / blown up.
    shift: a normalized centre beyond this is outside the trained range.
    """

    tolerance: float = 0.1
    unit_tolerance: float = 0.1
    signature_tolerance: float = 0.03
    identity_tolerance: float = 1e-6
    squash: float = 1.0 / 3.0
    blow_up: float = 3.0
    shift: float = 1.0


@dataclass(frozen=True)
class DimVerdict:
    """One dim whose stored stats do not describe the data."""

    index: int
    name: str
    cause: str
    severity: str  # "error" | "warning"
    detail: str  # the numbers behind the verdict, for this dim
    short: str = ""  # the one figure that names it (e.g. "x57.3"), for grouped messages
    units: tuple[str, str] | None = None  # for a unit change: (the stats' unit, the data's unit)


@dataclass(frozen=True)
class QuantileGap:
    """How far the stored quantiles are from the quantiles of all frames (the worst dim and key)."""

    convention: str
    worst: float  # in units of the dim's spread
    name: str
    key: str
    stored: float
    whole: float
    normalized_lo: float  # whole-data q01 normalized with the stored q01/q99 (quantile mode)
    normalized_hi: float  # whole-data q99 likewise


@dataclass(frozen=True)
class StatsMatch:
    """The outcome for one feature: the matching convention (None: no convention describes every dim), the dims
    that do not match with their causes, and the stored quantiles' distance from whole-data quantiles."""

    feature: str
    convention: str | None
    deviation: float  # worst |stored - recomputed| / spread over dims and stats, in the best convention
    verdicts: tuple[DimVerdict, ...]
    quantile_gap: QuantileGap | None
    has_quantiles: bool


def _arr(stats: StatsMap, key: str, dim: int) -> F64 | None:
    if key not in stats:
        return None
    value = np.asarray(stats[key], dtype=np.float64).reshape(-1)
    return value if value.size == dim else None


def _spread(whole: StatsMap, dim: int) -> F64:
    std = _arr(whole, "std", dim)
    q01, q99 = _arr(whole, "q01", dim), _arr(whole, "q99", dim)
    spread = np.zeros(dim) if std is None else std.copy()
    if q01 is not None and q99 is not None:
        spread = np.maximum(spread, q99 - q01)
    return np.maximum(spread, 1e-6)


def _deviation(stored: StatsMap, data: StatsMap, keys: Sequence[str], dim: int, spread: F64,
               scale: float = 1.0) -> tuple[F64, list[str]]:
    """Per dim, the worst |stored - scale * data| / (|scale| * spread) over `keys`, and which key it was."""
    worst = np.zeros(dim)
    which = [""] * dim
    for key in keys:
        s, d = _arr(stored, key, dim), _arr(data, key, dim)
        if s is None or d is None:
            continue
        if key == "std":
            rel = np.abs(s - abs(scale) * d) / (abs(scale) * spread)
        else:
            rel = np.abs(s - scale * d) / (abs(scale) * spread)
        rel = np.where(np.isfinite(rel), rel, np.inf)
        for j in np.flatnonzero(rel > worst):
            which[int(j)] = key
        worst = np.maximum(worst, rel)
    return worst, which


def _quantile_pair(stats: StatsMap, dim: int) -> tuple[F64, F64] | None:
    lo, hi = _arr(stats, "q01", dim), _arr(stats, "q99", dim)
    return None if lo is None or hi is None else (lo, hi)


def _looks_normalized(stats: StatsMap, j: int, dim: int, tol: float) -> bool:
    pair = _quantile_pair(stats, dim)
    if pair is not None and abs(pair[0][j] + 1.0) <= tol and abs(pair[1][j] - 1.0) <= tol:
        return True
    mean, std = _arr(stats, "mean", dim), _arr(stats, "std", dim)
    return mean is not None and std is not None and abs(mean[j]) <= tol and abs(std[j] - 1.0) <= tol


def _effect(stored: StatsMap, data: StatsMap, j: int, dim: int) -> tuple[str, float, float]:
    """(mode, normalized half-span, normalized centre) of the data's 1%..99% under the stored stats: quantile mode
    when they have q01/q99, else z-score (mean and std)."""
    s_pair, d_pair = _quantile_pair(stored, dim), _quantile_pair(data, dim)
    if s_pair is not None and d_pair is not None:
        width = s_pair[1][j] - s_pair[0][j]
        if abs(width) < 1e-12:
            return "quantile", math.inf, 0.0
        lo = 2.0 * (d_pair[0][j] - s_pair[0][j]) / width - 1.0
        hi = 2.0 * (d_pair[1][j] - s_pair[0][j]) / width - 1.0
        return "quantile", abs(hi - lo) / 2.0, (hi + lo) / 2.0
    s_mean, s_std = _arr(stored, "mean", dim), _arr(stored, "std", dim)
    d_mean, d_std = _arr(data, "mean", dim), _arr(data, "std", dim)
    if s_mean is None or s_std is None or d_mean is None or d_std is None:
        return "zscore", 1.0, 0.0
    if s_std[j] < 1e-12:
        return "zscore", math.inf, 0.0
    return "zscore", d_std[j] / s_std[j], (d_mean[j] - s_mean[j]) / s_std[j]


def _effect_text(mode: str, half_span: float, centre: float, th: StatsMatchThresholds) -> tuple[str, bool]:
    """Words for what the model would see, and whether that is harmful (squashed, blown up or shifted)."""
    if mode == "quantile":
        seen = (f"normalized with them (quantile) the data's 1%..99% lands at [{centre - half_span:+.3g}, "
                f"{centre + half_span:+.3g}] instead of about [-1, +1]")
    else:
        seen = f"z-scored with them the data has mean {centre:+.3g}, std {half_span:.3g} instead of 0 and 1"
    harms = []
    if half_span < th.squash:
        harms.append(f"squashed {1.0 / max(half_span, 1e-12):.3g}x")
    elif half_span > th.blow_up:
        harms.append(f"blown up {half_span:.3g}x")
    if abs(centre) > th.shift:
        harms.append("centred outside the trained range")
    return (seen + (": " + ", ".join(harms) if harms else "")), bool(harms)


def _diagnose(j: int, name: str, stored: StatsMap, data: StatsMap, candidates: Mapping[str, StatsMap],
              whole: StatsMap, dim: int, spread: F64, keys: Sequence[str], th: StatsMatchThresholds) -> DimVerdict:
    """The cause of one dim's mismatch; `data` is the best-matching convention's recomputation, `candidates` all
    of them (a unit change is looked for in each, since the stats' writer is not known), `whole` the data's
    exact whole-data stats (whether the data looks normalized is a property of the data, not of a convention)."""
    mode, half, centre = _effect(stored, data, j, dim)
    seen, harmful = _effect_text(mode, half, centre, th)
    for factor, stats_unit, data_unit in UNIT_FACTORS:
        scaled = min(float(_deviation(stored, c, keys, dim, spread, scale=factor)[0][j]) for c in candidates.values())
        if scaled <= th.unit_tolerance:
            s_std, d_std = _arr(stored, "std", dim), _arr(data, "std", dim)
            ratio = float(s_std[j] / d_std[j]) if s_std is not None and d_std is not None and d_std[j] > 0 \
                else factor
            return DimVerdict(j, name, CAUSE_UNIT, "error",
                              f"{name}: stored std / data std = {ratio:.4g} ({stats_unit} vs {data_unit}: "
                              f"{factor:.4g}); {seen}", short=f"{name} x{ratio:.4g}", units=(stats_unit, data_unit))
    s_pair = _quantile_pair(stored, dim)
    s_mean, s_std = _arr(stored, "mean", dim), _arr(stored, "std", dim)
    tol_id = th.identity_tolerance
    # Placeholders hold exactly the identity values in every field they have; stats of normalized data can hit
    # q01 -1 / q99 +1 exactly too, but not mean 0 / std 1 as well.
    quantile_id = s_pair is not None and abs(s_pair[0][j] + 1) <= tol_id and abs(s_pair[1][j] - 1) <= tol_id
    zscore_id = s_mean is not None and s_std is not None and abs(s_mean[j]) <= tol_id and abs(s_std[j] - 1) <= tol_id
    has_z = s_mean is not None and s_std is not None
    if (s_pair is not None or has_z) and (s_pair is None or quantile_id) and (not has_z or zscore_id):
        return DimVerdict(j, name, CAUSE_IDENTITY, "error",
                          f"{name}: stored stats are identity placeholders ("
                          + ("q01 -1, q99 +1" if s_pair is not None else "mean 0, std 1")
                          + f"); the data reaches the model in robot units; {seen}")
    data_normalized = any(_looks_normalized(d, j, dim, th.signature_tolerance) for d in (whole, *candidates.values()))
    stats_normalized = _looks_normalized(stored, j, dim, th.signature_tolerance)
    if data_normalized and not stats_normalized:
        return DimVerdict(j, name, CAUSE_DOUBLE, "error",
                          f"{name}: the data already looks normalized as stored "
                          f"({_summary(data, j, dim)}) while the stats are in robot units "
                          f"({_summary(stored, j, dim)}); {seen}")
    if stats_normalized and not data_normalized:
        return DimVerdict(j, name, CAUSE_NORMALIZED_STATS, "error",
                          f"{name}: the stored stats describe normalized values ({_summary(stored, j, dim)}) while "
                          f"the data is in robot units ({_summary(data, j, dim)}); {seen}")
    swap = _mode_swap(j, stored, data, dim, spread, th)
    if swap:
        return DimVerdict(j, name, CAUSE_MODE_SWAP, "error", f"{name}: {swap}; {seen}")
    _, which = _deviation(stored, data, keys, dim, spread)
    dev = np.min(np.stack([_deviation(stored, c, keys, dim, spread)[0] for c in candidates.values()]), axis=0)
    key = which[j] or "mean"
    s, d = _arr(stored, key, dim), _arr(data, key, dim)
    figures = (f"{key} stored {float(s[j]):.4g} vs data {float(d[j]):.4g}" if s is not None and d is not None
               else key)
    return DimVerdict(j, name, CAUSE_OTHER, "error" if harmful else "warning",
                      f"{name}: {figures} ({dev[j]:.2g} x its spread); {seen}")


def _summary(stats: StatsMap, j: int, dim: int) -> str:
    pair = _quantile_pair(stats, dim)
    mean, std = _arr(stats, "mean", dim), _arr(stats, "std", dim)
    parts = []
    if pair is not None:
        parts.append(f"q01 {pair[0][j]:.3g}, q99 {pair[1][j]:.3g}")
    if mean is not None and std is not None:
        parts.append(f"mean {mean[j]:.3g}, std {std[j]:.3g}")
    return "; ".join(parts)


def _mode_swap(j: int, stored: StatsMap, data: StatsMap, dim: int, spread: F64, th: StatsMatchThresholds) -> str:
    s_pair, d_pair = _quantile_pair(stored, dim), _quantile_pair(data, dim)
    s_mean, s_std = _arr(stored, "mean", dim), _arr(stored, "std", dim)
    d_mean, d_std = _arr(data, "mean", dim), _arr(data, "std", dim)
    tol = th.tolerance * spread[j]
    if s_pair is not None and d_mean is not None and d_std is not None and \
            abs(s_pair[0][j] - (d_mean[j] - d_std[j])) <= tol and abs(s_pair[1][j] - (d_mean[j] + d_std[j])) <= tol:
        return (f"the stored q01/q99 ({s_pair[0][j]:.4g}, {s_pair[1][j]:.4g}) are the data's mean -/+ std "
                f"({d_mean[j] - d_std[j]:.4g}, {d_mean[j] + d_std[j]:.4g}): z-score stats written as quantiles")
    if d_pair is not None and s_mean is not None and s_std is not None:
        mid, half = (d_pair[0][j] + d_pair[1][j]) / 2, (d_pair[1][j] - d_pair[0][j]) / 2
        if abs(s_mean[j] - mid) <= tol and abs(s_std[j] - half) <= tol:
            return (f"the stored mean/std ({s_mean[j]:.4g}, {s_std[j]:.4g}) are the data's q01..q99 mid-point and "
                    f"half-range ({mid:.4g}, {half:.4g}): quantile stats written as z-score")
    return ""


def match_stored_stats(feature: str, names: Sequence[str], stored: StatsMap, candidates: Mapping[str, StatsMap],
                       whole: StatsMap, th: StatsMatchThresholds | None = None) -> StatsMatch:
    """Compare a feature's stored stats with the data's stats recomputed under each candidate convention.

    `candidates`: {convention: stats recomputed the way that writer computes them} (every candidate has the
    exact mean/std/min/max/count; their quantiles follow the convention, or are absent). `whole`: the data's
    exact whole-data stats with quantiles (the spread and the INFO on quantiles use them).
    """
    th = th or StatsMatchThresholds()
    dim = len(names)
    if not candidates:
        raise ValueError(f"{feature}: no candidate convention to compare the stored stats with")
    stored_q = [k for k in QUANTILE_KEYS if _arr(stored, k, dim) is not None]
    keys = [*EXACT_KEYS, *stored_q]
    spread = _spread(whole, dim)
    devs = {c: _deviation(stored, data, keys, dim, spread)[0] for c, data in candidates.items()}
    best_dev = np.min(np.stack(list(devs.values())), axis=0)
    fine = best_dev <= th.tolerance
    # The writer's convention: the one that fits the dims that fit at all (all dims when none does).
    judged = fine if fine.any() else np.ones(dim, dtype=bool)
    convention = min(devs, key=lambda c: float(devs[c][judged].max()) if judged.any() else 0.0)
    data = candidates[convention]
    worst = float(best_dev.max()) if dim else 0.0
    gap = _quantile_gap(convention, names, stored, whole, spread, stored_q, judged)
    if fine.all():
        return StatsMatch(feature, convention, worst, (), gap, bool(stored_q))
    verdicts = tuple(_diagnose(j, names[j], stored, data, candidates, whole, dim, spread, keys, th)
                     for j in range(dim) if not fine[j])
    return StatsMatch(feature, convention if fine.any() else None, worst, verdicts, gap, bool(stored_q))


def _quantile_gap(convention: str, names: Sequence[str], stored: StatsMap, whole: StatsMap, spread: F64,
                  stored_q: Sequence[str], dims: npt.NDArray[np.bool_]) -> QuantileGap | None:
    """The worst distance of stored quantiles from whole-data quantiles over `dims` (those the stats describe)."""
    dim = len(names)
    if not stored_q or not dims.any():
        return None
    worst, where = -1.0, ("", "", 0.0, 0.0)
    for key in stored_q:
        s, w = _arr(stored, key, dim), _arr(whole, key, dim)
        if s is None or w is None:
            continue
        rel = np.where(dims, np.abs(s - w) / spread, -1.0)
        j = int(np.argmax(rel))
        if float(rel[j]) > worst:
            worst, where = float(rel[j]), (names[j], key, float(s[j]), float(w[j]))
    if worst < 0:
        return None
    s_pair, w_pair = _quantile_pair(stored, dim), _quantile_pair(whole, dim)
    lo, hi = -1.0, 1.0
    if s_pair is not None and w_pair is not None:
        width = np.where(dims & (np.abs(s_pair[1] - s_pair[0]) > 1e-12), s_pair[1] - s_pair[0], np.nan)
        n_lo = 2.0 * (w_pair[0] - s_pair[0]) / width - 1.0
        n_hi = 2.0 * (w_pair[1] - s_pair[0]) / width - 1.0
        if np.isfinite(n_lo).any():
            lo, hi = float(np.nanmin(n_lo)), float(np.nanmax(n_hi))
    return QuantileGap(convention, worst, where[0], where[1], where[2], where[3], lo, hi)
