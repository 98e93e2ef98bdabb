"""The signal processing of the latency calibration, free of any robot: motion onsets, frame motion, lag search.

Why its own module: these are the numbers the calibration file will quote, so they are tested on synthetic
signals with known answers, apart from the procedures that record them.

Camera lag (`camera_lag`): a frame's motion signal is the mean absolute difference from the previous frame
(grey, downsampled), which grows with how far the scene moved between the two capture instants. The encoder
gives the joint's position at servo rate. For a candidate lag L the encoder predicts each frame's motion as
|q(t_i - L) - q(t_(i-1) - L)|; the lag is the L in a grid (default 1 ms steps) maximizing the Pearson
correlation of prediction and frame motion. Why not `robodata.lag.estimate_lags`: it correlates two series
sampled on one uniform grid and resolves whole samples, while here the frames have their own (possibly
irregular) capture stamps and the encoder is sampled ~7x faster, so the encoder is evaluated at continuous lags
instead of being decimated to the frame rate (a 33 ms quantum). The motion pattern must not be periodic (see
latency_camera), or the correlation has several equal peaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


class LatencyError(RuntimeError):
    """A latency measurement could not be made or would not be safe; the message names the joint or camera."""


# ---- command-to-motion ------------------------------------------------------------------------------------------


def noise_threshold(rest: F64, floor: float, sigmas: float) -> float:
    """How far a reading must leave the rest mean to count as motion: the largest of `floor`, `sigmas` standard
    deviations of the resting readings, and twice their largest excursion (quantized encoders have tiny
    standard deviations but whole-count jumps)."""
    values = np.asarray(rest, dtype=np.float64)
    if values.size == 0:
        return float(floor)
    dev = np.abs(values - values.mean())
    return float(max(floor, sigmas * float(values.std()), 2.0 * float(dev.max())))


def onset_index(readings: F64, rest: float, threshold: float) -> int | None:
    """Index of the first reading farther than `threshold` from `rest`, or None."""
    moved = np.flatnonzero(np.abs(np.asarray(readings, dtype=np.float64) - rest) > threshold)
    return int(moved[0]) if moved.size else None


@dataclass(frozen=True)
class Spread:
    """Median and spread of repeated measurements (ms)."""

    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def min_ms(self) -> float:
        return float(np.min(self.samples_ms))

    @property
    def max_ms(self) -> float:
        return float(np.max(self.samples_ms))

    def summary(self) -> str:
        return (f"median {self.median_ms:.1f} ms (min {self.min_ms:.1f}, max {self.max_ms:.1f}, "
                f"n={len(self.samples_ms)})")


# ---- camera latency ---------------------------------------------------------------------------------------------


def grey_small(rgb: U8, max_side: int = 96) -> F64:
    """Grey float image, box-downsampled so its longer side is at most `max_side` (noise and cost both drop)."""
    img = np.asarray(rgb, dtype=np.float64)
    grey = img.mean(axis=2) if img.ndim == 3 else img
    k = max(1, int(np.ceil(max(grey.shape) / max_side)))
    h, w = (grey.shape[0] // k) * k, (grey.shape[1] // k) * k
    return np.asarray(grey[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3)), dtype=np.float64)


def frame_motion(previous: F64, current: F64) -> float:
    """Mean absolute grey-level change between two consecutive (grey_small) frames."""
    if previous.shape != current.shape:
        raise LatencyError(f"frame size changed from {previous.shape} to {current.shape} during the recording")
    return float(np.mean(np.abs(current - previous)))


def predicted_motion(enc_times: F64, enc_positions: F64, frame_times: F64, lag_s: float) -> F64:
    """|q(t_i - lag) - q(t_(i-1) - lag)| per frame i >= 1: how far the joint moved between the instants that
    frames i-1 and i show, if the camera trails the encoder by `lag_s`."""
    q = np.interp(np.asarray(frame_times, dtype=np.float64) - lag_s, enc_times, enc_positions)
    return np.asarray(np.abs(np.diff(q)), dtype=np.float64)


@dataclass(frozen=True)
class LagFit:
    """The best lag (s), its correlation, and the whole curve (lags_s, correlation) for plots and checks."""

    lag_s: float
    peak: float
    lags_s: F64
    correlation: F64

    @property
    def lag_ms(self) -> float:
        return self.lag_s * 1e3


def camera_lag(enc_times: npt.ArrayLike, enc_positions: npt.ArrayLike, frame_times: npt.ArrayLike,
               motion: npt.ArrayLike, *, min_lag_s: float = -0.1, max_lag_s: float = 0.4,
               step_s: float = 0.001) -> LagFit:
    """The lag of the frames behind the encoder (see the module docstring). `motion[k]` belongs to the pair
    (frame k, frame k + 1), so len(motion) == len(frame_times) - 1. Frames whose predicted instants fall
    outside the encoder record at some lag in the grid are left out at every lag, so all lags are compared on
    the same frames."""
    et = np.asarray(enc_times, dtype=np.float64)
    eq = np.asarray(enc_positions, dtype=np.float64)
    ft = np.asarray(frame_times, dtype=np.float64)
    m = np.asarray(motion, dtype=np.float64)
    if len(m) != len(ft) - 1:
        raise LatencyError(f"motion has {len(m)} values for {len(ft)} frames (expected {len(ft) - 1})")
    if not (len(et) >= 2 and np.all(np.diff(et) > 0) and np.all(np.diff(ft) > 0)):
        raise LatencyError("encoder and frame stamps must be increasing, with at least two encoder readings")
    if not max_lag_s > min_lag_s or not step_s > 0:
        raise LatencyError(f"lag grid [{min_lag_s}, {max_lag_s}] step {step_s} is empty")
    # Frame pairs whose both instants lie inside the encoder record at every candidate lag.
    inside = (ft[:-1] - max_lag_s >= et[0]) & (ft[1:] - min_lag_s <= et[-1])
    if inside.sum() < 10:
        raise LatencyError(f"only {int(inside.sum())} frame pairs overlap the encoder record over the whole lag "
                           f"grid (need >= 10): record longer or capture more frames")
    m_in = m[inside]
    if float(m_in.std()) <= 1e-12:
        raise LatencyError("the frames never changed: the camera does not see the moving joint")
    lags = np.arange(min_lag_s, max_lag_s + 0.5 * step_s, step_s)
    corr = np.full(len(lags), -1.0)
    for i, lag in enumerate(lags):
        pred = predicted_motion(et, eq, ft, float(lag))[inside]
        if float(pred.std()) > 1e-12:
            corr[i] = float(np.corrcoef(pred, m_in)[0, 1])
    best = int(np.argmax(corr))
    if corr[best] <= 0:
        raise LatencyError("frame motion does not correlate with the joint's motion at any lag")
    return LagFit(float(lags[best]), float(corr[best]), lags, corr)
