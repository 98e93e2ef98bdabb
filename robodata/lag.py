"""Action-to-state lag: how many samples the measured state trails the commanded action, by cross-correlation.

Why one estimator: the doctor asks it of a recorded dataset (does the state trail the action by a servo delay,
or are actions misaligned with observations?) and arm replay asks it of a replay (how late does the arm follow
the dataset's actions?). Both answers must mean the same thing, so both call `estimate_lags`.

Method: per joint, the lag k maximizing corr(x[t], y[t + k]) over k in [-max_lag, max_lag], pooled over series,
where x and y are the action and state either differentiated (per-sample velocities: the default, a sharp peak
that ignores constant offsets; normalized by the whole series' energies) or as positions (mean removed; each
lag normalized by its own overlap: a broader peak, for slow bounded signals). Positive k: the
state trails the action. `refined` adds a sub-sample estimate (parabola through the peak and its neighbours), so a
servo-rate replay can quote a lag finer than one sample. Lags are in samples; `lag_ms` converts at a sample rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Signal = Literal["velocity", "position"]
SIGNALS: tuple[Signal, ...] = ("velocity", "position")


class ActionStateSeries(Protocol):
    """Anything with per-sample actions and states, [T, D] each (a doctor episode, a replay trace)."""

    @property
    def actions(self) -> npt.NDArray[Any]: ...

    @property
    def states(self) -> npt.NDArray[Any]: ...


@dataclass(frozen=True)
class LagResult:
    """Per action dim: estimated lag in samples (state follows action by `lag` samples) and peak correlation.

    curves[name][max_lag + k] is the correlation at lag k; refined[name] is the sub-sample lag."""

    lags: dict[str, int]
    peaks: dict[str, float]
    curves: dict[str, F64]
    max_lag: int
    refined: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Pair:
    actions: npt.NDArray[Any]
    states: npt.NDArray[Any]


def pair(actions: npt.NDArray[Any], states: npt.NDArray[Any]) -> ActionStateSeries:
    """Wrap two [T, D] arrays as one series for `estimate_lags`."""
    return _Pair(actions, states)


def _prepare(values: npt.NDArray[Any], signal: Signal) -> F64:
    x = np.asarray(values, dtype=np.float64)
    return np.diff(x) if signal == "velocity" else x


def _refine(corr: F64, best: int) -> float:
    """Vertex of the parabola through the peak and its two neighbours (the integer peak at the edges)."""
    if best <= 0 or best >= len(corr) - 1:
        return float(best)
    left, mid, right = float(corr[best - 1]), float(corr[best]), float(corr[best + 1])
    denom = left - 2 * mid + right
    if denom >= 0:
        return float(best)
    return best + 0.5 * (left - right) / denom


class LagAccumulator:
    """`estimate_lags` fed one series at a time: per (action dim, state dim) pair, the summed cross-correlation
    and energies, so a dataset far larger than memory is estimated from one episode at a time with the same
    arithmetic. `pairs` lists (action dim, state dim); `result` takes the pairing to report."""

    def __init__(self, pairs: Sequence[tuple[int, int]], max_lag: int, signal: Signal = "velocity",
                 window_only: bool = False) -> None:
        """window_only: correlate only at the 2 * max_lag + 1 lags reported instead of taking them from the full
        correlation (O(T x lags) instead of O(T^2) per series; the same sums up to floating-point rounding)."""
        if max_lag < 0:
            raise ValueError(f"max_lag must be >= 0, got {max_lag}")
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
        self.max_lag = max_lag
        self.signal: Signal = signal
        self.window_only = window_only
        width = 2 * max_lag + 1
        self._sums: dict[tuple[int, int], tuple[F64, F64, F64]] = {
            (j, si): (np.zeros(width), np.zeros(width), np.zeros(width)) for j, si in pairs if si >= 0}

    def add(self, s: ActionStateSeries) -> None:
        k_max = self.max_lag
        for (j, si), (num, ex, ey) in self._sums.items():
            x = _prepare(s.actions[:, j], self.signal)
            y = _prepare(s.states[:, si], self.signal)
            ok = np.isfinite(x) & np.isfinite(y)
            if len(x) < 2 * k_max + 2 or not ok.all():
                continue
            x = x - x.mean()
            y = y - y.mean()
            n = len(x)
            if self.window_only:
                num += np.correlate(np.pad(y, k_max), x, mode="valid")  # [k_max + k] = sum_t y[t + k] x[t]
            else:
                full = np.correlate(y, x, mode="full")  # full[n - 1 + k] = sum_t y[t + k] x[t]
                num += full[n - 1 - k_max : n + k_max]
            if self.signal == "velocity":
                ex += float(x @ x)
                ey += float(y @ y)
            else:
                overlap_x, overlap_y = _overlap_energies(x, y, k_max)
                ex += overlap_x
                ey += overlap_y

    def result(self, action_names: Sequence[str], state_index: Sequence[int]) -> LagResult:
        """Lags of action dim j against state dim state_index[j] (a pair that was accumulated; negative: none)."""
        k_max = self.max_lag
        lags: dict[str, int] = {}
        peaks: dict[str, float] = {}
        curves: dict[str, F64] = {}
        refined: dict[str, float] = {}
        for j, name in enumerate(action_names):
            si = state_index[j]
            if si < 0:
                continue
            num, ex, ey = self._sums[(j, si)]
            if ex.min() <= 1e-12 or ey.min() <= 1e-12:
                continue
            corr = num / np.sqrt(ex * ey)
            best = int(np.argmax(corr))
            lags[name] = best - k_max
            peaks[name] = float(corr[best])
            curves[name] = corr
            refined[name] = _refine(corr, best) - k_max
        return LagResult(lags, peaks, curves, k_max, refined)


def estimate_lags(series: Sequence[ActionStateSeries], action_names: Sequence[str], state_index: Sequence[int],
                  max_lag: int, *, signal: Signal = "velocity") -> LagResult:
    """Lag per action dim j against state dim state_index[j] (negative index: no state, skipped).

    Series with a non-finite value in that pair, or too short for the lag window (fewer than 2 * max_lag + 2
    samples after differencing), are skipped for that joint; a joint that never moves gets no entry."""
    acc = LagAccumulator(list(enumerate(state_index)), max_lag, signal)
    for s in series:
        acc.add(s)
    return acc.result(action_names, state_index)


def _overlap_energies(x: F64, y: F64, k_max: int) -> tuple[F64, F64]:
    """Per lag k in [-k_max, k_max], sum of x[t]^2 and of y[t + k]^2 over the t where both exist.

    Positions are smooth, so their correlation falls off slowly with k; normalizing each lag by its own overlap
    (instead of the whole series) keeps the shrinking overlap from biasing the peak towards k = 0."""
    n = len(x)
    cx = np.concatenate([[0.0], np.cumsum(x * x)])
    cy = np.concatenate([[0.0], np.cumsum(y * y)])
    ks = np.arange(-k_max, k_max + 1)
    lo = np.maximum(0, -ks)  # t from lo to hi (exclusive) has both x[t] and y[t + k]
    hi = np.minimum(n, n - ks)
    return cx[hi] - cx[lo], cy[hi + ks] - cy[lo + ks]


def lag_ms(frames: float, fps: float) -> float:
    """A lag in frames (samples) as milliseconds at that frame rate (what a servo or camera delay is quoted in)."""
    return frames / fps * 1e3
