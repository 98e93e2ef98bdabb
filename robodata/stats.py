"""Feature statistics: exact per-feature stats, exact per-channel image stats, and per-episode aggregation.

Why one module: the writer computes the stats LeRobot stores (`stats.json`, per-episode stats), the readers
aggregate per-episode stats when a dataset stores only those (LeRobot v2.1 `episodes_stats.jsonl`), and the
normalization code downstream trusts both. Keeping the formulas in one place keeps them consistent.

Conventions (LeRobot's): `std` is the population standard deviation (ddof=0); `count` is a one-element array
holding the number of frames; image stats are per channel, shaped (C, 1, 1), on pixel values scaled to [0, 1].
Quantiles use numpy's default linear interpolation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from robodata.dataset import DatasetError

StatsArray = npt.NDArray[np.float64]
FeatureStats = dict[str, StatsArray]
Stats = dict[str, FeatureStats]

# LeRobot's quantile keys and their levels.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("q01", 0.01),
    ("q10", 0.10),
    ("q50", 0.50),
    ("q90", 0.90),
    ("q99", 0.99),
)
BASIC_KEYS: tuple[str, ...] = ("min", "max", "mean", "std", "count")


def compute_feature_stats(values: npt.ArrayLike, with_quantiles: bool = True) -> FeatureStats:
    """Exact stats over the first (time) axis of a numeric feature [N, ...]."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise DatasetError(f"stats need at least one frame, got shape {arr.shape}")
    out: FeatureStats = {
        "min": arr.min(axis=0),
        "max": arr.max(axis=0),
        "mean": arr.mean(axis=0),
        "std": arr.std(axis=0),
        "count": np.array([arr.shape[0]], dtype=np.float64),
    }
    if with_quantiles:
        levels = [q for _, q in QUANTILES]
        qs = np.quantile(arr, levels, axis=0)
        for i, (key, _) in enumerate(QUANTILES):
            out[key] = np.asarray(qs[i], dtype=np.float64)
    return out


def _quantile_from_histogram(hist: npt.NDArray[np.int64], q: float) -> float:
    """Linear-interpolated quantile of the sorted sample a histogram of integer values describes.

    Equal to `np.quantile(sample, q)` but O(256) instead of sorting millions of pixels.
    """
    n = int(hist.sum())
    cum = np.cumsum(hist)
    h = (n - 1) * q
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    v_lo = float(np.searchsorted(cum, lo, side="right"))
    v_hi = float(np.searchsorted(cum, hi, side="right"))
    return v_lo + (h - lo) * (v_hi - v_lo)


