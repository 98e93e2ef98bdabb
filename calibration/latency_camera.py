"""Camera latency: move a joint the camera sees in a known pattern, and find how late the frames show it.

Procedure, per joint (cameras watching the same joint share one recording): from rest, play the joint's
seeded pattern (latency_pattern) at servo rate, keeping every encoder reading with its stamp; poll the cameras
every `frame_every` ticks and keep each new frame's capture stamp and its motion (mean absolute change from the
camera's previous frame; a frame with an already seen stamp is a duplicate and dropped). The lag maximizing the
correlation of the frame motion with the motion the encoder predicts for those instants (latency_signal.
camera_lag) is the camera's latency: how much older the scene in a frame is than its capture stamp says,
measured against the joint encoder's stamps (whose own read delay, ~1 ms on CAN, is not included).

A fit whose peak correlation is below `min_peak` is refused with an error naming the camera and joint: the
camera does not see that joint's motion well enough (pick another with --camera-joint).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from calibration.latency_command import check_at_rest, hold_quietly
from calibration.latency_pattern import MotionPattern, PatternConfig, make_pattern
from calibration.latency_signal import LagFit, LatencyError, camera_lag, frame_motion, grey_small
from calibration.latency_ticks import Ticker
from robot_client.control_loop import Clock
from robot_client.robot import Robot

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
# Frames of the named cameras: {name: (RGB uint8 [H, W, 3], capture stamp on the robot clock)}.
Capture = Callable[[Sequence[str]], Mapping[str, tuple[U8, float]]]


@dataclass(frozen=True)
class CameraLatencyConfig:
    pattern: PatternConfig = field(default_factory=PatternConfig)
    frame_every: int = 1
    min_lag_s: float = -0.1
    max_lag_s: float = 0.4
    lag_step_s: float = 0.001
    min_peak: float = 0.5
    max_side: int = 96
    rest_velocity: float = 0.05
    guard_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.frame_every < 1:
            raise LatencyError(f"frame_every must be >= 1 tick, got {self.frame_every}")


@dataclass
class FrameTrack:
    """One camera's new frames during a recording: capture stamps and motion from the previous frame."""

    times: list[float] = field(default_factory=list)
    motion: list[float] = field(default_factory=list)
    max_side: int = 96
    _last: F64 | None = None

    def add(self, rgb: U8, stamp: float) -> None:
        if self.times and stamp <= self.times[-1]:
            return  # the camera has not delivered a new frame since the last poll
        grey = grey_small(rgb, self.max_side)
        if self._last is not None:
            self.motion.append(frame_motion(self._last, grey))
        self.times.append(float(stamp))
        self._last = grey


@dataclass(frozen=True)
class CameraLatency:
    camera: str
    joint: str
    fit: LagFit
    frames: int
    frame_period_ms: float

    def summary(self) -> str:
        return (f"camera {self.camera} (watching {self.joint}): {self.fit.lag_ms:.1f} ms "
                f"(correlation {self.fit.peak:.2f}, {self.frames} frames, median frame period "
                f"{self.frame_period_ms:.1f} ms)")


@dataclass
class Recording:
    joint: str
    enc_times: list[float] = field(default_factory=list)
    enc_positions: list[float] = field(default_factory=list)
    tracks: dict[str, FrameTrack] = field(default_factory=dict)


def group_by_joint(assignment: Mapping[str, str]) -> dict[str, list[str]]:
    """{joint: cameras watching it}, in the order the cameras were given."""
    groups: dict[str, list[str]] = {}
    for camera, joint in assignment.items():
        groups.setdefault(joint, []).append(camera)
    return groups


def record_pattern(robot: Robot, clock: Clock, period_s: float, capture: Capture, joint: str,
                   cameras: Sequence[str], pattern: MotionPattern, rest: F64,
                   config: CameraLatencyConfig) -> Recording:
    names = robot.joint_names
    j = names.index(joint)
    excursion = np.full(len(names), config.guard_margin)
    excursion[j] += config.pattern.amplitude
    ticker = Ticker(robot, clock, period_s, rest, excursion)
    rec = Recording(joint, tracks={c: FrameTrack(max_side=config.max_side) for c in cameras})
    target = rest.copy()
    for k in range(int(np.ceil(pattern.duration_s / period_s))):
        target[j] = rest[j] + pattern.offset(k * period_s)
        _, state = ticker.tick(target)
        rec.enc_times.append(state.timestamp)
        rec.enc_positions.append(float(state.positions[j]))
        if k % config.frame_every == 0:
            frames = capture(cameras)
            for camera in cameras:
                if camera not in frames:
                    raise LatencyError(f"camera {camera}: the rig returned no frame (it has {sorted(frames)})")
                rgb, stamp = frames[camera]
                rec.tracks[camera].add(rgb, stamp)
    return rec


def fit_recording(rec: Recording, config: CameraLatencyConfig) -> dict[str, CameraLatency]:
    out: dict[str, CameraLatency] = {}
    for camera, track in rec.tracks.items():
        if len(track.times) < 12:
            raise LatencyError(f"camera {camera}: only {len(track.times)} new frames during the pattern; is it "
                               f"streaming?")
        fit = camera_lag(rec.enc_times, rec.enc_positions, track.times, track.motion, min_lag_s=config.min_lag_s,
                         max_lag_s=config.max_lag_s, step_s=config.lag_step_s)
        if fit.peak < config.min_peak:
            raise LatencyError(f"camera {camera}: its frames follow {rec.joint}'s motion only weakly (correlation "
                               f"{fit.peak:.2f} < {config.min_peak}); choose a joint it sees with --camera-joint "
                               f"{camera}=JOINT")
        period = float(np.median(np.diff(track.times))) * 1e3
        out[camera] = CameraLatency(camera, rec.joint, fit, len(track.times), period)
    return out


def measure_camera_latency(robot: Robot, clock: Clock, period_s: float, capture: Capture,
                           assignment: Mapping[str, str], config: CameraLatencyConfig) -> dict[str, CameraLatency]:
    """Latency per camera of `assignment` ({camera: joint it watches}); one recording per joint."""
    names = robot.joint_names
    unknown = sorted({j for j in assignment.values() if j not in names})
    if unknown:
        raise LatencyError(f"camera joints {unknown} are not joints of the robot; joints are {list(names)}")
    out: dict[str, CameraLatency] = {}
    for index, (joint, cameras) in enumerate(group_by_joint(assignment).items()):
        state = robot.read_state()
        check_at_rest(names, state.velocities, config.rest_velocity)
        rest = state.positions.copy()
        j = names.index(joint)
        pattern = make_pattern(config.pattern, joint, float(rest[j]), robot.config.limits[joint], seed_offset=index)
        try:
            rec = record_pattern(robot, clock, period_s, capture, joint, cameras, pattern, rest, config)
        except BaseException:
            hold_quietly(robot)
            raise
        out.update(fit_recording(rec, config))
    return out
