"""Timing checks of the rig against its dataset: frame rate, and the dataset's action-to-state lag vs the rig's
measured command-to-motion latency.

Why fps: a chunk's action i is meant for obs_time + i / fps (robot_client.chunking); a policy trained on 30 fps
data and run at another rate plays its motions faster or slower (error). The rate the client runs at is the
policy's control_fps, which the check learns from --fps or the policy's policy_config.json.

Why lag: the policy learned how far the state trails its actions on the rig that recorded the data. The
dataset's lag (robodata.lag, the doctor's estimator: cross-correlation of per-frame differences, joints with a
peak correlation >= min_peak, median over joints) is compared with the calibration's command_to_motion_ms.
They are not the same quantity: the dataset's lag also holds the servo's tracking lag, so they agree only to
within `max(lag_tolerance_ms, lag_tolerance_frames frame periods)` (50 ms or 1 frame, whichever is larger by
default); beyond that the rig responds on another timescale than the data's rig (warning: the policy's actions
arrive early or late relative to what it learned).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.check_inputs import DataSummary, RigSpec
from replay.doctor.findings import Finding
from robodata.lag import lag_ms


@dataclass(frozen=True)
class TimingThresholds:
    fps_tolerance: float = 0.01  # relative
    lag_tolerance_ms: float = 50.0
    lag_tolerance_frames: float = 1.0
    min_peak: float = 0.3  # lag estimates with a weaker correlation peak are ignored (as in the doctor)

    def lag_tolerance(self, fps: float) -> float:
        return max(self.lag_tolerance_ms, self.lag_tolerance_frames * 1e3 / fps)


def check_fps(rig: RigSpec, data: DataSummary, th: TimingThresholds) -> list[Finding]:
    out: list[Finding] = []
    if data.fps > rig.config.servo_hz:
        out.append(Finding("error", "fps_above_servo", "fps",
                           f"the dataset's {data.fps:g} fps is above the servo rate {rig.config.servo_hz:g} Hz of "
                           f"{rig.config.name}"))
    if rig.control_fps is None:
        out.append(Finding("info", "fps_not_compared", "fps",
                           f"the dataset is {data.fps:g} fps; the client runs at the policy's control_fps: pass "
                           f"--fps or --policy-config to compare"))
    elif abs(rig.control_fps - data.fps) > th.fps_tolerance * data.fps:
        out.append(Finding("error", "fps_mismatch", "fps",
                           f"the dataset is {data.fps:g} fps but the client will run at {rig.control_fps:g} fps "
                           f"({rig.control_fps_source}): actions are meant for 1/{data.fps:g} s apart, so motions "
                           f"play {rig.control_fps / data.fps:.2f}x as fast"))
    return out


def dataset_lag_ms(data: DataSummary, th: TimingThresholds) -> tuple[float, int] | None:
    """Median lag over joints with a clear peak, in ms at the dataset's fps, and how many joints."""
    if data.lag is None:
        return None
    values = [v for k, v in data.lag.lags.items() if data.lag.peaks[k] >= th.min_peak]
    if not values:
        return None
    return lag_ms(float(np.median(values)), data.fps), len(values)


def check_lag(rig: RigSpec, data: DataSummary, th: TimingThresholds) -> list[Finding]:
    measured = dataset_lag_ms(data, th)
    if measured is None:
        return [Finding("info", "lag_not_measured", "action-to-state lag",
                        f"no joint's action and state correlate clearly (peak >= {th.min_peak:g}); lag not compared")]
    lag, joints = measured
    latency = rig.calibration.latency if rig.calibration is not None else None
    c2m = latency.command_to_motion_ms if latency is not None else None
    summary = f"the dataset's action-to-state lag is {lag:.0f} ms (median over {joints} joints, {data.fps:g} fps)"
    if c2m is None:
        return [Finding("info", "lag_not_compared", "latency.command_to_motion_ms",
                        f"{summary}; the calibration has no measured command-to-motion latency to compare with "
                        f"(run `python -m calibration latency`)")]
    tolerance = th.lag_tolerance(data.fps)
    if abs(lag - c2m) > tolerance:
        return [Finding("warning", "latency_mismatch", "latency.command_to_motion_ms",
                        f"{summary}, the rig's measured command-to-motion latency is {c2m:.0f} ms: they differ by "
                        f"{abs(lag - c2m):.0f} ms (> {tolerance:.0f} ms), so this rig follows commands "
                        f"{'faster' if c2m < lag else 'slower'} than the rig that recorded the data")]
    return [Finding("info", "latency_match", "latency.command_to_motion_ms",
                    f"{summary}; the rig's command-to-motion latency {c2m:.0f} ms is within {tolerance:.0f} ms")]
