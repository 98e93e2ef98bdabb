"""The doctor's stored-stats check: the dataset's own stats recomputed the way their writer did, compared like with
like (policy_norm.stats_match), causes named, and one INFO on how the stored quantiles were computed.

Why a module: the recomputation needs every episode's frames (LeRobot's quantiles are per episode), the
comparison is the normalization layer's, and the findings grouping (one line per feature and cause, naming
every dim) is the doctor's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from policy_norm.stats_match import (
    CAUSE_DOUBLE,
    CAUSE_IDENTITY,
    CAUSE_MODE_SWAP,
    CAUSE_NORMALIZED_STATS,
    CAUSE_OTHER,
    CAUSE_UNIT,
    DimVerdict,
    StatsMatch,
    StatsMatchThresholds,
    match_stored_stats,
)
from replay.doctor.findings import Finding
from replay.doctor.raw import DoctorEpisode
from robodata.stats import (
    QUANTILES,
    QUANTILES_EPISODE_MEAN,
    QUANTILES_WHOLE_DATA,
    compute_feature_stats,
    recompute_stats,
)

StoredStats = Mapping[str, Mapping[str, npt.NDArray[np.float64]]]

NO_QUANTILES = "no-quantiles"
CONVENTION_TEXT: dict[str, str] = {
    QUANTILES_EPISODE_MEAN: "quantiles are the frame-count-weighted mean of per-episode quantiles (LeRobot 0.4+ "
                            "meta/stats.json: a 5000-bin histogram per episode), not quantiles of all frames",
    QUANTILES_WHOLE_DATA: "quantiles are exact quantiles of all frames (this project's writer and `replay stats`)",
    NO_QUANTILES: "no stored quantiles; mean/std/min/max aggregated from per-episode stats (LeRobot v2.1 "
          "episodes_stats.jsonl), exact",
}
CAUSE_CODES: dict[str, str] = {
    CAUSE_UNIT: "stored_stats_unit",
    CAUSE_IDENTITY: "stored_stats_identity",
    CAUSE_DOUBLE: "stored_stats_double_normalization",
    CAUSE_NORMALIZED_STATS: "stored_stats_never_normalized",
    CAUSE_MODE_SWAP: "stored_stats_mode_swap",
    CAUSE_OTHER: "stored_stats_mismatch",
}
CAUSE_HEADLINES: dict[str, str] = {
    CAUSE_UNIT: "stored stats in another unit than the data",
    CAUSE_IDENTITY: "stored stats are identity placeholders: data never normalized",
    CAUSE_DOUBLE: "data already normalized as stored: double normalization",
    CAUSE_NORMALIZED_STATS: "stored stats are stats of normalized data: robot units would reach the model",
    CAUSE_MODE_SWAP: "z-score and quantile stats swapped",
    CAUSE_OTHER: "stored stats from another dataset",
}
FEATURES: tuple[tuple[str, str], ...] = (("observation.state", "states"), ("action", "actions"))


def _candidates(stored: Mapping[str, npt.NDArray[np.float64]], per_episode: Sequence[npt.NDArray[np.float64]]
                ) -> dict[str, dict[str, npt.NDArray[np.float64]]]:
    if any(key in stored for key, _ in QUANTILES):
        return {QUANTILES_EPISODE_MEAN: recompute_stats(per_episode, QUANTILES_EPISODE_MEAN),
                QUANTILES_WHOLE_DATA: recompute_stats(per_episode, QUANTILES_WHOLE_DATA)}
    return {NO_QUANTILES: recompute_stats(per_episode, None)}


def _finite_episodes(episodes: Sequence[DoctorEpisode], which: str) -> list[npt.NDArray[np.float64]]:
    """Per-episode values without rows holding NaN/inf (reported by the finite check; stats writers choke on
    them or skip them, so they cannot be compared)."""
    out = []
    for ep in episodes:
        arr = np.asarray(getattr(ep, which), dtype=np.float64)
        arr = arr[np.isfinite(arr).all(axis=1)]
        if len(arr):
            out.append(arr)
    return out


def compare_stored_stats(stored: StoredStats | None, episodes: Sequence[DoctorEpisode],
                         state_names: Sequence[str], action_names: Sequence[str],
                         th: StatsMatchThresholds | None = None) -> list[StatsMatch]:
    """One StatsMatch per numeric feature (state, action) that the stored stats cover with matching dims."""
    if not stored:
        return []
    out: list[StatsMatch] = []
    for (key, which), names in zip(FEATURES, (state_names, action_names), strict=True):
        feat = stored.get(key)
        if feat is None or not names:
            continue
        if np.asarray(feat.get("mean", []), dtype=np.float64).reshape(-1).size != len(names):
            continue  # the stats are for another layout; the reader or the checkpoint check reports that
        per_episode = _finite_episodes(episodes, which)
        if sum(len(e) for e in per_episode) < 2:
            continue
        candidates = _candidates(feat, per_episode)
        whole = compute_feature_stats(np.concatenate(per_episode))
        out.append(match_stored_stats(key, names, feat, candidates, whole, th))
    return out


def stored_stats_findings(matches: Sequence[StatsMatch]) -> list[Finding]:
    """Errors/warnings grouped per feature and cause (every dim named with its figures), and one INFO per feature
    on the convention the stored stats follow and their quantiles' distance from whole-data quantiles."""
    out: list[Finding] = []
    for m in matches:
        by_cause: dict[tuple[str, str], list[DimVerdict]] = {}
        for v in m.verdicts:
            by_cause.setdefault((v.cause, v.severity), []).append(v)
        for (cause, severity), verdicts in by_cause.items():
            dims = ", ".join(v.name for v in verdicts)
            out.append(Finding(severity, CAUSE_CODES[cause], f"{m.feature} {dims}", _cause_message(m, cause, verdicts)))
        out.append(Finding("info", "stored_stats_convention", m.feature, _convention_message(m)))
    return out


