"""The doctor's data-only checks: each takes the loaded episodes and returns findings naming joints and frames.

Why separate from the normalization checks: these need no checkpoint (NaN, timestamps, joint limits, lag,
delta-looking actions, gripper convention, outliers), so they run on any dataset, and each is a small
function with stated thresholds that a test can aim a single injected fault at. The stored-stats check, which
recomputes stats in their writer's convention, is in stored_stats.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from policy_norm.joint_names import NAME_MAP_FLAG
from replay.doctor.findings import Finding
from replay.doctor.raw import DoctorEpisode

# Re-exported: the doctor's report and callers import the lag types from here.
from robodata.lag import LagResult as LagResult
from robodata.lag import estimate_lags as _estimate_lags
from robodata.lag import lag_ms as lag_ms
from robot_client.yam_limits import yam_limits

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CheckThresholds:
    """Stated thresholds of the data-only checks.

    lag_warn_frames: flag an action-to-state lag of at least this many frames (|lag|).
    max_lag_frames: lags searched by cross-correlation of per-frame differences.
    limit_margin: how far past a YAM joint limit (rad; gripper units for the gripper) an action may go before
    it is an error (i2rt itself widens the limits by 0.15 rad).
    robust_z: a value is an outlier when |x - median| > robust_z * scale, scale = max(1.4826 * MAD,
    (q95 - q05) / 3.29, degenerate_spread / 3.29) of its dim (the second term keeps a mostly resting joint's
    normal motion from counting; the third keeps a dim that never moves, whose spread is sensor noise of a few
    micro-units, from calling every 1e-5 flicker an outlier), and it is a spike: at least half that distance from
    its episode's running median over spike_window frames.
    degenerate_spread: a dim whose q99 - q01 is below this never moved.
    dt_tolerance: a frame interval off the nominal 1/fps by more than this fraction is irregular.
    fps_tolerance: the median frame rate off info.fps by more than this fraction is flagged.
    stats_tolerance: stored stats differ from the data when |stored - recomputed| > this x the dim's spread.
    delta_ratio / delta_floor: actions look like deltas (or absolute) when one hypothesis's tracking error is
    below the other's by this ratio and the larger error is above delta_floor (robot units).
    """

    lag_warn_frames: int = 5
    max_lag_frames: int = 30
    limit_margin: float = 0.15
    robust_z: float = 10.0
    spike_window: int = 7
    degenerate_spread: float = 1e-3
    dt_tolerance: float = 0.5
    fps_tolerance: float = 0.05
    stats_tolerance: float = 0.1
    delta_ratio: float = 3.0
    delta_floor: float = 0.05


def _label(names: Sequence[str], j: int) -> str:
    return names[j] if j < len(names) else f"dim {j}"


def state_index_for_actions(action_names: Sequence[str], state_names: Sequence[str]) -> list[int]:
    """Per action dim, the state dim of the same joint: same name, else same index when the dims are equal."""
    out = []
    for j, name in enumerate(action_names):
        if name in state_names:
            out.append(list(state_names).index(name))
        elif len(action_names) == len(state_names):
            out.append(j)
        else:
            out.append(-1)
    return out


# ---- NaN / inf -------------------------------------------------------------------------------------------


def check_finite(episodes: Sequence[DoctorEpisode], state_names: Sequence[str],
                 action_names: Sequence[str]) -> list[Finding]:
    out: list[Finding] = []
    for ep in episodes:
        for label, arr, names in (("state", ep.states, state_names), ("action", ep.actions, action_names)):
            bad = ~np.isfinite(arr)
            for j in np.flatnonzero(bad.any(axis=0)):
                frames = np.flatnonzero(bad[:, j])
                f0 = int(frames[0])
                out.append(Finding(
                    "error", "non_finite", f"episode {ep.index} frame {f0} {label} {_label(names, int(j))}",
                    f"{label} {_label(names, int(j))} is {arr[f0, j]} at frame {f0} "
                    f"({frames.size} non-finite frame(s) in this episode, first {f0})",
                ))
        bad_t = np.flatnonzero(~np.isfinite(ep.timestamps))
        if bad_t.size:
            out.append(Finding("error", "non_finite", f"episode {ep.index} frame {int(bad_t[0])} timestamp",
                               f"timestamp is {ep.timestamps[bad_t[0]]} ({bad_t.size} frame(s))"))
    return out


# ---- timestamps ------------------------------------------------------------------------------------------


def episode_timestamp_findings(ep: DoctorEpisode, fps: float, th: CheckThresholds) -> tuple[
    list[Finding], F64 | None, F64
]:
    """One episode's non-monotonic (error) and irregular (warning) timestamps, its frame intervals (None when it
    has fewer than 2 frames) and the positive finite ones (pooled for the frame-rate check)."""
    out: list[Finding] = []
    nominal = 1.0 / fps
    ts = ep.timestamps
    if len(ts) < 2:
        return out, None, np.zeros(0)
    dt = np.diff(ts)
    back = np.flatnonzero(~(dt > 0) & np.isfinite(dt))
    if back.size:
        k = int(back[0])
        out.append(Finding(
            "error", "timestamps_non_monotonic", f"episode {ep.index} frame {k + 1}",
            f"timestamp goes from {ts[k]:.6f} s to {ts[k + 1]:.6f} s (not increasing; {back.size} such step(s) "
            f"in this episode)",
        ))
    good = dt[(dt > 0) & np.isfinite(dt)]
    irregular = np.flatnonzero((np.abs(dt - nominal) > th.dt_tolerance * nominal) & (dt > 0))
    if irregular.size:
        k = int(irregular[0])
        out.append(Finding(
            "warning", "timestamps_irregular", f"episode {ep.index} frame {k + 1}",
            f"frame interval {dt[k] * 1e3:.1f} ms vs nominal {nominal * 1e3:.1f} ms at {fps:g} fps "
            f"({irregular.size} irregular interval(s) in this episode: dropped or duplicated frames?)",
        ))
    return out, dt, good


def fps_findings(median_dt: float | None, fps: float, th: CheckThresholds) -> list[Finding]:
    """The frame rate measured by the median frame interval against info.fps (warning)."""
    if median_dt is None:
        return []
    measured = 1.0 / median_dt
    if abs(measured - fps) > th.fps_tolerance * fps:
        return [Finding(
            "warning", "fps_mismatch", "dataset",
            f"median frame rate from timestamps is {measured:.3f} fps but the dataset says {fps:g} fps",
        )]
    return []


def check_timestamps(episodes: Sequence[DoctorEpisode], fps: float, th: CheckThresholds) -> tuple[
    list[Finding], dict[int, F64]
]:
    """Non-monotonic (error), irregular intervals (warning), frame rate vs info fps (warning)."""
    out: list[Finding] = []
    dts: dict[int, F64] = {}
    all_dt: list[F64] = []
    for ep in episodes:
        found, dt, good = episode_timestamp_findings(ep, fps, th)
        out += found
        if dt is not None:
            dts[ep.index] = dt
            all_dt.append(good)
    pooled = np.concatenate(all_dt) if all_dt else np.zeros(0)
    out += fps_findings(float(np.median(pooled)) if pooled.size else None, fps, th)
    return out, dts


# ---- degenerate dims, gripper convention, outliers --------------------------------------------------------


def _stack(episodes: Sequence[DoctorEpisode], which: str) -> F64:
    arrays = [np.asarray(getattr(ep, which), dtype=np.float64) for ep in episodes]
    return np.concatenate(arrays) if arrays else np.zeros((0, 0))


def _finite_column(arr: F64, j: int) -> F64:
    col = arr[:, j]
    return col[np.isfinite(col)]


class ColumnQuantiles(Protocol):
    """Per-dim quantiles of a feature: exact from the frames in memory (ArrayColumns), or from a histogram fed
    one episode at a time (the streamed doctor's), so the checks below read the same either way."""

    @property
    def dims(self) -> int: ...

    def size(self, j: int) -> int:
        """How many finite values dim j has."""
        ...

    def quantiles(self, j: int, levels: Sequence[float]) -> F64: ...


class ArrayColumns:
    """Exact quantiles of the columns of a [N, D] array (finite values only)."""

    def __init__(self, arr: F64) -> None:
        self.arr = arr

    @property
    def dims(self) -> int:
        return int(self.arr.shape[1])

    def size(self, j: int) -> int:
        return int(np.isfinite(self.arr[:, j]).sum())

    def quantiles(self, j: int, levels: Sequence[float]) -> F64:
        return np.asarray(np.quantile(_finite_column(self.arr, j), levels), dtype=np.float64)


def check_degenerate(states: F64, actions: F64, state_names: Sequence[str], action_names: Sequence[str],
                     th: CheckThresholds) -> list[Finding]:
    return degenerate_findings(ArrayColumns(states), ArrayColumns(actions), state_names, action_names, th)


def degenerate_findings(states: ColumnQuantiles, actions: ColumnQuantiles, state_names: Sequence[str],
                        action_names: Sequence[str], th: CheckThresholds) -> list[Finding]:
    out: list[Finding] = []
    for label, arr, names in (("state", states, state_names), ("action", actions, action_names)):
        for j in range(arr.dims):
            if arr.size(j) < 2:
                continue
            q01, q99 = arr.quantiles(j, [0.01, 0.99])
            if q99 - q01 < th.degenerate_spread:
                out.append(Finding(
                    "warning", "degenerate_dim", f"{label} {_label(names, j)}",
                    f"degenerate dim: {_label(names, j)} never moves (q01 {q01:.4g}, q99 {q99:.4g}, spread "
                    f"{q99 - q01:.3g} < {th.degenerate_spread:g}); normalizing it divides by ~0, so stats from this "
                    f"data need degenerate_policy 'passthrough' or 'zero'",
                ))
    return out


def check_gripper_convention(states: F64, actions: F64, state_names: Sequence[str],
                             action_names: Sequence[str]) -> list[Finding]:
    """Grippers should be 0 (closed) .. 1 (open) as i2rt normalizes them; name the convention the data looks like."""
    out: list[Finding] = []
    for label, arr, names in (("state", states, state_names), ("action", actions, action_names)):
        for j, name in enumerate(names):
            if "gripper" not in name.lower():
                continue
            col = _finite_column(arr, j)
            if col.size == 0:
                continue
            lo, hi = float(col.min()), float(col.max())
            if lo >= -0.05 and hi <= 1.05:
                continue
            if abs(lo + 1.0) <= 0.1 and abs(hi - 1.0) <= 0.1:
                guess = "model space [-1, 1] (normalized values that were never denormalized)"
            elif lo >= -5.0 and 1.5 < hi <= 110.0:
                guess = "0..100 (the LeRobot YAM plugin's convention)"
            elif lo >= -0.01 and hi <= 0.1:
                guess = "metres of finger travel (0..0.0475, the MJCF convention)"
            elif hi > 2.0 or lo < -0.5:
                guess = "raw motor radians (not normalized by the gripper calibration)"
            else:
                guess = "a range other than 0..1"
            out.append(Finding(
                "warning", "gripper_convention", f"{label} {name}",
                f"gripper spans [{lo:.4g}, {hi:.4g}], which looks like {guess}; the YAM convention is 0 = closed .. "
                f"1 = open (map it, or set the gripper convention in the normalization config)",
            ))
    return out


def _rolling_median(col: F64, window: int) -> F64:
    """Centred running median (edges padded with the end values): follows motion and steps, drops short spikes."""
    half = window // 2
    padded = np.concatenate([np.repeat(col[:1], half), col, np.repeat(col[-1:], half)])
    return np.asarray(np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1), dtype=np.float64)