def channel_histograms(frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Per-channel histograms [C, 256] of RGB uint8 frames [N, H, W, C] (sum them to pool episodes)."""
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise DatasetError(f"image stats need uint8 [N, H, W, C] frames, got {frames.dtype} {frames.shape}")
    channels = frames.shape[-1]
    # One bincount over (channel * 256 + value) instead of one strided pass per channel.
    codes = frames.reshape(-1, channels).astype(np.uint16) + (np.arange(channels, dtype=np.uint16) * 256)
    counts = np.bincount(codes.reshape(-1), minlength=256 * channels)
    return counts.reshape(channels, 256).astype(np.int64)


def image_stats_from_histograms(
    hists: npt.NDArray[np.int64], num_frames: int, with_quantiles: bool = True
) -> FeatureStats:
    """Exact per-channel stats, scaled to [0, 1] and shaped (C, 1, 1), from per-channel pixel histograms.

    `count` is the number of frames, as LeRobot stores it for image features.
    """
    if hists.ndim != 2 or hists.shape[1] != 256 or np.any(hists.sum(axis=1) == 0):
        raise DatasetError(f"image stats need non-empty [C, 256] histograms, got shape {hists.shape}")
    channels = hists.shape[0]
    levels = np.arange(256, dtype=np.float64)
    mins, maxs, means, stds = [], [], [], []
    quants: dict[str, list[float]] = {key: [] for key, _ in QUANTILES}
    for hist in hists:
        n = float(hist.sum())
        nonzero = np.flatnonzero(hist)
        mean = float((hist * levels).sum() / n)
        var = float((hist * (levels - mean) ** 2).sum() / n)
        mins.append(float(nonzero[0]))
        maxs.append(float(nonzero[-1]))
        means.append(mean)
        stds.append(float(np.sqrt(var)))
        if with_quantiles:
            for key, q in QUANTILES:
                quants[key].append(_quantile_from_histogram(hist, q))

    def shaped(vals: list[float]) -> StatsArray:
        return (np.asarray(vals, dtype=np.float64) / 255.0).reshape(channels, 1, 1)

    out: FeatureStats = {
        "min": shaped(mins),
        "max": shaped(maxs),
        "mean": shaped(means),
        "std": shaped(stds),
        "count": np.array([num_frames], dtype=np.float64),
    }
    if with_quantiles:
        for key, _ in QUANTILES:
            out[key] = shaped(quants[key])
    return out


def compute_image_stats(frames: npt.NDArray[np.uint8], with_quantiles: bool = True) -> FeatureStats:
    """Exact per-channel stats of RGB uint8 frames [N, H, W, C], scaled to [0, 1], shaped (C, 1, 1)."""
    return image_stats_from_histograms(channel_histograms(frames), frames.shape[0], with_quantiles)


def aggregate_stats(per_episode: Sequence[Mapping[str, Mapping[str, npt.ArrayLike]]]) -> Stats:
    """Combine per-episode stats into dataset stats.

    count-weighted mean, pooled (population) std, min of mins, max of maxes, summed count. Quantiles cannot
    be combined exactly; when every episode has a quantile it is returned as the count-weighted mean of the
    episode quantiles (an approximation, the same one LeRobot uses); otherwise it is left out.
    """
    if not per_episode:
        raise DatasetError("cannot aggregate stats over zero episodes")
    features: list[str] = []
    for ep in per_episode:
        for key in ep:
            if key not in features:
                features.append(key)
    out: Stats = {}
    for feature in features:
        entries = [ep[feature] for ep in per_episode if feature in ep]
        for i, entry in enumerate(entries):
            missing = [k for k in ("mean", "std", "min", "max", "count") if k not in entry]
            if missing:
                raise DatasetError(f"per-episode stats for '{feature}' (entry {i}) lack {missing}")
        counts = np.array([float(np.asarray(e["count"], dtype=np.float64).reshape(-1)[0]) for e in entries])
        total = float(counts.sum())
        if total <= 0:
            raise DatasetError(f"per-episode stats for '{feature}' have a total count of {total}")
        means = [np.asarray(e["mean"], dtype=np.float64) for e in entries]
        stds = [np.asarray(e["std"], dtype=np.float64) for e in entries]
        shape = means[0].shape
        for i, (m, s) in enumerate(zip(means, stds, strict=True)):
            if m.shape != shape or s.shape != shape:
                raise DatasetError(
                    f"per-episode stats for '{feature}' (entry {i}) have shape {m.shape}/{s.shape}, "
                    f"expected {shape} like the first entry"
                )
        weights = counts / total
        mean = sum((w * m for w, m in zip(weights, means, strict=True)), np.zeros(shape))
        var = sum(
            (w * (s**2 + (m - mean) ** 2) for w, m, s in zip(weights, means, stds, strict=True)),
            np.zeros(shape),
        )
        agg: FeatureStats = {
            "min": np.min(np.stack([np.asarray(e["min"], dtype=np.float64) for e in entries]), axis=0),
            "max": np.max(np.stack([np.asarray(e["max"], dtype=np.float64) for e in entries]), axis=0),
            "mean": np.asarray(mean, dtype=np.float64),
            "std": np.sqrt(np.maximum(np.asarray(var, dtype=np.float64), 0.0)),
            "count": np.array([total], dtype=np.float64),
        }
        for key, _ in QUANTILES:
            if all(key in e for e in entries):
                qs = [np.asarray(e[key], dtype=np.float64) for e in entries]
                agg[key] = np.asarray(
                    sum((w * q for w, q in zip(weights, qs, strict=True)), np.zeros(shape)), dtype=np.float64
                )
        out[feature] = agg
    return out


def has_quantiles(stats: Mapping[str, Mapping[str, object]]) -> bool:
    """True when any feature carries at least one quantile key."""
    return any(key in feat for feat in stats.values() for key, _ in QUANTILES)


def stats_to_json(
    stats: Mapping[str, Mapping[str, npt.ArrayLike]], int_count: bool = True
) -> dict[str, object]:
    """Stats as plain JSON values (nested lists), `count` as integers like LeRobot writes it."""
    out: dict[str, object] = {}
    for feature, feat in stats.items():
        entry: dict[str, object] = {}
        for key, value in feat.items():
            arr = np.asarray(value)
            if key == "count" and int_count:
                entry[key] = np.rint(arr).astype(np.int64).tolist()
            else:
                entry[key] = arr.astype(np.float64).tolist()
        out[feature] = entry
    return out


def stats_from_json(raw: object, where: str) -> Stats:
    """Parse `{feature: {stat: nested list}}` into float64 arrays, naming the file and field on bad input."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: expected an object of features, got {type(raw).__name__}")
    out: Stats = {}
    for feature, feat in raw.items():
        if not isinstance(feat, dict):
            raise DatasetError(
                f"{where}: stats['{feature}'] must be an object of stats, got {type(feat).__name__}"
            )
        parsed: FeatureStats = {}
        for key, value in feat.items():
            try:
                parsed[str(key)] = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise DatasetError(f"{where}: stats['{feature}']['{key}'] is not numeric: {err}") from err
        out[str(feature)] = parsed
    return out


