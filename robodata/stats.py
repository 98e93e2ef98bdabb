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