def robust_scale(vals: F64, floor: float = 0.0) -> float:
    """A spread the outliers cannot inflate: max of 1.4826 x MAD and (q95 - q05) / 3.29 (both the standard
    deviation for normal data); the second keeps a joint that rests most of the time but moves in more than 5 %
    of the frames from calling its own motion outliers. Outliers move either only when they are more than 5 % of
    the frames, and then they are the data's behaviour, not outliers. `floor`: the smallest scale that counts."""
    med = float(np.median(vals))
    q05, q95 = np.quantile(vals, [0.05, 0.95])
    return max(float(np.median(np.abs(vals - med))) * 1.4826, float(q95 - q05) / 3.29, floor)


def _frames_text(hits: Sequence[tuple[int, int, float]], limit: int = 8, total: int | None = None) -> str:
    """"episode 0 frame 17 (50), episode 2 frames 8 (50), 51 (50)": every flagged frame with its value."""
    parts: list[str] = []
    by_episode: dict[int, list[tuple[int, float]]] = {}
    for ep_i, frame, value in hits[:limit]:
        by_episode.setdefault(ep_i, []).append((frame, value))
    for ep_i, frames in by_episode.items():
        word = "frame" if len(frames) == 1 else "frames"
        parts.append(f"episode {ep_i} {word} " + ", ".join(f"{f} ({v:.4g})" for f, v in frames))
    total = len(hits) if total is None else total  # hits may hold only the first ones (the streamed doctor's)
    more = f" and {total - limit} more" if total > limit else ""
    return "; ".join(parts) + more


