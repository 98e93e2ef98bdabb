"""`python -m calibration latency`: the plan, the measurements on a rig, and the calibration's latency section.

Why a plan first: on a real arm the operator should see, before anything moves, which joint steps by how much
and in which direction, which joint each camera watches, the motion's amplitude and speed cap, and how long it
takes; `--dry-run` prints exactly that and touches no hardware (the plan is built from the robot config only;
the directions are settled against the measured rest pose when the run starts).

Which joint a camera watches (`camera_joints`): `--camera-joint CAM=JOINT` when given; otherwise a camera
named after an arm ("left_wrist" on arm "left") watches that arm's last joint (the wrist roll, which turns the
wrist camera itself and moves nothing else), and any other camera watches `--joint`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from calibration.latency_camera import (
    U8,
    CameraLatency,
    CameraLatencyConfig,
    group_by_joint,
    measure_camera_latency,
)
from calibration.latency_command import CommandLatency, StepConfig, measure_command_latency
from calibration.latency_pattern import MIN_JERK_PEAK
from calibration.latency_signal import LatencyError
from robot_client.calfile import Latency, Measured, now_iso
from robot_client.config import RobotConfig
from robot_client.rig import Rig


@dataclass(frozen=True)
class LatencyPlan:
    step: StepConfig | None  # None: command-to-motion not measured
    cameras: Mapping[str, str]  # camera -> joint it watches (empty: no camera measured)
    camera: CameraLatencyConfig = field(default_factory=CameraLatencyConfig)


@dataclass(frozen=True)
class LatencyResult:
    command: CommandLatency | None
    cameras: dict[str, CameraLatency]

    def lines(self) -> list[str]:
        out = [self.command.summary()] if self.command is not None else []
        return out + [c.summary() for c in self.cameras.values()]


def camera_joints(config: RobotConfig, cameras: Sequence[str], default_joint: str,
                  overrides: Mapping[str, str]) -> dict[str, str]:
    unknown = sorted(c for c in overrides if c not in cameras)
    if unknown:
        raise LatencyError(f"--camera-joint names cameras {unknown} that are not measured (cameras: {list(cameras)})")
    out: dict[str, str] = {}
    for camera in cameras:
        joint = overrides.get(camera)
        if joint is None:
            arm = next((a for a in config.arms if camera.startswith(f"{a.name}_")), None)
            joint = arm.joints[-1] if arm is not None else default_joint
        if joint not in config.joint_names:
            raise LatencyError(f"camera {camera}: joint {joint!r} is not a joint of {config.name}; joints are "
                               f"{list(config.joint_names)}")
        out[camera] = joint
    return out


def describe_plan(config: RobotConfig, plan: LatencyPlan, robot_kind: str) -> list[str]:
    lines = [f"latency calibration plan ({robot_kind}, {config.name}, servo {config.servo_hz:g} Hz):"]
    if plan.step is not None:
        s = plan.step
        lim = config.limits.get(s.joint)
        where = f"limits [{lim.lower}, {lim.upper}]" if lim is not None else "not a joint of this robot!"
        lines.append(f"  command-to-motion: {s.repeats} x a direct step of {abs(s.step):g} on {s.joint} ({where}; "
                     f"direction chosen to stay {s.limit_margin} inside them), each after {s.settle_s} s at rest; "
                     f"motion = reading beyond max({s.threshold_floor}, {s.threshold_sigmas:g} sigma of the resting "
                     f"noise); every other joint held; about {s.repeats * (s.settle_s + 0.05) + s.settle_s:.1f} s")
    else:
        lines.append("  command-to-motion: not measured")
    p = plan.camera.pattern
    for joint, cams in group_by_joint(plan.cameras).items():
        lim = config.limits[joint]
        vmax = p.velocity_fraction * lim.velocity
        lines.append(f"  cameras {', '.join(cams)}: watch {joint} move in a seeded non-periodic pattern within "
                     f"+/-{p.amplitude} of its rest position for {p.duration_s} s, peak speed <= {vmax:.2f} "
                     f"({p.velocity_fraction:g} x its limit {lim.velocity}; min-jerk moves, peak "
                     f"{MIN_JERK_PEAK} x distance / duration); refused within {p.limit_margin} of its limits "
                     f"[{lim.lower}, {lim.upper}]")
    if not plan.cameras:
        lines.append("  cameras: none measured")
    lines.append("  guard: any joint farther than its planned motion + 0.05 from the start pose holds the arm and "
                 "stops; the procedures refuse to start while a joint moves")
    return lines


def run_latency(rig: Rig, config: RobotConfig, plan: LatencyPlan) -> LatencyResult:
    """Measure on an enabled rig (the robot holding its rest pose)."""
    period = 1.0 / config.servo_hz
    command = None
    if plan.step is not None:
        command = measure_command_latency(rig.robot, rig.clock, period, plan.step)
    cameras: dict[str, CameraLatency] = {}
    if plan.cameras:

        def capture(names: Sequence[str]) -> Mapping[str, tuple[U8, float]]:
            frames = rig.capture_images()
            return {n: frames[n] for n in names if n in frames}

        cameras = measure_camera_latency(rig.robot, rig.clock, period, capture, plan.cameras, plan.camera)
    return LatencyResult(command, cameras)


def latency_section(result: LatencyResult, robot_kind: str) -> Latency:
    """The calibration file's [latency] section: replaced as a whole, since its date covers every value in it."""
    parts = []
    if result.command is not None:
        c = result.command
        parts.append(f"command-to-motion: {len(c.spread.samples_ms)} direct steps of {c.step:+g} on {c.joint}, "
                     f"first reading beyond {c.threshold:.4f}; median (spread {c.spread.min_ms:.1f}.."
                     f"{c.spread.max_ms:.1f} ms)")
    if result.cameras:
        per = ", ".join(f"{c.camera} via {c.joint} (r={c.fit.peak:.2f})" for c in result.cameras.values())
        parts.append(f"cameras: frame-difference vs encoder motion, lag of best correlation: {per}")
    return Latency(
        command_to_motion_ms=None if result.command is None else round(result.command.spread.median_ms, 2),
        camera_ms={name: round(c.fit.lag_ms, 2) for name, c in result.cameras.items()},
        measured=Measured(now_iso(), f"{'; '.join(parts)} ({robot_kind})"),
    )
