"""The doctor on a dataset larger than memory: one pass over its episodes, memory bounded whatever its size.

Why: the exact doctor holds every frame at once (states, actions and their float64 copies: 0.75 GB at 1M
frames of 14-D data, growing linearly), so a DROID-sized dataset would not fit. Above `exact_frames` frames the
doctor streams instead: each episode is read, checked on its own (finite values, timestamps, joint limits),
folded into running aggregates and dropped. What each aggregate gives:
- mean/std/min/max/count per feature: exact (per-episode stats merged, LeRobot's own convention), and LeRobot's
  per-episode quantiles: exact (computed per episode, as LeRobot computes them);
- whole-data quantiles (degenerate dims, arm ranges, the robust outlier centre and scale, the stored-stats
  comparison): a histogram of fixed bin count per dim whose range doubles to cover every value; each quantile is
  within one bin width (reported in an INFO, per feature);
- the tracking errors behind the delta-vs-absolute verdicts and the arm-swap check (medians of |a[t] - s[t + k]|
  per lag): log-spaced histograms, within a stated relative error;
- the action-to-state lag: summed cross-correlations, exact;
- robust outliers: centre and scale from the histograms, then only the episodes whose min or max passes the
  threshold are read again, for the per-episode spike test.
Checks that need the frames themselves (checkpoint normalization, state bins, reconstruction, the report's plots)
run on a seeded sample of whole episodes of about `sample_frames` frames, and an INFO says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from policy_norm.stats_match import StatsMatch, match_stored_stats
from replay.doctor.arms import (
    ARMS,
    ArmLayout,
    ArmResult,
    ArmThresholds,
    arm_findings,
    arm_layout,
    arm_result,
    crossed_arms,
    tracked_state_index,
)
from replay.doctor.checks import (
    CheckThresholds,
    DeltaEvidence,
    LagResult,
    _rolling_median,
    check_finite,
    check_gripper_convention,
    degenerate_findings,
    delta_verdict,
    episode_timestamp_findings,
    fps_findings,
    lag_findings,
    limit_finding,
    outlier_finding,
    state_index_for_actions,
    unlimited_findings,
)
from replay.doctor.findings import Finding
from replay.doctor.raw import DoctorEpisode, load_episode
from replay.doctor.stored_stats import FEATURES, StoredStats, stored_stats_findings
from robodata.dataset import Dataset
from robodata.lag import LagAccumulator
from robodata.stats import (
    QUANTILES,
    QUANTILES_EPISODE_MEAN,
    FeatureStats,
    LinearHistogram,
    LogHistogram,
    episode_feature_stats,
)
from robot_client.yam_limits import yam_limits

F64 = npt.NDArray[np.float64]
Hit = tuple[int, int, float]
MAX_HITS = 8  # frames named per finding (the finding says how many more)
PLOT_INTERVAL_EPISODES = 20  # the report plots the frame intervals of this many episodes


@dataclass(frozen=True)
class StreamSettings:
    """How the streamed doctor bounds memory.

    exact_frames: datasets of at most this many frames are checked exactly, all frames in memory (about 0.3 GB
    per 100k frames of 14-D data); larger ones are streamed.
    value_bins: histogram bins per state/action dim (whole-data quantiles within one bin width).
    error_bits: mantissa bits of the tracking-error bins (medians within a relative 2 ** -error_bits).
    sample_frames: about how many frames (whole episodes, seeded) the frame-needing checks and the report get.
    """

    exact_frames: int = 250_000
    value_bins: int = 1 << 14
    error_bits: int = 6
    sample_frames: int = 100_000
    seed: int = 0


class HistColumns:
    """A LinearHistogram as the checks' ColumnQuantiles."""

    def __init__(self, hist: LinearHistogram) -> None:
        self.hist = hist

    @property
    def dims(self) -> int:
        return self.hist.dims

    def size(self, j: int) -> int:
        return self.hist.count(j)

    def quantiles(self, j: int, levels: Sequence[float]) -> F64:
        return self.hist.quantiles(j, levels)

    def spread(self, j: int) -> float:
        """q99 - q01 (0 with fewer than 2 values), as the arm check measures a joint's range."""
        if self.hist.count(j) < 2:
            return 0.0
        q01, q99 = self.hist.quantiles(j, [0.01, 0.99])
        return float(q99 - q01)