def check_outliers(episodes: Sequence[DoctorEpisode], state_names: Sequence[str], action_names: Sequence[str],
                   th: CheckThresholds, limits: Mapping[str, tuple[float, float]] | None = None) -> list[Finding]:
    """States and actions past their joint limits (error) and outliers (warning), each frame named.

    Limits: `limits` maps the dataset's dim names to (lower, upper) (the robot config's limits through a name map);
    None takes the YAM table for names that end in its joint names. Outliers rely on no name and on no statistic
    the outliers inflate: a value is one when it is more than `robust_z` robust scales (see `robust_scale`) from
    its dim's median AND a spike: at least half of that distance from the running median of its episode over
    `spike_window` frames, so a short glitch (up to half the window) counts and a real, sustained move does not.
    """
    out: list[Finding] = []
    unlimited: list[str] = []
    for label, which, names in (("state", "states", state_names), ("action", "actions", action_names)):
        arrays = [np.asarray(getattr(ep, which), dtype=np.float64) for ep in episodes]
        if not arrays or not names:
            continue
        values = np.concatenate(arrays)
        lengths = np.array([len(a) for a in arrays])
        starts = np.concatenate([[0], np.cumsum(lengths)])
        dim_limits = dict(yam_limits(names)) if limits is None else {n: lim for n, lim in limits.items() if n in names}
        unlimited += [n for n in names if n not in dim_limits and n not in unlimited]

        def locate(row: int, starts: npt.NDArray[np.int64] = starts) -> tuple[int, int]:
            e = int(np.searchsorted(starts, row, side="right") - 1)
            return episodes[e].index, row - int(starts[e])

        for j, name in enumerate(names):
            if j >= values.shape[1]:
                break
            col = values[:, j]
            finite = np.isfinite(col)
            flagged: set[int] = set()
            if name in dim_limits:
                lo, hi = dim_limits[name]
                margin = 0.05 if "gripper" in name.lower() else th.limit_margin
                beyond = finite & ((col < lo - margin) | (col > hi + margin))
                if beyond.any():
                    rows = np.flatnonzero(beyond)
                    excess = np.maximum(col[rows] - hi, lo - col[rows])
                    worst = int(rows[int(np.argmax(excess))])
                    ep_i, frame = locate(worst)
                    flagged.update(int(r) for r in rows)
                    hits = [(*locate(int(r)), float(col[r])) for r in rows]
                    out.append(limit_finding(label, name, float(col[worst]), ep_i, frame, (lo, hi), margin,
                                             int(rows.size), hits))
            vals = col[finite]
            if vals.size < 10:
                continue
            med = float(np.median(vals))
            scale = robust_scale(vals, th.degenerate_spread / 3.29)
            if scale < 1e-9:
                continue
            far = finite & (np.abs(np.where(finite, col, med) - med) > th.robust_z * scale)
            if not far.any():
                continue
            spike = np.zeros_like(far)
            for e, arr in enumerate(arrays):
                seg = slice(int(starts[e]), int(starts[e + 1]))
                c = np.where(np.isfinite(arr[:, j]), arr[:, j], med)
                if len(c) == 0:
                    continue
                local = _rolling_median(c, th.spike_window)
                spike[seg] = np.abs(c - local) >= 0.5 * np.abs(c - med)
            rows = np.array([r for r in np.flatnonzero(far & spike) if int(r) not in flagged], dtype=np.int64)
            if rows.size:
                z = np.abs(col[rows] - med) / scale
                worst = int(rows[int(np.argmax(z))])
                ep_i, frame = locate(worst)
                hits = [(*locate(int(r)), float(col[r])) for r in rows]
                out.append(outlier_finding(label, name, float(col[worst]), ep_i, frame, float(z.max()), med, scale,
                                           th, int(rows.size), hits))
    out += unlimited_findings(unlimited, limits is None)
    return out