def _cause_message(m: StatsMatch, cause: str, verdicts: Sequence[DimVerdict]) -> str:
    count = f"{len(verdicts)} of the {m.feature} dims"
    units = {v.units for v in verdicts if v.units is not None}
    if cause == CAUSE_UNIT and len(units) == 1:
        stats_unit, data_unit = units.pop()
        first = verdicts[0].detail.split("; ", 1)[-1]
        return (f"stored stats in {stats_unit}, the data in {data_unit}, on {count}: stored std / data std "
                + ", ".join(v.short for v in verdicts) + f"; e.g. {verdicts[0].name}: {first}")
    return f"{CAUSE_HEADLINES[cause]} on {count}: " + "; ".join(v.detail for v in verdicts)


def _convention_message(m: StatsMatch) -> str:
    convention = m.convention
    if convention is None:
        head = "stored stats match no writer's convention on any dim"
    else:
        head = (f"stored stats {'describe the data' if not m.verdicts else 'describe the other dims'} "
                f"(worst deviation {m.deviation:.2g} x a dim's spread"
                + (")" if not m.verdicts else f" over all dims, {len(m.verdicts)} dim(s) reported above)")
                + f"; {CONVENTION_TEXT.get(convention, str(convention))}")
    gap = m.quantile_gap
    if gap is None:
        return head
    if gap.worst < 1e-3:
        return head + "; they equal whole-data quantiles"
    return (head + f"; stored quantiles are up to {gap.worst:.2g} x a dim's spread from whole-data quantiles "
            f"({gap.key} of {gap.name}: stored {gap.stored:.4g}, whole-data {gap.whole:.4g}); whole-data 1%..99% "
            f"normalized with the stored q01/q99 spans [{gap.normalized_lo:+.3g}, {gap.normalized_hi:+.3g}]: a "
            f"checkpoint whose stats were computed one way and served with data normalized the other way sees "
            f"inputs off by that much")