@dataclass
class _LimitHits:
    """One dim's frames past its joint limit, over all episodes: count, the worst, the first MAX_HITS."""

    count: int = 0
    worst_excess: float = -np.inf
    worst: Hit = (0, 0, 0.0)
    hits: list[Hit] = field(default_factory=list)


@dataclass
class _OutlierHits:
    count: int = 0
    worst_z: float = -np.inf
    worst: Hit = (0, 0, 0.0)
    hits: list[Hit] = field(default_factory=list)


@dataclass(frozen=True)
class StreamedChecks:
    """What the streamed pass found, and what the rest of the doctor needs from it."""

    findings: list[Finding]
    lag: LagResult | None
    dts: dict[int, F64]
    arms: ArmResult | None
    sample: list[DoctorEpisode]
    paired: list[int]
    evidence: list[DeltaEvidence]
    frames: int
    episodes: int
    state_columns: HistColumns
    action_columns: HistColumns


class _MergedStats:
    """Per-episode stats merged as they come (robodata.stats.aggregate_stats, one episode at a time): count,
    mean and the sum of squared deviations by Chan's pairwise update, min, max, and the count-weighted sum of
    each quantile (LeRobot's episode-mean quantiles). Memory: one entry per stat, whatever the episode count."""

    def __init__(self) -> None:
        self.count = 0.0
        self.mean: F64 | None = None
        self.m2: F64 | None = None
        self.min: F64 | None = None
        self.max: F64 | None = None
        self.quantile_sums: dict[str, F64] = {}

    def add(self, stats: FeatureStats) -> None:
        n = float(np.asarray(stats["count"]).reshape(-1)[0])
        mean, std = stats["mean"], stats["std"]
        if self.mean is None or self.m2 is None or self.min is None or self.max is None:
            self.count, self.mean, self.m2 = n, mean.copy(), std**2 * n
            self.min, self.max = stats["min"].copy(), stats["max"].copy()
            self.quantile_sums = {key: stats[key] * n for key, _ in QUANTILES if key in stats}
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + std**2 * n + delta**2 * (self.count * n / total)
        self.min = np.minimum(self.min, stats["min"])
        self.max = np.maximum(self.max, stats["max"])
        for key in list(self.quantile_sums):
            if key in stats:
                self.quantile_sums[key] = self.quantile_sums[key] + stats[key] * n
            else:
                del self.quantile_sums[key]  # a quantile every episode has, or none (aggregate_stats' rule)
        self.count = total

    def result(self) -> FeatureStats:
        assert self.mean is not None and self.m2 is not None and self.min is not None and self.max is not None
        out: FeatureStats = {"min": self.min, "max": self.max, "mean": self.mean,
                             "std": np.sqrt(np.maximum(self.m2 / self.count, 0.0)),
                             "count": np.array([self.count], dtype=np.float64)}
        for key, total in self.quantile_sums.items():
            out[key] = total / self.count
        return out