def limit_finding(label: str, name: str, worst: float, ep_i: int, frame: int, limit: tuple[float, float],
                  margin: float, frames: int, hits: Sequence[tuple[int, int, float]]) -> Finding:
    """The error for a dim past its joint limit: the worst frame, and the first flagged frames with values."""
    lo, hi = limit
    return Finding(
        "error", f"{label}_outside_joint_limits", f"episode {ep_i} frame {frame} {label} {name}",
        f"{label} outlier: {name} = {worst:.4g} at episode {ep_i} frame {frame}, outside the "
        f"joint limit [{lo:.4g}, {hi:.4g}] (+/- {margin:g}); {frames} frame(s) beyond: "
        f"{_frames_text(hits, total=frames)}",
    )


def outlier_finding(label: str, name: str, worst: float, ep_i: int, frame: int, z: float, med: float, scale: float,
                    th: CheckThresholds, frames: int, hits: Sequence[tuple[int, int, float]]) -> Finding:
    """The warning for a dim's robust outliers: the worst frame, and the first flagged frames with values."""
    return Finding(
        "warning", f"{label}_outlier", f"episode {ep_i} frame {frame} {label} {name}",
        f"{label} outlier: {name} = {worst:.4g} is {z:.0f} robust scales from its median "
        f"{med:.4g} (scale {scale:.3g}, threshold {th.robust_z:g}) and a spike against its neighbours; "
        f"{frames} frame(s): {_frames_text(hits, total=frames)}",
    )


