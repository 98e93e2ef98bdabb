"""How well the arm followed the dataset: per-joint tracking error, lag, and the pass/fail verdict.

Why these numbers: the replay is a rig check. Tracking error of the achieved joints against the dataset's
actions (after a short settle, while the servo catches up with the motion already under way) says whether the
arm can execute what the policy will ask; achieved against the servo's command separates the motors/plant from
the servo's shaping; the lag (cross-correlation, robodata.lag, the estimator the doctor uses on datasets) says how
late the arm follows, in milliseconds and in dataset frames as played, to compare with a dataset's own lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from replay.arm_replay.plan import F64, ReplayError, ReplayPlan
from replay.arm_replay.run import ReplayTrace
from robodata.lag import LagResult, estimate_lags, lag_ms, pair

# A lag whose correlation peak is below this is not reported: the joint barely moved, nothing to align.
MIN_LAG_PEAK = 0.3


@dataclass(frozen=True)
class TrackingThresholds:
    """Pass/fail limits on max |achieved - dataset action| after `settle_s` (robot units: rad, gripper 0..1).

    Grippers get a looser limit: a gripper closed on an object legitimately stays away from its target."""

    max_arm_error: float = 0.1
    max_gripper_error: float = 0.25
    settle_s: float = 0.25
    # Lags are searched within +/- this window.
    max_lag_s: float = 0.5

    def __post_init__(self) -> None:
        for label in ("max_arm_error", "max_gripper_error", "max_lag_s"):
            value = getattr(self, label)
            if not (math.isfinite(value) and value > 0):
                raise ReplayError(f"{label} must be a positive number, got {value}")
        if not (math.isfinite(self.settle_s) and self.settle_s >= 0):
            raise ReplayError(f"settle_s must be a finite number >= 0, got {self.settle_s}")


@dataclass(frozen=True)
class JointMetrics:
    """One joint: |achieved - target| and |achieved - command| stats over the window, lag, threshold."""

    name: str
    gripper: bool
    mean: float
    p95: float
    max: float
    command_mean: float
    command_max: float
    # |achieved(t) - action(t - latency)| with one latency for the whole arm (ReplayMetrics.latency_ms): the
    # shape of the motion with the delay taken out (calibration, gains, limits; not latency).
    aligned_mean: float
    aligned_max: float
    threshold: float
    # Lag of achieved behind the dataset target (ms, dataset frames as played); None: no clear peak.
    lag_ms: float | None
    lag_frames: float | None
    lag_peak: float | None
    # Lag of achieved behind the servo command (the plant alone), ms.
    command_lag_ms: float | None

    @property
    def passed(self) -> bool:
        return self.max <= self.threshold


@dataclass(frozen=True)
class ReplayMetrics:
    joints: tuple[JointMetrics, ...]
    thresholds: TrackingThresholds
    window: tuple[float, float]
    samples: int
    estopped: bool
    target_lag: LagResult
    command_lag: LagResult
    # Median lag (ms) of the arm joints (grippers excluded: they stall on objects) with a clear peak; 0 if none.
    latency_ms: float

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints if not j.passed)

    @property
    def passed(self) -> bool:
        return not self.failures and not self.estopped and self.samples > 0

    def arm_joints(self) -> tuple[JointMetrics, ...]:
        return tuple(j for j in self.joints if not j.gripper)

    def lag_summary_ms(self) -> tuple[float, float] | None:
        """(median, max - min) of the reported target lags over joints, or None when none is reported."""
        lags = [j.lag_ms for j in self.joints if j.lag_ms is not None]
        if not lags:
            return None
        return float(np.median(lags)), float(max(lags) - min(lags))


def _lags(actions: F64, states: F64, names: tuple[str, ...], max_lag: int) -> LagResult:
    if max_lag < 1:
        return LagResult({}, {}, {}, 0)
    return estimate_lags([pair(actions, states)], names, list(range(len(names))), max_lag)


def _lag_of(result: LagResult, name: str) -> float | None:
    if name not in result.refined or result.peaks[name] < MIN_LAG_PEAK:
        return None
    return result.refined[name]


def _median_arm_lag_ms(result: LagResult, names: tuple[str, ...], grippers: tuple[int, ...], hz: float) -> float:
    lags = [_lag_of(result, n) for i, n in enumerate(names) if i not in grippers]
    known = [lag_ms(v, hz) for v in lags if v is not None]
    return float(np.median(known)) if known else 0.0


def _shifted_targets(plan: ReplayPlan, times: F64, delay_s: float) -> F64:
    """The dataset actions at t - delay (linear interpolation, held at both ends, as the replay's timeline)."""
    return np.stack([np.interp(times - delay_s, plan.times, plan.actions[:, j])
                     for j in range(plan.actions.shape[1])], axis=1) if len(times) else np.zeros((0, 0))


def compute_metrics(trace: ReplayTrace, plan: ReplayPlan, grippers: tuple[int, ...],
                    thresholds: TrackingThresholds) -> ReplayMetrics:
    """Stats over ticks with settle_s <= t <= the last action's time (the tail is for the plots)."""
    names = trace.joint_names
    half_tick = 0.5 / trace.servo_hz
    window = (thresholds.settle_s, plan.duration_s + half_tick)
    mask = (trace.times >= window[0] - half_tick) & (trace.times <= window[1])
    err = np.abs(trace.achieved[mask] - trace.targets[mask])
    cmd_err = np.abs(trace.achieved[mask] - trace.commands[mask])
    samples = int(mask.sum())
    max_lag = min(round(thresholds.max_lag_s * trace.servo_hz), (trace.ticks - 2) // 2 - 1)
    target_lag = _lags(trace.targets, trace.achieved, names, max_lag)
    command_lag = _lags(trace.commands, trace.achieved, names, max_lag)
    latency = _median_arm_lag_ms(target_lag, names, grippers, trace.servo_hz)
    aligned = np.abs(trace.achieved[mask] - _shifted_targets(plan, trace.times[mask], latency * 1e-3)) \
        if samples else np.zeros((1, len(names)))
    joints = []
    for j, name in enumerate(names):
        col = err[:, j] if samples else np.zeros(1)
        ccol = cmd_err[:, j] if samples else np.zeros(1)
        lag = _lag_of(target_lag, name)
        cmd_lag = _lag_of(command_lag, name)
        lag_t = None if lag is None else lag_ms(lag, trace.servo_hz)
        joints.append(JointMetrics(
            name=name, gripper=j in grippers, mean=float(col.mean()), p95=float(np.percentile(col, 95)),
            max=float(col.max()), command_mean=float(ccol.mean()), command_max=float(ccol.max()),
            aligned_mean=float(aligned[:, j].mean()), aligned_max=float(aligned[:, j].max()),
            threshold=thresholds.max_gripper_error if j in grippers else thresholds.max_arm_error,
            lag_ms=lag_t, lag_frames=None if lag_t is None else lag_t * 1e-3 / plan.frame_period_s,
            lag_peak=None if lag is None else target_lag.peaks[name],
            command_lag_ms=None if cmd_lag is None else lag_ms(cmd_lag, trace.servo_hz),
        ))
    return ReplayMetrics(tuple(joints), thresholds, window, samples, trace.estopped, target_lag, command_lag,
                         latency)


def format_metrics(m: ReplayMetrics) -> str:
    """The per-joint table and the verdict, as printed after a run."""
    th = m.thresholds
    lines = [f"tracking of the dataset actions ({m.samples} ticks, t in [{m.window[0]:.2f}, {m.window[1]:.2f}] s; "
             f"robot units; lag: achieved behind action; aligned: error with the {m.latency_ms:.0f} ms arm lag "
             f"taken out)",
             f"  {'joint':<16s} {'mean':>7s} {'p95':>7s} {'max':>7s} {'limit':>6s}  {'cmd max':>7s} "
             f"{'aligned':>7s} {'lag ms':>7s} {'frames':>6s}"]
    for j in m.joints:
        lag = "-" if j.lag_ms is None else f"{j.lag_ms:7.1f}"
        frames = "-" if j.lag_frames is None else f"{j.lag_frames:6.2f}"
        flag = "" if j.passed else "  FAIL"
        lines.append(f"  {j.name:<16s} {j.mean:7.4f} {j.p95:7.4f} {j.max:7.4f} {j.threshold:6.3f}  "
                     f"{j.command_max:7.4f} {j.aligned_max:7.4f} {lag:>7s} {frames:>6s}{flag}")
    summary = m.lag_summary_ms()
    if summary is not None:
        lines.append(f"  lag: arm median {m.latency_ms:.1f} ms; all joints median {summary[0]:.1f} ms, "
                     f"spread {summary[1]:.1f} ms")
    if m.estopped:
        lines.append("result: STOPPED (e-stop)")
    elif m.passed:
        lines.append(f"result: PASS (max error <= {th.max_arm_error:g} arm, {th.max_gripper_error:g} gripper, "
                     f"after {th.settle_s:g} s)")
    else:
        why = "no ticks to evaluate" if not m.samples else f"max error beyond the limit: {list(m.failures)}"
        lines.append(f"result: FAIL ({why})")
    return "\n".join(lines)