class _Features:
    """Per feature (state, action): names, histogram, per-episode min/max, per-episode stats, limit hits."""

    def __init__(self, label: str, key: str, names: Sequence[str], bins: int,
                 limits: dict[str, tuple[float, float]], with_stats: bool, episode_quantiles: bool) -> None:
        self.label = label
        self.key = key
        self.names = tuple(names)
        self.hist = LinearHistogram(len(names), bins) if names else None
        self.episodes: list[int] = []  # the episode of each row of mins/maxs
        self.mins: list[F64] = []
        self.maxs: list[F64] = []
        self.limits = {j: limits[n] for j, n in enumerate(names) if n in limits}
        self.limit_hits: dict[int, _LimitHits] = {}
        self.with_stats = with_stats
        self.episode_quantiles = episode_quantiles
        self.merged = _MergedStats()
        self.finite_rows = 0

    def margin(self, j: int, th: CheckThresholds) -> float:
        return 0.05 if "gripper" in self.names[j].lower() else th.limit_margin

    def beyond(self, arr: F64, j: int, th: CheckThresholds) -> npt.NDArray[np.bool_]:
        lo, hi = self.limits[j]
        margin = self.margin(j, th)
        col = arr[:, j]
        return np.isfinite(col) & ((col < lo - margin) | (col > hi + margin))

    def add(self, ep_index: int, arr: F64, th: CheckThresholds) -> None:
        if self.hist is None:
            return
        self.hist.add(arr)
        if not len(arr):
            return
        finite = np.where(np.isfinite(arr), arr, np.nan)
        self.episodes.append(ep_index)
        self.mins.append(np.fmin.reduce(finite, axis=0))  # fmin/fmax skip NaN (NaN only where none is finite)
        self.maxs.append(np.fmax.reduce(finite, axis=0))
        for j, (lo, hi) in self.limits.items():
            rows = np.flatnonzero(self.beyond(arr, j, th))
            if not rows.size:
                continue
            acc = self.limit_hits.setdefault(j, _LimitHits())
            col = arr[:, j]
            excess = np.maximum(col[rows] - hi, lo - col[rows])
            w = int(np.argmax(excess))
            if float(excess[w]) > acc.worst_excess:
                acc.worst_excess = float(excess[w])
                acc.worst = (ep_index, int(rows[w]), float(col[rows[w]]))
            acc.count += int(rows.size)
            acc.hits += [(ep_index, int(r), float(col[r])) for r in rows[: MAX_HITS - len(acc.hits)]]
        if self.with_stats:
            finite = arr[np.isfinite(arr).all(axis=1)]
            if len(finite):
                self.finite_rows += len(finite)
                self.merged.add(episode_feature_stats(
                    finite, QUANTILES_EPISODE_MEAN if self.episode_quantiles else None))


