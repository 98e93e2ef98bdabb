"""`python -m calibration latency`: measure command-to-motion and camera latency, write the [latency] section.

    python -m calibration latency --robot sim|yam --config bimanual_yam --calibration rig.toml \
        [--joint left_joint6] [--camera top --camera left_wrist] [--camera-joint top=left_joint1] \
        [--step 0.05] [--repeats 5] [--amplitude 0.15] [--only command|cameras] [--dry-run]

`--dry-run` prints the plan and touches no hardware; a real arm (`--robot yam`) moves only with
`--i-understand-this-moves-the-arm`. The simulation takes injected delays (`--sim-command-delay-ms`,
`--sim-camera-delay-ms CAM=MS`) so the procedure can be checked against known answers. The procedures and
their safety rules: calibration.latency_command, calibration.latency_pattern, calibration.latency_camera.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from robot_client.backends import backend_names

if TYPE_CHECKING:
    from robot_client.backends import RobotBackend
    from robot_client.config import RobotConfig
    from robot_client.rig import Rig

HELP = "command-to-motion and camera latency (small joint step; camera frames vs encoder motion)"
SIM_CAMERA_FPS = 30.0
REAL_POLL_HZ = 100.0
# Sim start pose per arm: the sample dataset's home (arm raised, gripper in the top camera's view).
SIM_ARM_POSE = (0.0, 0.9, 1.3, 0.0, 0.0, 0.0, 1.0)


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", choices=backend_names(), default="sim")
    parser.add_argument("--config", default="bimanual_yam", help="robot config TOML (or a bundled name)")
    parser.add_argument("--calibration", type=Path, required=True, help="rig calibration TOML to update")
    parser.add_argument("--joint", default="left_joint6",
                        help="joint stepped for command-to-motion, and watched by cameras not named after an arm")
    parser.add_argument("--camera", action="append", default=None,
                        help="camera to measure (repeatable; default: the rig's cameras)")
    parser.add_argument("--camera-joint", action="append", type=_pair, default=[], metavar="CAM=JOINT",
                        help="joint a camera watches (default: its arm's wrist roll, else --joint)")
    parser.add_argument("--step", type=float, default=0.05, help="step size, robot units (at most 0.1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--amplitude", type=float, default=0.15, help="camera pattern: largest offset from rest")
    parser.add_argument("--pattern-seconds", type=float, default=3.0, help="camera pattern length per joint")
    parser.add_argument("--poll-hz", type=float, default=None,
                        help=f"camera poll rate (default {REAL_POLL_HZ:g} on the real rig; in the sim it is the "
                             f"rendered frame rate, default {SIM_CAMERA_FPS:g})")
    parser.add_argument("--only", choices=["command", "cameras"], help="measure only this part")
    parser.add_argument("--seed", type=int, default=0, help="seed of the camera motion pattern")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; connect to nothing")
    parser.add_argument("--i-understand-this-moves-the-arm", dest="confirmed", action="store_true",
                        help="required to move real arms (--robot yam) without --dry-run")
    parser.add_argument("--sim-command-delay-ms", type=float, default=0.0, help="sim: injected command delay")
    parser.add_argument("--sim-camera-delay-ms", action="append", type=_pair, default=[], metavar="CAM=MS",
                        help="sim: injected camera delay (repeatable)")


def run(args: argparse.Namespace) -> int:
    from calibration.latency import LatencyPlan, camera_joints, describe_plan, latency_section, run_latency
    from calibration.latency_camera import CameraLatencyConfig
    from calibration.latency_command import StepConfig
    from calibration.latency_pattern import PatternConfig
    from calibration.latency_signal import LatencyError
    from robot_client.backends import get_backend
    from robot_client.calfile import CalibrationError, update_calibration, with_latency
    from robot_client.cameras.frame import CameraError
    from robot_client.config import RobotConfigError, load_robot_config
    from robot_client.rig import RigError
    from robot_client.robot import RobotError

    backend = get_backend(args.robot)
    try:
        config = load_robot_config(args.config)
        cameras = tuple(args.camera) if args.camera is not None else backend.default_cameras(config)
        poll_hz = args.poll_hz or (SIM_CAMERA_FPS if backend.simulated else REAL_POLL_HZ)
        plan = LatencyPlan(
            step=None if args.only == "cameras" else StepConfig(joint=args.joint, step=args.step,
                                                                 repeats=args.repeats),
            cameras={} if args.only == "command" else camera_joints(config, cameras, args.joint,
                                                                    dict(args.camera_joint)),
            camera=CameraLatencyConfig(
                pattern=PatternConfig(amplitude=args.amplitude, duration_s=args.pattern_seconds, seed=args.seed),
                frame_every=max(1, round(config.servo_hz / poll_hz))),
        )
        _check_sim_options(args, backend, cameras)
    except (LatencyError, RobotConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(describe_plan(config, plan, args.robot)))
    if args.dry_run:
        print("dry run: nothing connected, nothing measured, the calibration file is unchanged")
        return 0
    if backend.moves_real_hardware and not args.confirmed:
        print("refusing to move real arms: run once with --dry-run, then add --i-understand-this-moves-the-arm",
              file=sys.stderr)
        return 2
    rig: Rig | None = None
    try:
        rig = _build_rig(args, backend, config, tuple(plan.cameras))
        rig.robot.enable()
        result = run_latency(rig, config, plan)
        section = latency_section(result, args.robot)
        update_calibration(args.calibration, config.name, lambda cal: with_latency(cal, section))
    except (LatencyError, RobotError, RigError, CameraError, CalibrationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if rig is not None:
            rig.close()
    print("\n".join(result.lines()))
    print(f"wrote [latency] to {args.calibration}")
    return 0


def _check_sim_options(args: argparse.Namespace, backend: RobotBackend, cameras: tuple[str, ...]) -> None:
    from calibration.latency_signal import LatencyError

    if not backend.simulated and (args.sim_command_delay_ms or args.sim_camera_delay_ms):
        raise LatencyError("--sim-command-delay-ms / --sim-camera-delay-ms apply to --robot sim only")
    for name, ms in args.sim_camera_delay_ms:
        if name not in cameras:
            raise LatencyError(f"--sim-camera-delay-ms names camera {name!r}, which is not measured ({list(cameras)})")
        try:
            float(ms)
        except ValueError:
            raise LatencyError(f"--sim-camera-delay-ms {name}={ms}: expected milliseconds") from None


def _build_rig(args: argparse.Namespace, backend: RobotBackend, config: RobotConfig,
               cameras: tuple[str, ...]) -> Rig:
    """A simulated rig runs lockstep, as fast as possible, from the sample's home pose with the injected
    delays; any other backend is built as it is."""
    from robot_client.backends import RigOptions

    if not backend.simulated:
        return backend.build(config, cameras, RigOptions())
    from robot_client.sim.robot import SimConfig

    delays = {name: float(ms) / 1e3 for name, ms in args.sim_camera_delay_ms}
    pose = tuple(v for _ in config.arms for v in SIM_ARM_POSE) if all(
        len(a.names) == len(SIM_ARM_POSE) for a in config.arms) else None
    return backend.build(config, cameras, RigOptions(
        pace=None, camera_delays_s=delays,
        sim=SimConfig(command_delay_s=args.sim_command_delay_ms / 1e3, initial_positions=pose)))