def unlimited_findings(unlimited: Sequence[str], yam_table: bool) -> list[Finding]:
    """One INFO naming the dims no joint limit was checked for."""
    if not unlimited:
        return []
    how = "their names match no joint of the YAM table" if yam_table else "the given limits do not name them"
    return [Finding(
        "info", "joint_limits_not_applied", "dataset",
        f"no joint limit checked for {len(unlimited)} dim(s) ({', '.join(unlimited)}): {how}; a name map "
        f"(dataset name -> robot joint, {NAME_MAP_FLAG}) applies the robot config's limits to them",
    )]


# ---- action-to-state lag ---------------------------------------------------------------------------------


def estimate_lags(episodes: Sequence[DoctorEpisode], action_names: Sequence[str], state_index: Sequence[int],
                  th: CheckThresholds) -> LagResult:
    """Cross-correlation of frame-to-frame differences, pooled over episodes (robodata.lag, shared with arm
    replay): the k maximizing corr(diff(action)[t], diff(state)[t + k]) is how many frames the state trails the
    commanded action."""
    return _estimate_lags(episodes, action_names, state_index, th.max_lag_frames, signal="velocity")


def lag_findings(result: LagResult, fps: float, th: CheckThresholds) -> list[Finding]:
    out: list[Finding] = []
    for name, lag in result.lags.items():
        if result.peaks[name] < 0.3:
            continue  # no clear relationship between this action and its state
        if abs(lag) >= th.lag_warn_frames:
            lead = "trails" if lag > 0 else "leads"
            out.append(Finding(
                "warning", "action_state_lag", f"action {name}",
                f"lag of {abs(lag)} frames ({lag_ms(abs(lag), fps):.0f} ms at {fps:g} fps): the state {lead} the "
                f"action (peak correlation {result.peaks[name]:.2f}); threshold {th.lag_warn_frames} frames; "
                f"actions may be misaligned with observations",
            ))
    if result.lags:
        values = [v for k, v in result.lags.items() if result.peaks[k] >= 0.3]
        if values:
            median = float(np.median(values))
            out.append(Finding("info", "action_state_lag_summary", "dataset",
                               f"median action-to-state lag {median:.0f} frame(s) ({lag_ms(median, fps):.0f} ms at "
                               f"{fps:g} fps) over {len(values)} joint(s)"))
    return out


# ---- delta vs absolute -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaEvidence:
    name: str
    abs_error: float  # min over k of median |a[t] - s[t + k]|
    delta_error: float  # min over k of median |a[t] + s[t] - s[t + k]|
    verdict: str  # "absolute" | "delta" | "unclear"


def delta_evidence(episodes: Sequence[DoctorEpisode], action_names: Sequence[str], state_index: Sequence[int],
                   th: CheckThresholds) -> list[DeltaEvidence]:
    """Do the stored actions track the state (absolute targets) or state changes (deltas)?"""
    out: list[DeltaEvidence] = []
    k_max = min(th.max_lag_frames, 10)
    for j, name in enumerate(action_names):
        si = state_index[j]
        if si < 0:
            continue
        errs_abs = []
        errs_del = []
        for k in range(k_max + 1):
            ea: list[F64] = []
            ed: list[F64] = []
            for ep in episodes:
                n = len(ep)
                if n <= k:
                    continue
                a = np.asarray(ep.actions[: n - k, j], dtype=np.float64)
                s0 = np.asarray(ep.states[: n - k, si], dtype=np.float64)
                sk = np.asarray(ep.states[k:, si], dtype=np.float64)
                ea.append(np.abs(a - sk))
                ed.append(np.abs(a + s0 - sk))
            if not ea:
                continue
            va, vd = np.concatenate(ea), np.concatenate(ed)
            errs_abs.append(float(np.nanmedian(va)) if np.isfinite(va).any() else np.inf)
            errs_del.append(float(np.nanmedian(vd)) if np.isfinite(vd).any() else np.inf)
        if not errs_abs:
            continue
        out.append(delta_verdict(name, min(errs_abs), min(errs_del), th))
    return out


