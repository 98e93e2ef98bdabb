"""Is this data normalized by these stats? Per-dim evidence, and the likely cause when it is not.

Why: a checkpoint's stats only mean something for the data the model was trained on. Normalizing a sample of
the dataset with the checkpoint's stats must give about [-1, 1] (quantile: the sample's 1%/99% near -1/+1) or
about mean 0 / std 1 (z-score). When it does not, the model sees inputs it never saw and emits actions that
are denormalized into nonsense: exactly how an arm flies away. Each failing dim is attributed to the cause the
numbers point to, tried in this order:

1. never normalized: the mode is identity, or the stats are identity (q01 -1 / q99 +1, or mean 0 / std 1);
2. delta mask wrong: the stats fit the actions with this dim's delta/absolute choice flipped;
3. the data as stored already looks normalized (its own 1%/99% at -1/+1, or mean 0 / std 1) on at least half
   of the feature's moving dims: double normalization, or for actions while the states are fine, output
   denormalization skipped;
4. mode swapped: the normalized data has the other mode's signature (quantile stats used as z-score, or the
   reverse);
5. otherwise: stats from another dataset.

Quantile stats are judged in their writer's convention: LeRobot 0.4+ stores each quantile as the frame-count-
weighted mean of per-episode quantiles, narrower than the quantiles of all frames when episodes cover different
ranges (on a 5-episode dataset LeRobot wrote, whole-data 1%..99% normalize to [-3.2, +3.1] with its own stats).
So with stats from a LeRobot source (processor files, stats.json) a dim fits when either the whole-data 1%/99%
or the per-episode-mean 1%/99% normalize to about -1/+1 (the stricter whole-data fit of the flipped delta
choice still wins: it is the sharper evidence); when only the per-episode mean fits, one INFO per feature says
so, and the frames outside [-1, 1] are as in training (no bin warning for them).

Thresholds are in `DataCheckThresholds`; every message names the joint and the numbers behind the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from policy_norm.modes import NormMode
from policy_norm.pipeline import NormalizationPipeline
from policy_norm.resolve import FeatureNormalizer

F64 = npt.NDArray[np.float64]


class EpisodeArrays(Protocol):
    """Anything with per-frame states [T, S] and actions [T, A] (replay's Episode fits)."""

    @property
    def states(self) -> npt.NDArray[np.float32]: ...

    @property
    def actions(self) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class DataCheckThresholds:
    """Stated thresholds of the data check.

    Quantile fit: the sample's normalized 1%/99% quantiles within `edge_tol` of -1/+1.
    Z-score fit: normalized mean within `zscore_mean_tol` of 0 and std in [zscore_std_low, zscore_std_high].
    Looks normalized (as stored): its own 1%/99% within `normalized_tol` of -1/+1 (quantile) or mean within
    `normalized_tol` of 0 and std within `normalized_tol` of 1 (z-score).
    Mode signatures (the other mode's fingerprint, which stats computed from the same data hit almost exactly):
    quantile-like = 1%/99% within `signature_tol` of -1/+1; z-like = mean within `signature_tol` of 0, std within
    `signature_tol` of 1 and a 1%..99% span of at least 2 x `z_like_half_span` (a normal sample spans 4.65, a
    uniform one 3.4, quantile-normalized data 2).
    Identity stats: every stat within `identity_tol` of the identity values.
    State bins: warn when more than `bin_out_fraction` of a state dim falls outside [-1, 1] after normalization.
    A data dim whose std is below `constant_std` is treated as constant (no spread to compare).
    `coverage`: True for the data the stats were computed from (a training set): it must span the stats' range.
    False for data the model runs on (a recording, a few held-out episodes), which covers only part of the
    training range: it must lie inside it (quantile: 1%/99% no further than `containment_tol` beyond -1/+1;
    z-score: |mean| <= 1 and std <= `zscore_std_high`), and the same causes are named when it does not.
    `containment_tol` is looser than `edge_tol` because a closed-loop run's tails are not the demonstrations':
    the arm lags its targets, so executed delta actions reach somewhat past the training range (a demo run of
    the embedded policy reaches 1.34); the failures this check exists for land many times further out.
    `stray_fraction`: in containment, a dim past the range with at most this fraction of its frames outside
    [-1, 1] and its normalized mean inside is a run that strayed (warning), not stats from another dataset.
    """

    edge_tol: float = 0.3
    zscore_mean_tol: float = 0.3
    zscore_std_low: float = 0.7
    zscore_std_high: float = 1.4
    normalized_tol: float = 0.15
    signature_tol: float = 0.15
    z_like_half_span: float = 1.4
    identity_tol: float = 1e-6
    bin_out_fraction: float = 0.05
    constant_std: float = 1e-6
    max_samples: int = 50_000
    coverage: bool = True
    containment_tol: float = 0.5
    stray_fraction: float = 0.5


@dataclass(frozen=True)
class DimMetrics:
    """Sample statistics of one dim: as stored (raw_*) and after normalization (n_*)."""

    raw_lo: float
    raw_hi: float
    raw_mean: float
    raw_std: float
    n_lo: float
    n_hi: float
    n_mean: float
    n_std: float
    frac_outside: float  # fraction of normalized values outside [-1, 1]
    # Count-weighted mean over episodes of each episode's normalized 1%/99% (LeRobot's quantile convention);
    # NaN when episodes are unknown.
    n_lo_episodes: float = float("nan")
    n_hi_episodes: float = float("nan")
    convention: str = "whole-data"  # the quantile convention the fit was judged in: "whole-data" | "episode-mean"
    # Containment: the 1%..99% lie inside the training min/max, which reach past [-1, 1] (values seen in training).
    within_trained: bool = False


@dataclass(frozen=True)
class DataFinding:
    severity: str  # "error" | "warning" | "info"
    code: str
    feature: str  # "state" | "actions"
    index: int
    name: str
    message: str

    @property
    def field(self) -> str:
        return f"{self.feature}[{self.index}] ({self.name})" if self.index >= 0 else self.feature


@dataclass(frozen=True)
class DataCheckResult:
    mode: NormMode
    samples: int
    findings: tuple[DataFinding, ...]
    metrics: dict[str, tuple[DimMetrics, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def errors(self) -> tuple[DataFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    def summary(self) -> str:
        lines = [f"data check ({self.mode}, {self.samples} samples): {'ok' if self.ok else 'FAILED'}"]
        lines += [f"  {f.severity} {f.code} {f.field}: {f.message}" for f in self.findings]
        return "\n".join(lines)


@dataclass(frozen=True)
class Samples:
    """Rows sampled from chunks: states at the chunk start, actions as stored at the start frame, and actions
    in model space at a random step of the chunk with the configured mask and with each dim's choice flipped."""

    states: F64
    stored_actions: F64
    model_actions: F64
    flipped_actions: F64  # NaN where a dim cannot be made delta (no matching state dim)
    dropped_rows: int
    episodes: npt.NDArray[np.int64] | None = None  # per row, the position of its episode in the input


def _any_state_index(action_names: Sequence[str], state_names: Sequence[str]) -> list[int]:
    out = []
    for j, name in enumerate(action_names):
        if name in state_names:
            out.append(list(state_names).index(name))
        elif j < len(state_names):
            out.append(j)
        else:
            out.append(-1)
    return out


def sample_training_space(
    episodes: Sequence[EpisodeArrays],
    pipeline: NormalizationPipeline,
    horizon: int,
    max_samples: int,
    seed: int = 0,
) -> Samples:
    cfg = pipeline.config
    mask = np.asarray(cfg.action_delta_mask, dtype=bool)
    any_idx = np.asarray(_any_state_index(cfg.action_names, cfg.state_names))
    lengths = np.array([len(ep.states) for ep in episodes], dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        raise ValueError("data check needs at least one frame")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(max_samples, total), replace=False))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    rows_s, rows_a, rows_m, rows_f, rows_e = [], [], [], [], []
    for e, ep in enumerate(episodes):
        local = picks[(picks >= bounds[e]) & (picks < bounds[e + 1])] - bounds[e]
        if local.size == 0:
            continue
        s = np.asarray(ep.states, dtype=np.float64)
        a = np.asarray(ep.actions, dtype=np.float64)
        k = rng.integers(0, horizon, size=local.size)
        row = np.minimum(local + k, len(a) - 1)
        start_state = s[local]
        chunk = a[row]
        offsets = np.zeros_like(chunk)
        for j, si in enumerate(any_idx):
            offsets[:, j] = start_state[:, si] if si >= 0 else np.nan
        model = np.where(mask, chunk - np.nan_to_num(offsets), chunk)
        flipped = np.where(mask, chunk, chunk - offsets)
        rows_s.append(start_state)
        rows_a.append(a[local])
        rows_m.append(model)
        rows_f.append(flipped)
        rows_e.append(np.full(local.size, e, dtype=np.int64))
    states = np.concatenate(rows_s)
    stored = np.concatenate(rows_a)
    model = np.concatenate(rows_m)
    flipped = np.concatenate(rows_f)
    finite = np.isfinite(states).all(axis=1) & np.isfinite(stored).all(axis=1) & np.isfinite(model).all(axis=1)
    rows = np.concatenate(rows_e)
    return Samples(states[finite], stored[finite], model[finite], flipped[finite], int((~finite).sum()),
                   rows[finite])


def _episode_mean_quantiles(values: F64, episodes: npt.NDArray[np.int64] | None) -> tuple[F64, F64]:
    """Per dim, the count-weighted mean over episodes of each episode's 1% and 99% quantiles (LeRobot's way of
    storing quantiles); NaN without episode membership."""
    dims = values.shape[1]
    if episodes is None or episodes.size != values.shape[0] or values.shape[0] == 0:
        return np.full(dims, np.nan), np.full(dims, np.nan)
    lo, hi, total = np.zeros(dims), np.zeros(dims), 0
    for e in np.unique(episodes):
        part = values[episodes == e]
        q = np.quantile(part, [0.01, 0.99], axis=0)
        lo += q[0] * part.shape[0]
        hi += q[1] * part.shape[0]
        total += part.shape[0]
    return lo / total, hi / total


def _metrics(raw: F64, normalized: F64, episodes: npt.NDArray[np.int64] | None = None) -> list[DimMetrics]:
    out = []
    ep_lo, ep_hi = _episode_mean_quantiles(normalized, episodes)
    for j in range(raw.shape[1]):
        r, n = raw[:, j], normalized[:, j]
        rq = np.quantile(r, [0.01, 0.99])
        nq = np.quantile(n, [0.01, 0.99])
        out.append(DimMetrics(
            raw_lo=float(rq[0]), raw_hi=float(rq[1]), raw_mean=float(r.mean()), raw_std=float(r.std()),
            n_lo=float(nq[0]), n_hi=float(nq[1]), n_mean=float(n.mean()), n_std=float(n.std()),
            frac_outside=float(np.mean(np.abs(n) > 1.0)),
            n_lo_episodes=float(ep_lo[j]), n_hi_episodes=float(ep_hi[j]),
        ))
    return out


def _quantile_fit(lo: float, hi: float, tol: float) -> bool:
    return abs(lo + 1.0) <= tol and abs(hi - 1.0) <= tol


def _zscore_fit(mean: float, std: float, th: DataCheckThresholds) -> bool:
    return abs(mean) <= th.zscore_mean_tol and th.zscore_std_low <= std <= th.zscore_std_high


def _fits(m: DimMetrics, mode: NormMode, th: DataCheckThresholds) -> bool:
    if not th.coverage:
        if mode == NormMode.ZSCORE:
            return abs(m.n_mean) <= 1.0 and m.n_std <= th.zscore_std_high
        return m.n_lo >= -1.0 - th.containment_tol and m.n_hi <= 1.0 + th.containment_tol
    if mode == NormMode.ZSCORE:
        return _zscore_fit(m.n_mean, m.n_std, th)
    return _quantile_fit(m.n_lo, m.n_hi, th.edge_tol) or _episode_mean_fit(m, th)


def _episode_mean_fit(m: DimMetrics, th: DataCheckThresholds) -> bool:
    """The stats are the data's quantiles in LeRobot's convention (per-episode quantiles, count-weighted mean)."""
    return bool(np.isfinite(m.n_lo_episodes)) and _quantile_fit(m.n_lo_episodes, m.n_hi_episodes, th.edge_tol)


def _looks_normalized(m: DimMetrics, mode: NormMode, th: DataCheckThresholds) -> bool:
    if mode == NormMode.ZSCORE:
        return abs(m.raw_mean) <= th.normalized_tol and abs(m.raw_std - 1.0) <= th.normalized_tol
    return _quantile_fit(m.raw_lo, m.raw_hi, th.normalized_tol)


def _identity_stats(nz: FeatureNormalizer, i: int, th: DataCheckThresholds) -> bool:
    if nz.mode == NormMode.IDENTITY:
        return True
    a, b = float(nz.a[i]), float(nz.b[i])
    if nz.mode == NormMode.QUANTILE:
        return abs(a + 1.0) <= th.identity_tol and abs(b - 1.0) <= th.identity_tol
    return abs(a) <= th.identity_tol and abs(b - 1.0) <= th.identity_tol


def _span(m: DimMetrics, mode: NormMode) -> str:
    if mode == NormMode.ZSCORE:
        return f"mean {m.n_mean:+.2f}, std {m.n_std:.2f} (expected about 0 and 1)"
    return f"1%..99% at [{m.n_lo:+.2f}, {m.n_hi:+.2f}] (expected about [-1, +1])"


def _stats_text(nz: FeatureNormalizer, i: int) -> str:
    if nz.mode == NormMode.QUANTILE:
        return f"stats q01..q99 [{nz.a[i]:.4g}, {nz.b[i]:.4g}]"
    if nz.mode == NormMode.ZSCORE:
        return f"stats mean {nz.a[i]:.4g}, std {nz.b[i]:.4g}"
    return "no stats (identity)"


class _FeatureCheck:
    """Classify the dims of one feature; collects findings."""

    def __init__(self, feature: str, nz: FeatureNormalizer, th: DataCheckThresholds,
                 bounds: tuple[F64 | None, F64 | None] = (None, None), episode_mean: bool = False) -> None:
        self.feature = feature
        # Whether the stats may be LeRobot's per-episode-mean quantiles (their source is LeRobot's): only then is
        # that convention a way to fit, so other stats are judged as strictly as before.
        self.episode_mean = episode_mean
        self.nz = nz
        self.th = th
        # The training data's min/max normalized (when the stats carry them, as LeRobot's do): in containment they
        # are the trained range, wider than [-1, 1] when the quantiles are per-episode means.
        lo, hi = bounds
        self.n_min: F64 | None = None
        self.n_max: F64 | None = None
        sized = lo is not None and hi is not None and lo.size == nz.dim and hi.size == nz.dim
        if sized and lo is not None and hi is not None and nz.mode == NormMode.QUANTILE:
            n_lo, n_hi = nz.normalize(lo[None, :])[0], nz.normalize(hi[None, :])[0]
            self.n_min, self.n_max = np.minimum(n_lo, n_hi), np.maximum(n_lo, n_hi)
        self.findings: list[DataFinding] = []
        self.already_normalized: list[int] = []
        self.normalized: F64 = np.zeros((0, nz.dim))

    def trained_interval(self, i: int) -> tuple[float, float]:
        """The normalized interval the training data spanned: [-1, 1], widened to its min/max when known."""
        if self.n_min is None or self.n_max is None:
            return -1.0, 1.0
        return min(-1.0, float(self.n_min[i])), max(1.0, float(self.n_max[i]))

    def add(self, severity: str, code: str, i: int, message: str) -> None:
        self.findings.append(DataFinding(severity, code, self.feature, i, self.nz.names[i], message))

    def run(self, raw: F64, model_space: F64, flipped: F64 | None, mask: Sequence[bool],
            episodes: npt.NDArray[np.int64] | None = None) -> list[DimMetrics]:
        nz, th, mode = self.nz, self.th, self.nz.mode
        normalized = nz.normalize(model_space)
        self.normalized = normalized
        metrics = _metrics(model_space, normalized, episodes if self.episode_mean else None)
        if mode == NormMode.QUANTILE and th.coverage:
            metrics = [replace(m, convention="episode-mean")
                       if not _quantile_fit(m.n_lo, m.n_hi, th.edge_tol) and _episode_mean_fit(m, th) else m
                       for m in metrics]
        if not th.coverage:
            metrics = [replace(m, within_trained=self.within_trained_range(i, m)) for i, m in enumerate(metrics)]
        stored = _metrics(raw, raw)
        moving = 0
        candidates: list[int] = []
        for i, m in enumerate(metrics):
            name = nz.names[i]
            if nz.degenerate[i]:
                continue  # reported from the pipeline's degenerate list
            if m.raw_std < th.constant_std:
                value = float(normalized[0, i])
                if abs(value) > 1.0:
                    self.add("warning", "constant_out_of_range", i,
                             f"{name} is constant ({m.raw_mean:.4g}) in the data and normalizes to {value:+.2f}, "
                             f"outside [-1, 1] ({_stats_text(nz, i)})")
                else:
                    self.add("info", "constant_in_data", i,
                             f"{name} never moves in the data (constant {m.raw_mean:.4g})")
                continue
            moving += 1
            # Containment cannot tell robot units that happen to lie in [-1, 1] from normalized data, so identity
            # stats are judged first there; coverage judges them only when the data does not fit.
            if (_fits(m, mode, th) or self._within_trained(i, m)) and (th.coverage or not _identity_stats(nz, i, th)):
                if m.convention == "episode-mean" and flipped is not None:
                    self._delta_flip_fits(i, m, flipped, mask)  # a strict fit of the other choice is reported
                continue
            if _identity_stats(nz, i, th):
                why = "the mode is identity" if mode == NormMode.IDENTITY else f"the {mode} stats are identity values"
                self.add("error", "never_normalized", i,
                         f"data never normalized: {why}, so {name} reaches the model in robot units: it spans "
                         f"[{m.raw_lo:.4g}, {m.raw_hi:.4g}] (1%..99%), {m.frac_outside:.0%} outside [-1, 1]")
                continue
            if flipped is not None and self._delta_flip_fits(i, m, flipped, mask):
                continue
            if _looks_normalized(stored[i], mode, th):
                candidates.append(i)
                continue
            if not th.coverage and self._strays(i, m):
                continue
            self._other_causes(i, m)
        # Already-normalized data affects a whole feature; one joint that happens to span [-1, 1] does not count.
        if candidates and 2 * len(candidates) >= moving:
            self.already_normalized = candidates
        else:
            for i in candidates:
                self._other_causes(i, metrics[i])
        return metrics

    def _delta_flip_fits(self, i: int, m: DimMetrics, flipped: F64, mask: Sequence[bool]) -> bool:
        nz, mode = self.nz, self.nz.mode
        if i >= flipped.shape[1] or not np.isfinite(flipped[:, i]).all():
            return False
        alt_n = nz.normalize(_column_into(flipped[:, i], i, nz.dim))[:, i : i + 1]
        alt = _metrics(flipped[:, i : i + 1], alt_n)[0]
        if not _fits(alt, mode, self.th):
            return False
        said, fits = ("delta", "absolute") if mask[i] else ("absolute", "delta")
        self.add("error", "delta_mask_wrong", i,
                 f"delta mask wrong: the mask says {nz.names[i]} is {said}, but the stats fit its {fits} "
                 f"actions ({_span(alt, mode)}), not the {said} ones ({_span(m, mode)})")
        return True

    def within_trained_range(self, i: int, m: DimMetrics) -> bool:
        """Containment: the run's 1%..99% inside the training min/max, which reach past [-1, 1] (the quantiles
        are narrower than the training data, as LeRobot's per-episode means are): the frames outside [-1, 1] are
        values the model saw there in training too."""
        if self.th.coverage or self.n_min is None:
            return False
        lo, hi = self.trained_interval(i)
        return (lo < -1.0 or hi > 1.0) and m.n_lo >= lo and m.n_hi <= hi

    def report_trained_range(self, metrics: Sequence[DimMetrics]) -> None:
        """One INFO naming the dims a run keeps inside the training min/max but outside [-1, 1]."""
        dims = [i for i, m in enumerate(metrics) if m.frac_outside > 0 and m.within_trained]
        if not dims:
            return
        worst = max(dims, key=lambda i: metrics[i].frac_outside)
        self.findings.append(DataFinding(
            "info", "inside_training_min_max", self.feature, -1, "",
            f"{len(dims)} dim(s) ({', '.join(self.nz.names[i] for i in dims)}) reach outside [-1, 1] but stay inside "
            f"the training data's min/max that the stats carry (up to {metrics[worst].frac_outside:.1%} of the frames "
            f"of {self.nz.names[worst]}): the quantiles are narrower than the training data, so those values are "
            f"in the trained range"))

    def _within_trained(self, i: int, m: DimMetrics) -> bool:
        """Containment against the training min/max (when known): inside them the run is in the trained range."""
        if self.th.coverage or self.n_min is None or self.nz.mode != NormMode.QUANTILE:
            return False
        lo, hi = self.trained_interval(i)
        return m.n_lo >= lo - self.th.containment_tol and m.n_hi <= hi + self.th.containment_tol

    def _strays(self, i: int, m: DimMetrics) -> bool:
        """Containment: the bulk of a run inside the training range and its tail beyond is a run that strayed (a
        policy extrapolating in a failing episode, the arm pushed off the demonstrations), not another dataset's
        stats, whose data would sit outside as a whole. A warning with the figures."""
        th = self.th
        lo, hi = self.trained_interval(i)
        col = self.normalized[:, i]
        beyond = float(np.mean((col < lo) | (col > hi))) if col.size else 0.0
        if beyond > th.stray_fraction or not lo <= m.n_mean <= hi:
            return False
        name = self.nz.names[i]
        what = ("the policy's actions went" if self.feature == "actions" else "the robot's state went")
        self.add("warning", "beyond_training_range", i,
                 f"beyond the training range: {what} past the checkpoint's range on {name} in this run: normalized "
                 f"1%..99% at [{m.n_lo:+.2f}, {m.n_hi:+.2f}], {m.frac_outside:.1%} of the frames outside [-1, 1] while "
                 f"the bulk (mean {m.n_mean:+.2f}) lies inside; a run that strayed from its demonstrations (a failing "
                 f"episode), not stats from another dataset ({_stats_text(self.nz, i)})")
        return True

    def _other_causes(self, i: int, m: DimMetrics) -> None:
        nz, th, mode = self.nz, self.th, self.nz.mode
        name = nz.names[i]
        if mode == NormMode.ZSCORE and _quantile_fit(m.n_lo, m.n_hi, th.signature_tol):
            self.add("error", "quantile_stats_as_zscore", i,
                     f"quantile stats used as z-score: normalized as z-score, {name} has 1%..99% at "
                     f"[{m.n_lo:+.2f}, {m.n_hi:+.2f}] and std {m.n_std:.2f} (z-scored data has std 1): "
                     f"{_stats_text(nz, i)} behave like the q01..q99 mid-point and half-range; check the mode")
        elif mode == NormMode.QUANTILE and abs(m.n_mean) <= th.signature_tol \
                and abs(m.n_std - 1.0) <= th.signature_tol and m.n_hi - m.n_lo >= 2.0 * th.z_like_half_span:
            self.add("error", "zscore_stats_as_quantile", i,
                     f"z-score stats used as quantile: normalized as quantile, {name} has mean {m.n_mean:+.2f}, "
                     f"std {m.n_std:.2f} and 1%..99% at [{m.n_lo:+.2f}, {m.n_hi:+.2f}] (expected [-1, +1]): "
                     f"{_stats_text(nz, i)} behave like mean -/+ std; check the mode")
        else:
            self.add("error", "stats_mismatch", i,
                     f"stats from another dataset: the data is not normalized by these stats: normalized, {name} "
                     f"has {_span(m, mode)}; data 1%..99% [{m.raw_lo:.4g}, {m.raw_hi:.4g}], mean {m.raw_mean:.4g}, "
                     f"std {m.raw_std:.4g} vs {_stats_text(nz, i)}")

    def report_convention(self, metrics: Sequence[DimMetrics]) -> None:
        """One INFO when dims fit only in LeRobot's per-episode-mean quantile convention."""
        dims = [i for i, m in enumerate(metrics) if m.convention == "episode-mean"]
        if not dims:
            return
        worst = max(dims, key=lambda i: max(-metrics[i].n_lo, metrics[i].n_hi))
        w = metrics[worst]
        names = ", ".join(self.nz.names[i] for i in dims)
        self.findings.append(DataFinding(
            "info", "quantiles_per_episode_mean", self.feature, -1, "",
            f"the stats' q01/q99 are the data's per-episode quantiles averaged over episodes (LeRobot's convention), "
            f"not quantiles of all frames, on {len(dims)} dim(s) ({names}); normalized with them the per-episode "
            f"1%..99% average to about [-1, +1] while the whole-data 1%..99% reach [{w.n_lo:+.2f}, {w.n_hi:+.2f}] "
            f"({self.nz.names[worst]}) and {w.frac_outside:.1%} of its frames fall outside [-1, 1], as in training "
            f"with these stats"))

    def report_already_normalized(self, code: str, raw: F64) -> None:
        stored = _metrics(raw, raw)
        for i in self.already_normalized:
            m = stored[i]
            name = self.nz.names[i]
            if code == "output_denormalization_skipped":
                msg = (f"output denormalization skipped: {name} actions look like model-space values (1%..99% at "
                       f"[{m.raw_lo:+.2f}, {m.raw_hi:+.2f}], mean {m.raw_mean:+.2f}) while the states are in robot "
                       f"units; the model output was not denormalized ({_stats_text(self.nz, i)})")
            else:
                msg = (f"double normalization: {name} already looks normalized as stored (1%..99% at "
                       f"[{m.raw_lo:+.2f}, {m.raw_hi:+.2f}], mean {m.raw_mean:+.2f}, std {m.raw_std:.2f}); "
                       f"normalizing it again with {_stats_text(self.nz, i)} moves it off [-1, 1]")
            self.add("error", code, i, msg)


def _column_into(col: F64, i: int, width: int) -> F64:
    out = np.zeros((col.shape[0], width))
    out[:, i] = col
    return out


def check_data(
    pipeline: NormalizationPipeline,
    episodes: Sequence[EpisodeArrays],
    thresholds: DataCheckThresholds | None = None,
    seed: int = 0,
) -> DataCheckResult:
    """Normalize a sample of `episodes` with the pipeline's stats and say, per dim, whether it fits."""
    th = thresholds or DataCheckThresholds()
    cfg = pipeline.config
    findings: list[DataFinding] = []
    horizon = cfg.action_horizon
    if horizon is None:
        horizon = 1
        if any(cfg.action_delta_mask):
            findings.append(DataFinding(
                "warning", "action_horizon_unset", "actions", -1, "",
                "action_horizon is not set; delta dims are compared at horizon 1, but stats computed over chunks "
                "are wider (set action_horizon in the normalization config)",
            ))
    for i, s in enumerate(episodes):
        if s.states.shape[1:] != (cfg.state_dim,) or s.actions.shape[1:] != (cfg.action_dim,):
            raise ValueError(
                f"episode {i}: states/actions are {list(s.states.shape)}/{list(s.actions.shape)}, expected "
                f"[T, {cfg.state_dim}]/[T, {cfg.action_dim}] as the normalization config says"
            )
    samples = sample_training_space(episodes, pipeline, horizon, th.max_samples, seed)
    if samples.states.shape[0] < 2:
        findings.append(DataFinding("error", "no_finite_samples", "state", -1, "",
                                    f"fewer than 2 sampled rows are finite ({samples.dropped_rows} hold NaN/inf): "
                                    f"nothing to compare the stats with"))
        return DataCheckResult(pipeline.mode, int(samples.states.shape[0]), tuple(findings))
    if samples.dropped_rows:
        findings.append(DataFinding("warning", "non_finite_rows", "state", -1, "",
                                    f"{samples.dropped_rows} sampled rows hold NaN/inf and were left out"))
    for d in pipeline.degenerate:
        findings.append(DataFinding(
            "warning", "degenerate_dim", d.feature, d.index, d.name,
            f"degenerate dim: {d.name} has spread {d.spread:.3g} in the stats (a joint that never moved in training); "
            f"policy '{d.policy}'",
        ))
    stats = pipeline.stats
    lerobot = stats.source.kind.startswith("lerobot")
    state_check = _FeatureCheck("state", pipeline.resolved.state, th, (stats.state.get("min"), stats.state.get("max")),
                                lerobot)
    state_metrics = state_check.run(samples.states, samples.states, None, [False] * cfg.state_dim, samples.episodes)
    action_check = _FeatureCheck("actions", pipeline.resolved.actions, th,
                                 (stats.actions.get("min"), stats.actions.get("max")), lerobot)
    action_metrics = action_check.run(
        samples.stored_actions, samples.model_actions, samples.flipped_actions, cfg.action_delta_mask,
        samples.episodes,
    )
    state_check.report_convention(state_metrics)
    action_check.report_convention(action_metrics)
    state_check.report_trained_range(state_metrics)
    action_check.report_trained_range(action_metrics)
    states_fine = not state_check.already_normalized and not any(f.severity == "error" for f in state_check.findings)
    state_check.report_already_normalized("double_normalization", samples.states)
    action_check.report_already_normalized(
        "output_denormalization_skipped" if states_fine else "double_normalization", samples.stored_actions
    )
    if cfg.state_bins > 0:
        bad = {f.index for f in state_check.findings if f.severity == "error"}
        for i, m in enumerate(state_metrics):
            if i in bad or pipeline.resolved.state.degenerate[i] or m.raw_std < th.constant_std \
                    or m.convention == "episode-mean" or m.within_trained:
                continue  # frames outside [-1, 1] as in training (the INFO says how many)
            if m.frac_outside > th.bin_out_fraction:
                state_check.add("warning", "state_out_of_bin_range", i,
                                f"state out of bin range: {m.frac_outside:.1%} of {pipeline.resolved.state.names[i]} "
                                f"normalizes outside [-1, 1] (1%..99% at [{m.n_lo:+.2f}, {m.n_hi:+.2f}]); their "
                                f"prompt bins are -1 or {cfg.state_bins - 1}, whatever the value")
    findings += state_check.findings + action_check.findings
    return DataCheckResult(
        mode=pipeline.mode,
        samples=int(samples.states.shape[0]),
        findings=tuple(findings),
        metrics={"state": tuple(state_metrics), "actions": tuple(action_metrics)},
    )