# ---- the writers' conventions ----------------------------------------------------------------------------
#
# Stored stats are only comparable with stats recomputed the way their writer computed them. mean, std, min, max
# and count aggregate exactly from per-episode values in every convention; quantiles do not:
# - LeRobot 0.4+ (dataset v3.0) computes each episode's quantiles from a 5000-bin histogram spanning that
#   episode's [min, max] (float32, linear interpolation inside the bin; an episode of one frame takes its mean),
#   stores them per episode (`stats/<feature>/qNN` columns) and writes to meta/stats.json the count-weighted
#   mean of the episode quantiles, which is not the quantile of all frames;
# - LeRobot 0.3 (dataset v2.1) stores per-episode mean/std/min/max/count only (meta/episodes_stats.jsonl);
# - this project's writer and `replay stats` store exact whole-data quantiles (numpy, linear interpolation).

LEROBOT_QUANTILE_BINS = 5000
QUANTILES_WHOLE_DATA = "whole-data"
QUANTILES_EPISODE_MEAN = "episode-mean"
QUANTILE_CONVENTIONS: tuple[str, ...] = (QUANTILES_WHOLE_DATA, QUANTILES_EPISODE_MEAN)


def lerobot_episode_quantiles(values: npt.ArrayLike) -> dict[str, StatsArray]:
    """Per-dim quantiles of one episode [T, D] as LeRobot 0.4-0.6 computes them (RunningQuantileStats over one
    batch): float32 data, a 5000-bin histogram from min - 1e-10 to max + 1e-10 (float32 arithmetic), the
    quantile interpolated linearly inside the bin where the cumulative count reaches q x T."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DatasetError(f"episode quantiles need [T, D] values with T >= 1, got shape {arr.shape}")
    n, dims = arr.shape
    if n < 2:  # LeRobot's basic stats: every quantile is the mean
        mean = arr.astype(np.float64).mean(axis=0)
        return {key: mean.copy() for key, _ in QUANTILES}
    out = {key: np.empty(dims, dtype=np.float64) for key, _ in QUANTILES}
    lows = arr.min(axis=0) - np.float32(1e-10)
    highs = arr.max(axis=0) + np.float32(1e-10)
    last = LEROBOT_QUANTILE_BINS - 1
    # The histogram's cumulative count at bin i is the number of values below edge i + 1 (all of them at the last
    # bin), so only the few bins the quantiles land in are counted, by binary search in the sorted column: the
    # same integers as np.histogram's, without filling 5000 bins per dim and episode.
    ordered = np.sort(arr, axis=0)
    for j in range(dims):
        col = ordered[:, j]
        edges = np.linspace(lows[j], highs[j], LEROBOT_QUANTILE_BINS + 1)

        def cum(i: int, col: npt.NDArray[np.float32] = col, edges: npt.NDArray[np.float32] = edges) -> int:
            return n if i >= last else int(np.searchsorted(col, edges[i + 1], side="left"))

        for key, q in QUANTILES:
            target = q * n
            # The first bin whose cumulative count reaches the target: the one holding value number ceil(target).
            rank = int(np.ceil(target))
            idx = 0 if rank <= 0 else min(max(int(np.searchsorted(edges, col[rank - 1], side="right")) - 1, 0), last)
            if idx == 0:
                value = float(edges[0])
            else:
                before = float(cum(idx - 1))
                inside = float(cum(idx)) - before
                value = float(edges[idx]) if inside == 0 else float(
                    edges[idx] + (target - before) / inside * (edges[idx + 1] - edges[idx]))
            out[key][j] = value
    return out


def episode_feature_stats(values: npt.ArrayLike, quantiles: str | None) -> FeatureStats:
    """One episode's stats [T, D] -> mean/std/min/max/count, plus quantiles computed per `quantiles`:
    QUANTILES_EPISODE_MEAN (LeRobot's histogram quantiles, to be averaged over episodes), QUANTILES_WHOLE_DATA
    (left out here: they need all frames at once) or None."""
    out = compute_feature_stats(values, with_quantiles=False)
    if quantiles == QUANTILES_EPISODE_MEAN:
        out.update(lerobot_episode_quantiles(values))
    return out


def recompute_stats(per_episode_values: Sequence[npt.ArrayLike], quantiles: str | None) -> FeatureStats:
    """A feature's dataset stats from its per-episode values, the way a writer of the given quantile convention
    computed them: mean/std/min/max/count exactly, quantiles as the count-weighted mean of LeRobot's episode
    quantiles (QUANTILES_EPISODE_MEAN), as exact quantiles of all frames (QUANTILES_WHOLE_DATA), or none."""
    if quantiles not in (None, *QUANTILE_CONVENTIONS):
        raise ValueError(f"quantile convention must be one of {QUANTILE_CONVENTIONS} or None, got {quantiles!r}")
    episodes = [e for e in (np.asarray(v, dtype=np.float64) for v in per_episode_values) if e.shape[0]]
    if not episodes:
        raise DatasetError("stats need at least one frame")
    per_episode = [{"f": episode_feature_stats(v, quantiles)} for v in episodes]
    out = aggregate_stats(per_episode)["f"]
    if quantiles == QUANTILES_WHOLE_DATA:
        levels = [q for _, q in QUANTILES]
        qs = np.quantile(np.concatenate(episodes), levels, axis=0)
        for i, (key, _) in enumerate(QUANTILES):
            out[key] = np.asarray(qs[i], dtype=np.float64)
    return out


# ---- whole-data quantiles in bounded memory ------------------------------------------------------------------
#
# Exact whole-data quantiles need every frame in memory at once; a dataset of tens of millions of frames does not
# fit. These histograms are fed one episode at a time and merge by addition, so memory is bins x dims whatever the
# dataset's size, and every quantile they give is within one bin width of the exact one (the order statistic lies
# in the bin the cumulative count points at).


class LinearHistogram:
    """Per-dim quantiles of values fed in batches [N, D], from a fixed number of equal bins per dim.

    The range starts at the first batch's [min, max] and doubles (pairs of bins merged) whenever a value falls
    outside, so it always covers every value seen; `bin_width` is the quantile error bound per dim. Non-finite
    values are skipped (and counted). Exact min/max are kept alongside."""

    def __init__(self, dims: int, bins: int = 1 << 14) -> None:
        if bins < 2 or bins % 2:
            raise ValueError(f"bins must be an even number >= 2, got {bins}")
        self.dims = dims
        self.bins = bins
        self.counts = np.zeros((dims, bins), dtype=np.int64)
        self.lo = np.zeros(dims, dtype=np.float64)
        self.width = np.zeros(dims, dtype=np.float64)  # 0 = no value seen yet
        self.min = np.full(dims, np.inf)
        self.max = np.full(dims, -np.inf)
        self.skipped = np.zeros(dims, dtype=np.int64)

    def _cover(self, d: int, lo: float, hi: float) -> None:
        if self.width[d] == 0.0:
            span = hi - lo
            floor = 1e-9 * max(1.0, abs(lo), abs(hi))
            self.lo[d] = lo
            self.width[d] = max(span, floor) / (self.bins - 1)  # hi falls inside the last bin
            return
        half = self.bins // 2
        while lo < self.lo[d] or hi >= self.lo[d] + self.bins * self.width[d]:
            merged = self.counts[d].reshape(half, 2).sum(axis=1)
            self.counts[d] = 0
            if lo < self.lo[d]:  # grow downwards: the old range becomes the upper half
                self.counts[d, half:] = merged
                self.lo[d] -= self.bins * self.width[d]
            else:
                self.counts[d, :half] = merged
            self.width[d] *= 2.0

    def add(self, values: npt.ArrayLike) -> None:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != self.dims:
            raise ValueError(f"expected values [N, {self.dims}], got shape {arr.shape}")
        if arr.shape[0] == 0:
            return
        finite = np.isfinite(arr)
        all_finite = bool(finite.all())
        if all_finite:
            lows, highs = arr.min(axis=0), arr.max(axis=0)
        else:
            self.skipped += (~finite).sum(axis=0)
            lows = np.where(finite, arr, np.inf).min(axis=0)
            highs = np.where(finite, arr, -np.inf).max(axis=0)
        seen = np.isfinite(lows)
        for d in np.flatnonzero(seen):
            self._cover(int(d), float(lows[d]), float(highs[d]))
        self.min = np.where(seen, np.minimum(self.min, lows), self.min)
        self.max = np.where(seen, np.maximum(self.max, highs), self.max)
        # One bincount over (dim * bins + bin) for all dims at once.
        width = np.where(self.width > 0, self.width, 1.0)
        idx = np.floor((arr - self.lo) / width)
        if not all_finite:
            idx = idx[finite]
            offsets = np.broadcast_to(np.arange(self.dims) * self.bins, arr.shape)[finite]
        else:
            offsets = np.broadcast_to(np.arange(self.dims) * self.bins, arr.shape)
        codes = np.clip(idx, 0, self.bins - 1).astype(np.int64) + offsets
        self.counts += np.bincount(codes.reshape(-1), minlength=self.dims * self.bins).reshape(self.dims, self.bins)

    def count(self, d: int) -> int:
        return int(self.counts[d].sum())

    def _order_stat(self, d: int, cum: npt.NDArray[np.int64], k: int) -> float:
        b = int(np.searchsorted(cum, k, side="right"))
        before = int(cum[b - 1]) if b else 0
        inside = int(cum[b]) - before
        value = self.lo[d] + (b + (k - before + 0.5) / inside) * self.width[d]
        return float(min(max(value, self.min[d]), self.max[d]))

    def quantiles(self, d: int, levels: Sequence[float]) -> StatsArray:
        """Quantiles of dim d (numpy's linear interpolation between order statistics), each within one bin width
        of the exact value; NaN when no finite value was seen."""
        n = self.count(d)
        if n == 0:
            return np.full(len(levels), np.nan)
        cum = np.cumsum(self.counts[d])
        out = []
        for q in levels:
            h = (n - 1) * float(q)
            k = int(np.floor(h))
            lo = self._order_stat(d, cum, k)
            hi = self._order_stat(d, cum, min(k + 1, n - 1))
            out.append(lo + (h - k) * (hi - lo))
        return np.asarray(out, dtype=np.float64)

    def median_abs_deviation(self, d: int, center: float) -> float:
        """Median of |x - center| from the bin centres (within 1.5 bin widths of the exact value when `center`
        is within one bin width of the exact median)."""
        n = self.count(d)
        if n == 0:
            return float("nan")
        centres = self.lo[d] + (np.arange(self.bins) + 0.5) * self.width[d]
        dist = np.abs(centres - center)
        order = np.argsort(dist, kind="stable")
        cum = np.cumsum(self.counts[d][order])
        b = int(np.searchsorted(cum, (n - 1) / 2.0, side="right"))
        return float(dist[order[min(b, self.bins - 1)]])


class LogHistogram:
    """Per-dim quantiles of magnitudes |x| (errors, intervals) from bins of equal relative width: a value's bin is
    the top bits of its float32 bit pattern (the exponent and the first `mantissa_bits` mantissa bits, which
    order positive floats as their values do), so binning costs no logarithm and each bin spans a relative
    2 ** -mantissa_bits. Values below `low` count in the first bin and above `high` in the last, which keeps the
    order (a median inside the range stays bounded); NaN and inf are skipped."""

    def __init__(self, dims: int, low: float = 1e-9, high: float = 1e4, mantissa_bits: int = 6) -> None:
        if not 0 < low < high:
            raise ValueError(f"need 0 < low < high, got {low}, {high}")
        if not 0 <= mantissa_bits <= 23:
            raise ValueError(f"mantissa_bits must be in 0..23, got {mantissa_bits}")
        self.dims = dims
        self.shift = 23 - mantissa_bits
        self.first = int(np.array(low, dtype=np.float32).view(np.int32)) >> self.shift
        self.last = int(np.array(high, dtype=np.float32).view(np.int32)) >> self.shift
        self.bins = self.last - self.first + 1
        self.nonfinite = 255 << (23 - self.shift)  # exponent all ones: inf and NaN
        self.mantissa_bits = mantissa_bits
        self.counts = np.zeros((dims, self.bins), dtype=np.int64)
        self._pending: list[npt.NDArray[np.int64]] = []
        self._pending_size = 0

    @property
    def relative_error(self) -> float:
        """Bound on |estimate / exact - 1| of a quantile inside [low, high]."""
        return float(2.0 ** -self.mantissa_bits)

    def codes(self, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Flat bin codes (dim * bins + bin) of the finite values of [N, dims] (to pass to `add_codes`)."""
        arr = np.asarray(values)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != self.dims:
            raise ValueError(f"expected values [N, {self.dims}], got shape {arr.shape}")
        top = np.abs(arr.astype(np.float32, copy=False)).view(np.int32)
        top >>= self.shift
        offsets = self._offsets[: self.dims] - self.first  # [dims]: dim * bins - first
        if int(top.max(initial=0)) >= self.nonfinite:
            keep = top < self.nonfinite
            cols = np.broadcast_to(offsets, top.shape)[keep]
            top = np.clip(top[keep], self.first, self.last)
            return np.asarray(top + cols, dtype=np.int64)
        np.clip(top, self.first, self.last, out=top)
        top += offsets.astype(np.int32)
        return np.asarray(top.reshape(-1), dtype=np.int64)

    @property
    def _offsets(self) -> npt.NDArray[np.int64]:
        return np.arange(self.dims, dtype=np.int64) * self.bins

    def add_codes(self, codes: npt.NDArray[np.int64]) -> None:
        """Count flat bin codes; they are pooled and counted in batches (one bincount per ~500k values instead of
        one per episode, which would clear and add the whole dims x bins table each time)."""
        self._pending.append(codes)
        self._pending_size += codes.size
        if self._pending_size >= 1 << 19:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            codes = np.concatenate(self._pending)
            self.counts += np.bincount(codes, minlength=self.dims * self.bins).reshape(self.dims, self.bins)
            self._pending, self._pending_size = [], 0

    def add(self, values: npt.ArrayLike) -> None:
        self.add_codes(self.codes(values))

    def count(self, d: int) -> int:
        self._flush()
        return int(self.counts[d].sum())

    def median(self, d: int) -> float:
        """The median of dim d (the middle of the bin holding it), inf when nothing was seen."""
        n = self.count(d)
        if n == 0:
            return float("inf")
        cum = np.cumsum(self.counts[d])
        b = min(int(np.searchsorted(cum, (n - 1) / 2.0, side="right")), self.bins - 1) + self.first
        lo, hi = (np.array([b << self.shift, (b + 1) << self.shift], dtype=np.int32).view(np.float32)
                  .astype(np.float64))
        return float((lo + hi) / 2.0)