def delta_verdict(name: str, e_abs: float, e_del: float, th: CheckThresholds) -> DeltaEvidence:
    """Absolute, delta or unclear from the two tracking errors (min over lags of their medians)."""
    verdict = "unclear"
    if max(e_abs, e_del) > th.delta_floor:
        if e_del * th.delta_ratio < e_abs:
            verdict = "delta"
        elif e_abs * th.delta_ratio < e_del:
            verdict = "absolute"
    return DeltaEvidence(name, e_abs, e_del, verdict)


def delta_mask_findings(evidence: Sequence[DeltaEvidence], action_names: Sequence[str],
                        mask: Sequence[bool] | None, mask_source: str) -> list[Finding]:
    out: list[Finding] = []
    index = {n: j for j, n in enumerate(action_names)}
    for ev in evidence:
        j = index[ev.name]
        numbers = (f"median |action - state| {ev.abs_error:.3g} vs median |action + state - next states| "
                   f"{ev.delta_error:.3g}")
        if ev.verdict != "delta":
            continue
        if mask is None:
            out.append(Finding("info", "actions_look_delta", f"action {ev.name}",
                               f"stored actions of {ev.name} look like deltas ({numbers}); no delta mask given to "
                               f"compare with"))
        elif mask[j]:
            out.append(Finding(
                "error", "delta_mask_wrong", f"action {ev.name}",
                f"delta mask wrong: {ev.name} is stored as a delta already ({numbers}) but the mask ({mask_source}) "
                f"marks it delta, so the state would be subtracted twice",
            ))
        else:
            out.append(Finding(
                "error", "delta_mask_wrong", f"action {ev.name}",
                f"delta mask wrong: {ev.name} actions look like deltas ({numbers}) but the mask ({mask_source}) says "
                f"absolute: the robot would be commanded to joint positions near 0",
            ))
    if mask is not None:
        for j, (name, m) in enumerate(zip(action_names, mask, strict=True)):
            if m and "gripper" in name.lower():
                out.append(Finding("warning", "gripper_delta", f"action {name}",
                                   f"the mask ({mask_source}) marks gripper dim {j} ({name}) delta; the YAM/ALOHA "
                                   f"convention keeps grippers absolute"))
    return out


# ---- actions that look normalized (output denormalization skipped) ----------------------------------------


def check_normalized_looking_actions(states: F64, actions: F64, action_names: Sequence[str],
                                     state_index: Sequence[int], evidence: Sequence[DeltaEvidence]) -> list[Finding]:
    """Actions whose 1%/99% sit at -1/+1 while the same joint's state lives elsewhere and is not tracked."""
    return normalized_looking_findings(ArrayColumns(states), ArrayColumns(actions), action_names, state_index,
                                       evidence)


def normalized_looking_findings(states: ColumnQuantiles, actions: ColumnQuantiles, action_names: Sequence[str],
                                state_index: Sequence[int], evidence: Sequence[DeltaEvidence]) -> list[Finding]:
    tracked = {ev.name for ev in evidence if ev.verdict in ("absolute", "delta")}
    suspects: list[str] = []
    pairs = 0
    for j, name in enumerate(action_names):
        si = state_index[j]
        if si < 0:
            continue
        if actions.size(j) < 10 or states.size(si) < 10:
            continue
        sq = states.quantiles(si, [0.01, 0.99])
        if sq[1] - sq[0] < 1e-3:
            continue
        pairs += 1
        aq = actions.quantiles(j, [0.01, 0.99])
        a_unit = abs(aq[0] + 1) <= 0.15 and abs(aq[1] - 1) <= 0.15
        s_unit = abs(sq[0] + 1) <= 0.3 and abs(sq[1] - 1) <= 0.3
        if a_unit and not s_unit and name not in tracked:
            suspects.append(name)
    if suspects and len(suspects) * 2 >= pairs:
        return [Finding(
            "warning", "output_denormalization_skipped", "actions",
            f"output denormalization skipped? actions of {suspects} span about [-1, +1] (model space) while their "
            f"states live elsewhere and are not tracked by them; run with --checkpoint to confirm",
        )]
    return []