def _sample_indices(ds: Dataset, settings: StreamSettings) -> set[int]:
    """A seeded choice of whole episodes of about `sample_frames` frames (from the average episode length)."""
    indices = ds.episode_indices()
    if not indices:
        return set()
    per_episode = max(1.0, ds.info.num_frames / max(1, len(indices)))
    n = int(min(len(indices), max(1, settings.sample_frames // per_episode)))
    rng = np.random.default_rng(settings.seed)
    return {int(i) for i in rng.choice(indices, size=n, replace=False)}


def _pairs(state_index: Sequence[int], layout: ArmLayout | None) -> list[tuple[int, int]]:
    """(action col, state col) pairs whose tracking errors and lags are accumulated: each action with the state of
    its own joint, and for two arms also with the same joint of the other arm (the pairing a swap implies)."""
    pairs = {(j, si) for j, si in enumerate(state_index) if si >= 0}
    if layout is not None:
        for a_arm in ARMS:
            for s_arm in ARMS:
                pairs.update(zip(layout.action[a_arm], layout.state[s_arm], strict=True))
    return sorted(pairs)


def stream_checks(ds: Dataset, th: CheckThresholds, arm_th: ArmThresholds,
                  joint_limits: dict[str, tuple[float, float]] | None, settings: StreamSettings,
                  compare_stats: bool) -> StreamedChecks:
    """The data-only checks in one pass over the episodes (and a second over the few with outlier candidates)."""
    info = ds.info
    findings: list[Finding] = []
    state_index = state_index_for_actions(info.action_names, info.state_names)
    layout = arm_layout(info.state_names, info.action_names)
    pairs = _pairs(state_index, layout)
    pair_col = {p: i for i, p in enumerate(pairs)}
    a_cols = np.array([a for a, _ in pairs], dtype=np.int64)
    s_cols = np.array([s for _, s in pairs], dtype=np.int64)
    k_track = max(arm_th.max_lag, min(th.max_lag_frames, 10))
    k_evidence = min(th.max_lag_frames, 10)
    # One log histogram per lag k: columns [0, P) hold |a[t] - s[t + k]|, [P, 2P) |a[t] + s[t] - s[t + k]|.
    track = ([LogHistogram(2 * len(pairs), mantissa_bits=settings.error_bits) for _ in range(k_track + 1)]
             if pairs else [])
    lag_acc = LagAccumulator(pairs, th.max_lag_frames, window_only=True)
    dt_hist = LogHistogram(1, low=1e-6, high=1e4, mantissa_bits=9)
    stored: StoredStats = info.stats or {}
    feats: dict[str, _Features] = {}
    for (key, which), names in zip(FEATURES, (info.state_names, info.action_names), strict=True):
        label = "state" if which == "states" else "action"
        limits = dict(yam_limits(names)) if joint_limits is None else {
            n: lim for n, lim in joint_limits.items() if n in names}
        feat_stats = stored.get(key)
        with_stats = compare_stats and feat_stats is not None and bool(names) and np.asarray(
            feat_stats.get("mean", []), dtype=np.float64).reshape(-1).size == len(names)
        with_q = with_stats and feat_stats is not None and any(k in feat_stats for k, _ in QUANTILES)
        feats[which] = _Features(label, key, names, settings.value_bins, limits, with_stats, with_q)
    sample_ids = _sample_indices(ds, settings)
    sample: list[DoctorEpisode] = []
    dts: dict[int, F64] = {}
    read: list[int] = []
    frames = 0
    for index in ds.episode_indices():
        ep, note = load_episode(ds, index)
        if note is not None:
            findings.append(note)
        if ep is None:
            continue
        read.append(ep.index)
        frames += len(ep)
        findings += check_finite([ep], info.state_names, info.action_names)
        ts_found, dt, good = episode_timestamp_findings(ep, info.fps, th)
        findings += ts_found
        if dt is not None and len(dts) < PLOT_INTERVAL_EPISODES:
            dts[ep.index] = dt
        if good.size:
            dt_hist.add(good)
        states = np.asarray(ep.states, dtype=np.float64)
        actions = np.asarray(ep.actions, dtype=np.float64)
        feats["states"].add(ep.index, states, th)
        feats["actions"].add(ep.index, actions, th)
        lag_acc.add(ep)
        n = len(ep)
        a_all, s_all = ep.actions[:, a_cols], ep.states[:, s_cols]  # float32, as stored
        for k, hist in enumerate(track):
            if n <= k:
                break
            a, s0, sk = a_all[: n - k], s_all[: n - k], s_all[k:]
            hist.add(np.concatenate([a - sk, a + s0 - sk], axis=1))
        if ep.index in sample_ids:
            sample.append(ep)
    findings += fps_findings(_median_or_none(dt_hist), info.fps, th)
    arms: ArmResult | None = None
    lag: LagResult | None = None
    paired = list(state_index)
    evidence: list[DeltaEvidence] = []
    st, ac = feats["states"], feats["actions"]
    st_cols = HistColumns(st.hist if st.hist is not None else LinearHistogram(0))
    ac_cols = HistColumns(ac.hist if ac.hist is not None else LinearHistogram(0))
    if read:
        findings += degenerate_findings(st_cols, ac_cols, info.state_names, info.action_names, th)
        findings += check_gripper_convention(_min_max(st), _min_max(ac), info.state_names, info.action_names)
        findings += _outlier_findings(ds, feats, th, joint_limits is None)

        def median_error(a: int, s: int, delta: bool, k: int) -> float:
            hist = track[k]
            col = pair_col[(a, s)] + (len(pairs) if delta else 0)
            return hist.median(col)

        if layout is not None:
            arms = arm_result(
                layout,
                lambda a, s, delta: min(median_error(a, s, delta, k) for k in range(1 if delta else 0,
                                                                                     arm_th.max_lag + 1)),
                st_cols.spread, ac_cols.spread, arm_th)
            findings += arm_findings(arms, arm_th)
            paired = tracked_state_index(arms, arm_th, state_index)
        lag = lag_acc.result(info.action_names, paired)
        lag_notes = lag_findings(lag, info.fps, th)
        if arms is not None and crossed_arms(arms, arm_th):
            lag_notes = [Finding(f.severity, f.code, f.where, f.message + " (actions paired with the state of the "
                                 "arm they track: see arms_swapped)") for f in lag_notes]
        findings += lag_notes
        for j, name in enumerate(info.action_names):
            si = paired[j]
            if si < 0 or track[0].count(pair_col[(j, si)]) == 0:
                continue
            e_abs = min(median_error(j, si, False, k) for k in range(k_evidence + 1))
            e_del = min(median_error(j, si, True, k) for k in range(k_evidence + 1))
            evidence.append(delta_verdict(name, e_abs, e_del, th))
        findings += _bounds_note(feats, track, dt_hist, frames, len(read), sample, settings)
        if compare_stats:
            findings += stored_stats_findings(_stored_matches(stored, feats))
        findings.append(Finding("info", "streamed_sample", "dataset", _sample_text(sample, settings)))
    return StreamedChecks(findings, lag, dts, arms, sample, paired, evidence, frames, len(read), st_cols, ac_cols)


def _median_or_none(hist: LogHistogram) -> float | None:
    return hist.median(0) if hist.count(0) else None


def _min_max(feat: _Features) -> F64:
    """[2, D]: each dim's smallest and largest finite value (NaN where none): all the gripper check reads."""
    if not feat.mins:
        return np.zeros((0, len(feat.names)))
    return np.stack([np.fmin.reduce(np.stack(feat.mins), axis=0), np.fmax.reduce(np.stack(feat.maxs), axis=0)])


def _outlier_findings(ds: Dataset, feats: dict[str, _Features], th: CheckThresholds,
                      yam_table: bool) -> list[Finding]:
    """Limit errors (collected in the pass) and robust outliers: centre and scale from the histograms, then the
    spike test on the episodes whose min or max lies past the threshold, read again."""
    centres: dict[tuple[str, int], tuple[float, float]] = {}
    candidates: set[int] = set()
    for which, feat in feats.items():
        if feat.hist is None or not feat.mins:
            continue
        mins, maxs = np.stack(feat.mins), np.stack(feat.maxs)
        for j in range(len(feat.names)):
            if feat.hist.count(j) < 10:
                continue
            q05, med, q95 = feat.hist.quantiles(j, [0.05, 0.5, 0.95])
            mad = feat.hist.median_abs_deviation(j, float(med))
            scale = max(mad * 1.4826, float(q95 - q05) / 3.29, th.degenerate_spread / 3.29)
            if scale < 1e-9:
                continue
            centres[(which, j)] = (float(med), scale)
            reach = th.robust_z * scale
            with np.errstate(invalid="ignore"):
                far = (mins[:, j] < med - reach) | (maxs[:, j] > med + reach)
            candidates.update(feat.episodes[int(e)] for e in np.flatnonzero(far))
    outliers: dict[tuple[str, int], _OutlierHits] = {}
    order = {index: pos for pos, index in enumerate(ds.episode_indices())}
    for index in sorted(candidates, key=order.__getitem__):
        ep, _ = load_episode(ds, index)
        if ep is None:
            continue
        for which, feat in feats.items():
            arr = np.asarray(getattr(ep, which), dtype=np.float64)
            for j in range(len(feat.names)):
                if (which, j) not in centres:
                    continue
                med, scale = centres[(which, j)]
                col = arr[:, j]
                finite = np.isfinite(col)
                far = finite & (np.abs(np.where(finite, col, med) - med) > th.robust_z * scale)
                if not far.any():
                    continue
                c = np.where(finite, col, med)
                local = _rolling_median(c, th.spike_window)
                hit = far & (np.abs(c - local) >= 0.5 * np.abs(c - med))
                if j in feat.limits:
                    hit &= ~feat.beyond(arr, j, th)
                rows = np.flatnonzero(hit)
                if not rows.size:
                    continue
                acc = outliers.setdefault((which, j), _OutlierHits())
                z = np.abs(col[rows] - med) / scale
                w = int(np.argmax(z))
                if float(z[w]) > acc.worst_z:
                    acc.worst_z = float(z[w])
                    acc.worst = (ep.index, int(rows[w]), float(col[rows[w]]))
                acc.count += int(rows.size)
                acc.hits += [(ep.index, int(r), float(col[r])) for r in rows[: MAX_HITS - len(acc.hits)]]
    out: list[Finding] = []
    unlimited: list[str] = []
    for which, feat in feats.items():
        unlimited += [n for j, n in enumerate(feat.names) if j not in feat.limits and n not in unlimited]
        for j, name in enumerate(feat.names):
            lim = feat.limit_hits.get(j)
            if lim is not None:
                ep_i, frame, value = lim.worst
                out.append(limit_finding(feat.label, name, value, ep_i, frame, feat.limits[j], feat.margin(j, th),
                                         lim.count, lim.hits))
            hits = outliers.get((which, j))
            if hits is not None:
                ep_i, frame, value = hits.worst
                med, scale = centres[(which, j)]
                out.append(outlier_finding(feat.label, name, value, ep_i, frame, hits.worst_z, med, scale, th,
                                           hits.count, hits.hits))
    return out + unlimited_findings(unlimited, yam_table)


def _stored_matches(stored: StoredStats, feats: dict[str, _Features]) -> list[StatsMatch]:
    """The stored-stats comparison (replay.doctor.stored_stats) from streamed aggregates: every candidate
    convention's mean/std/min/max/count and LeRobot's episode-mean quantiles exactly, whole-data quantiles from
    the histogram."""
    out: list[StatsMatch] = []
    levels = [q for _, q in QUANTILES]
    for feat in feats.values():
        raw = stored.get(feat.key)
        if not feat.with_stats or raw is None or feat.hist is None or feat.finite_rows < 2:
            continue
        agg = feat.merged.result()
        whole_q = np.stack([feat.hist.quantiles(j, levels) for j in range(len(feat.names))], axis=1)
        whole: FeatureStats = {k: v for k, v in agg.items() if k not in dict(QUANTILES)}
        for i, (key, _) in enumerate(QUANTILES):
            whole[key] = np.asarray(whole_q[i], dtype=np.float64)
        if feat.episode_quantiles:
            candidates = {QUANTILES_EPISODE_MEAN: agg, "whole-data": whole}
        else:
            candidates = {"no-quantiles": {k: v for k, v in agg.items() if k not in dict(QUANTILES)}}
        out.append(match_stored_stats(feat.key, feat.names, raw, candidates, whole))
    return out


def _bounds_note(feats: dict[str, _Features], track: list[LogHistogram], dt_hist: LogHistogram, frames: int,
                 episodes: int, sample: list[DoctorEpisode], settings: StreamSettings) -> list[Finding]:
    parts = []
    for feat in feats.values():
        if feat.hist is None:
            continue
        worst = int(np.argmax(feat.hist.width))
        parts.append(f"{feat.label} up to {feat.hist.width[worst]:.3g} ({feat.names[worst]})")
    err = track[0].relative_error if track else 0.0
    return [Finding(
        "info", "streamed_statistics", "dataset",
        f"{frames} frames in {episodes} episodes (more than {settings.exact_frames} frames): checked one episode at "
        f"a time in bounded memory; mean/std/min/max, LeRobot's per-episode quantiles, joint limits, lags and "
        f"timestamps are exact; whole-data quantiles come from {settings.value_bins}-bin histograms, within one "
        f"bin width ({', '.join(parts)}; dataset units), the median frame interval within "
        f"{dt_hist.relative_error:.2%} and tracking-error medians within {err:.1%}",
    )]


def _sample_text(sample: list[DoctorEpisode], settings: StreamSettings) -> str:
    frames = sum(len(e) for e in sample)
    return (f"checks that need frames (checkpoint normalization, state bins, reconstruction, the report) use a "
            f"sample of {len(sample)} whole episode(s), {frames} frames (seed {settings.seed}; "
            f"--exact-frames raises the size checked in full)")
