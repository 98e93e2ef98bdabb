"""Left/right arm plausibility for bimanual datasets (joint names `left_*` / `right_*`).

Why: a bimanual recording can swap the two arms between the state and the action columns (two teleop leaders
plugged into the wrong ports, a converter that orders arms differently for observations and commands). Every
per-joint check still passes, yet a policy trained on it drives each arm towards the other arm's pose. The
data shows it: each arm's actions track that arm's state closely (the state is the command a few frames
later) and the other arm's state poorly. An arm that never moves is reported too: harmless for a one-arm
task, a broken stream when only its state (or only its actions) is frozen.

Mirroring (the right arm moving as a sign-flipped copy of the left) is not checked: bimanual tasks are rarely
symmetric, so no threshold separates a mirrored recording error from a mirrored task.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from replay.doctor.findings import Finding
from replay.doctor.raw import DoctorEpisode

F64 = npt.NDArray[np.float64]
ARMS: tuple[str, str] = ("left", "right")
_ARM_NAME = re.compile(r"^(left|right)[_.\-/](.+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ArmThresholds:
    """Stated thresholds of the arm checks.

    swap_ratio: an arm's actions track the other arm's state when that tracking error is below the own arm's
    by this factor (errors are medians over joints of min over lags up to max_lag of median |a[t] - s[t + k]|,
    or of |a[t] + s[t] - s[t + k]| for delta actions, divided by the joint's action range).
    still_spread: an arm whose joints all have q99 - q01 below this (rad; gripper units) never moves.
    """

    swap_ratio: float = 3.0
    still_spread: float = 0.01
    max_lag: int = 10
    scale_floor: float = 1e-3


@dataclass(frozen=True)
class ArmLayout:
    """Per arm, the joint suffixes present in both the state and the actions of both arms, with their columns."""

    suffixes: tuple[str, ...]
    state: dict[str, tuple[int, ...]]  # arm -> state column per suffix
    action: dict[str, tuple[int, ...]]  # arm -> action column per suffix


@dataclass(frozen=True)
class ArmResult:
    """Tracking errors error[action arm][state arm] (normalized, see ArmThresholds) and per-arm ranges."""

    layout: ArmLayout
    error: dict[str, dict[str, float]]
    state_spread: dict[str, float]
    action_spread: dict[str, float]


def _split(names: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {arm: {} for arm in ARMS}
    for j, name in enumerate(names):
        m = _ARM_NAME.match(name)
        if m:
            out[m.group(1).lower()][m.group(2).lower()] = j
    return out


def arm_layout(state_names: Sequence[str], action_names: Sequence[str]) -> ArmLayout | None:
    """The two arms' shared joints, or None when the names do not describe two arms."""
    st, ac = _split(state_names), _split(action_names)
    shared = [s for s in st["left"] if all(s in d[arm] for d in (st, ac) for arm in ARMS)]
    if not shared:
        return None
    return ArmLayout(
        suffixes=tuple(shared),
        state={arm: tuple(st[arm][s] for s in shared) for arm in ARMS},
        action={arm: tuple(ac[arm][s] for s in shared) for arm in ARMS},
    )


def _spread(col: F64) -> float:
    col = col[np.isfinite(col)]
    if col.size < 2:
        return 0.0
    q01, q99 = np.quantile(col, [0.01, 0.99])
    return float(q99 - q01)


def _tracking(episodes: Sequence[DoctorEpisode], a: int, s: int, k_max: int, delta: bool) -> float:
    """min over k of median |a[t] (+ s[t] when delta) - s[t + k]|, pooled over episodes.

    k runs over 0..k_max for absolute actions and 1..k_max for deltas: at k = 0 the delta form is just |a[t]|,
    small for any arm's state, so it would make every pairing look alike."""
    best = np.inf
    for k in range(1 if delta else 0, k_max + 1):
        parts: list[F64] = []
        for ep in episodes:
            n = len(ep)
            if n <= k:
                continue
            target = np.asarray(ep.actions[: n - k, a], dtype=np.float64)
            if delta:
                target = target + np.asarray(ep.states[: n - k, s], dtype=np.float64)
            parts.append(np.abs(target - np.asarray(ep.states[k:, s], dtype=np.float64)))
        if parts:
            v = np.concatenate(parts)
            v = v[np.isfinite(v)]
            if v.size:
                best = min(best, float(np.median(v)))
    return best


def analyze_arms(episodes: Sequence[DoctorEpisode], layout: ArmLayout, states: F64, actions: F64,
                 th: ArmThresholds) -> ArmResult:
    """Tracking error of every (action arm, state arm) pairing, and how far each arm moves.

    Per joint the smaller of the absolute and the delta form counts: datasets mix them (delta joints with
    absolute grippers), and the per-joint delta verdicts cannot be trusted when the columns are swapped."""
    return arm_result(
        layout,
        lambda a, s, delta: _tracking(episodes, a, s, th.max_lag, delta),
        lambda j: _spread(states[:, j]),
        lambda j: _spread(actions[:, j]),
        th,
    )


def arm_result(layout: ArmLayout, tracking: Callable[[int, int, bool], float], state_spread_of: Callable[[int], float],
               action_spread_of: Callable[[int], float], th: ArmThresholds) -> ArmResult:
    """ArmResult from per-pair tracking errors (action col, state col, delta form: min over lags of the median;
    see `_tracking`) and per-column spreads (q99 - q01), however they were computed: from the frames in memory
    or from histograms fed one episode at a time."""
    scales = [max(action_spread_of(layout.action["left"][i]), action_spread_of(layout.action["right"][i]),
                  th.scale_floor) for i in range(len(layout.suffixes))]
    error: dict[str, dict[str, float]] = {}
    for a_arm in ARMS:
        error[a_arm] = {}
        for s_arm in ARMS:
            per_joint = [
                min(tracking(a, s, False), tracking(a, s, True)) / scale
                for a, s, scale in zip(layout.action[a_arm], layout.state[s_arm], scales, strict=True)
            ]
            finite = [e for e in per_joint if np.isfinite(e)]
            error[a_arm][s_arm] = float(np.median(finite)) if finite else float("inf")
    state_spread = {arm: max(state_spread_of(j) for j in layout.state[arm]) for arm in ARMS}
    action_spread = {arm: max(action_spread_of(j) for j in layout.action[arm]) for arm in ARMS}
    return ArmResult(layout, error, state_spread, action_spread)


def _other(arm: str) -> str:
    return ARMS[1 - ARMS.index(arm)]


def _moving(result: ArmResult, th: ArmThresholds) -> list[str]:
    return [arm for arm in ARMS
            if result.state_spread[arm] >= th.still_spread and result.action_spread[arm] >= th.still_spread]


def crossed_arms(result: ArmResult, th: ArmThresholds) -> list[str]:
    """The arms whose actions track the other arm's state far better than their own (both arms moving)."""
    if len(_moving(result, th)) < 2:
        return []  # tracking errors of a still arm say nothing about which column is which
    e = result.error
    return [arm for arm in ARMS if e[arm][_other(arm)] * th.swap_ratio < e[arm][arm]]


def tracked_state_index(result: ArmResult, th: ArmThresholds, state_index: Sequence[int]) -> list[int]:
    """Per action dim, the state column to compare it with: its own joint's, or, for an arm whose actions track
    the other arm (swapped or copied columns), the same joint of that other arm. Checks that pair actions with
    states (lag, delta vs absolute) then measure the recording, not the swap, which is reported once."""
    out = list(state_index)
    for arm in crossed_arms(result, th):
        other = _other(arm)
        for a_col, s_col in zip(result.layout.action[arm], result.layout.state[other], strict=True):
            out[a_col] = s_col
    return out


def arm_findings(result: ArmResult, th: ArmThresholds) -> list[Finding]:
    out: list[Finding] = []
    moving: list[str] = []
    for arm in ARMS:
        s, a = result.state_spread[arm], result.action_spread[arm]
        where = f"arm {arm} ({arm}_*)"
        if s < th.still_spread and a < th.still_spread:
            out.append(Finding("info", "arm_never_moves", where,
                               f"the {arm} arm never moves (largest joint range {max(s, a):.3g} < {th.still_spread:g} "
                               f"in state and actions): a one-arm task? the model learns to hold it still"))
        elif s < th.still_spread:
            out.append(Finding("warning", "arm_state_frozen", where,
                               f"the {arm} arm's state never changes (largest joint range {s:.3g}) while its actions "
                               f"span up to {a:.3g}: its state stream is frozen or not recorded"))
        elif a < th.still_spread:
            out.append(Finding("warning", "arm_actions_frozen", where,
                               f"the {arm} arm's actions never change (largest joint range {a:.3g}) while its state "
                               f"spans up to {s:.3g}: its commands are not recorded (leader arm missing?)"))
        else:
            moving.append(arm)
    if len(moving) < 2:
        return out  # tracking errors of a still arm say nothing about which column is which
    e = result.error
    crossed = crossed_arms(result, th)
    joints = ", ".join(result.layout.suffixes)
    if len(crossed) == 2:
        out.append(Finding(
            "error", "arms_swapped", "state/action left_* vs right_*",
            f"left and right arms swapped between state and actions: actions left_* track state right_* "
            f"(error {e['left']['right']:.3g}) far better than state left_* ({e['left']['left']:.3g}), and actions "
            f"right_* track state left_* ({e['right']['left']:.3g} vs {e['right']['right']:.3g}); joints {joints}; "
            f"errors are tracking errors relative to each joint's range (threshold ratio {th.swap_ratio:g})",
        ))
    for arm in crossed if len(crossed) == 1 else []:
        other = _other(arm)
        out.append(Finding(
            "error", "arm_tracks_other_arm", f"action {arm}_* vs state {other}_*",
            f"actions {arm}_* track state {other}_* (error {e[arm][other]:.3g}) far better than state {arm}_* "
            f"({e[arm][arm]:.3g}), while actions {other}_* track their own arm: {arm} action columns copied from "
            f"the {other} arm? joints {joints} (tracking errors relative to each joint's range)",
        ))
    return out
