"""A rig: the robot, its clock and its cameras, built from the robot config for `--robot sim|yam`.

The servo loop and the policy worker see only this; whether joints are Damiao motors on CAN or MuJoCo bodies,
and whether frames come from USB cameras or the offscreen renderer, is decided here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from policy_norm.joint_names import joint_name_mismatch
from robot_client.backends import RigOptions, RobotBackend, register_backend
from robot_client.config import RobotConfig
from robot_client.control_loop import Clock, WallClock
from robot_client.robot import Robot

if TYPE_CHECKING:
    from robot_client.sim.robot import SimConfig

log = logging.getLogger(__name__)
Frames = Mapping[str, tuple[npt.NDArray[np.uint8], float]]


class RigError(RuntimeError):
    """The rig cannot provide what the policy needs (a camera, a joint); the message names it."""


@dataclass
class Rig:
    robot: Robot
    clock: Clock
    capture_images: Callable[[], Frames]
    camera_names: tuple[str, ...]
    # Prepare episode `i` (sim: reset the scene with a seed; real arm: nothing, the operator sets up).
    reset_episode: Callable[[int], None] = lambda i: None
    # Task-specific success check at the end of an episode, given its prompt (sim: robot_client.sim.tasks, for
    # the prompts it knows); None = unknown.
    success: Callable[[str], bool | None] = lambda prompt: None
    # Set when the servo loop runs in a process of its own: builds the episode's loop (a RemoteServoLoop) from the
    # runner's loop settings (deadline_s, dry_run, estop, on_tick); None = the loop runs in this process.
    remote_loop: Callable[..., Any] | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception as exc:  # closing must not mask the error that ended the run
                log.warning("error while closing the rig: %s", exc)
        self._closers.clear()


SIM_CAMERAS = ("top", "left_wrist", "right_wrist")
SIM_IMAGE_SIZE = (240, 320)  # (height, width) of the simulated cameras unless asked otherwise


def build_sim_rig(config: RobotConfig, cameras: Sequence[str], *, seed: int = 0, pace: float | None = 1.0,
                  image_size: tuple[int, int] = SIM_IMAGE_SIZE, sim: SimConfig | None = None,
                  camera_delays_s: Mapping[str, float] | None = None) -> Rig:
    """`sim` overrides the SimConfig (its seed is replaced by `seed`); `camera_delays_s` injects camera latency
    (SimCameraConfig.delays_s). Both default to the plain simulation."""
    from dataclasses import replace

    from robot_client.sim.camera_service import SimCameraService
    from robot_client.sim.clock import SimClock
    from robot_client.sim.robot import SimConfig, SimRobot
    from robot_client.sim.tasks import TaskMonitor

    if config.calibration:  # zero offsets and gripper limits describe the real motors, not the simulation
        log.info("sim rig: ignoring the rig calibration file %s (it applies to the real arms only)", config.calibration)
    robot = SimRobot(config, replace(sim if sim is not None else SimConfig(), seed=seed))
    robot.connect()
    missing = [c for c in cameras if c not in SIM_CAMERAS]
    if missing:
        robot.close()
        raise RigError(f"the simulated rig has cameras {list(SIM_CAMERAS)}; the policy wants {missing}")
    try:
        service = SimCameraService(robot.world, cameras, *image_size, delays_s=camera_delays_s)
    except Exception:
        robot.close()
        raise

    monitor = TaskMonitor(robot.world)

    def reset(i: int) -> None:
        robot.reset(seed=seed + i)
        monitor.start()

    rig = Rig(robot=robot, clock=SimClock(robot, pace), capture_images=service.capture,
              camera_names=tuple(cameras), reset_episode=reset, success=monitor.success)
    rig._closers += [robot.close, service.close]
    return rig


def _sim_backend_rig(config: RobotConfig, cameras: Sequence[str], options: RigOptions) -> Rig:
    return build_sim_rig(config, cameras, seed=options.seed, pace=options.pace, sim=options.sim,
                         camera_delays_s=options.camera_delays_s)


register_backend(RobotBackend(
    name="sim", build=_sim_backend_rig, moves_real_hardware=False, simulated=True,
    default_cameras=lambda config: SIM_CAMERAS,
    help="the MuJoCo arms and rendered cameras (lockstep simulated time)",
))


def build_yam_rig(config: RobotConfig, cameras: Sequence[str], robot: Robot | None = None) -> Rig:
    """Real arms over CAN and the config's OpenCV cameras (every camera the policy needs must be configured).
    `robot`: the robot to use instead of a YamRobot in this process (a servo process's ProcessRobot)."""
    from robot_client.cameras import CameraConfig, CameraRig, OpenCVCamera
    from robot_client.yam.driver import YamRobot

    entries = {c.name: c for c in config.cameras}
    missing = [c for c in cameras if c not in entries]
    if missing:
        raise RigError(f"the policy needs cameras {missing}; add [[camera]] tables for them to {config.source}")
    robot = robot if robot is not None else YamRobot(config)
    if not cameras:  # a state-only policy: no camera threads to start
        robot.connect()
        rig = Rig(robot=robot, clock=WallClock(), capture_images=dict, camera_names=())
        rig._closers.append(robot.close)
        return rig
    rig_cameras = CameraRig([
        OpenCVCamera(CameraConfig(name=e.name, device=e.device, serial=e.serial, width=e.width, height=e.height,
                                  fps=e.fps))
        for e in (entries[c] for c in cameras)
    ])
    robot.connect()
    try:
        rig_cameras.start()
    except Exception:
        robot.close()
        raise

    def capture() -> Frames:
        frames = rig_cameras.read()
        return {name: (frame.rgb, frame.capture_timestamp) for name, frame in frames.frames.items()}

    rig = Rig(robot=robot, clock=WallClock(), capture_images=capture, camera_names=tuple(rig_cameras.names))
    rig._closers += [robot.close, rig_cameras.stop]
    return rig


register_backend(RobotBackend(
    name="yam", build=lambda config, cameras, options: build_yam_rig(config, cameras), moves_real_hardware=True,
    simulated=False, default_cameras=lambda config: tuple(c.name for c in config.cameras),
    help="the real I2RT YAM arms over CAN and the config's [[camera]] tables",
))


def build_servo_process_rig(config: RobotConfig, cameras: Sequence[str], options: RigOptions,
                            backend: str = "yam") -> Rig:
    """The arms driven by a servo process (robot_client.servo_process: the loop and the motor sender in a
    process of their own, SCHED_FIFO where permitted); cameras as the YAM rig's."""
    from robot_client.remote_loop import ProcessRobot, RemoteServoLoop
    from robot_client.servo_process import ServoProcess, ServoProcessConfig

    if not config.source or config.source.startswith("<"):
        raise RigError("a servo process loads the robot config from its file: load it from a TOML file")
    start = options.sim.initial_positions if options.sim is not None else None
    spec = ServoProcessConfig(robot_config=config.source, backend=backend, dry_run=options.dry_run,
                              cpu=options.servo_cpu,
                              deadline_s=config.safety.server_deadline_s, calibration=config.calibration or None,
                              initial_positions={} if start is None else dict(zip(config.joint_names, start,
                                                                                   strict=True)))
    proxy = ProcessRobot(config, ServoProcess(spec))
    if backend == "yam":
        rig = build_yam_rig(config, cameras, robot=proxy)
    else:
        if cameras:
            raise RigError(f"the {backend} servo process has no cameras; the policy needs {list(cameras)}")
        proxy.connect()
        rig = Rig(robot=proxy, clock=WallClock(), capture_images=dict, camera_names=())
        rig._closers.append(proxy.close)

    def make_loop(*, deadline_s: float, dry_run: bool, estop: Any, on_tick: Any) -> RemoteServoLoop:
        return RemoteServoLoop(proxy, rig.clock, deadline_s=deadline_s, dry_run=dry_run, estop=estop,
                               on_tick=on_tick)

    rig.remote_loop = make_loop
    log.info("servo process pid %s at %s priority", proxy.proc.proc.pid if proxy.proc.proc else "?",
             proxy.proc.realtime)
    return rig


register_backend(RobotBackend(
    name="yam-process", build=build_servo_process_rig, moves_real_hardware=True, simulated=False,
    default_cameras=lambda config: tuple(c.name for c in config.cameras),
    help="the real YAM arms with the servo loop and motor sender in a process of their own (SCHED_FIFO where "
         "the OS permits): steadier timing on a busy deploy machine",
))


def check_names(robot_names: Sequence[str], policy_names: Sequence[str], what: str,
                hint_flag: str | None = None) -> None:
    """The policy's joint order must be the robot's, by name: a silent reorder sends joint3's action to joint4.
    `hint_flag`: the option that renames names (`--name-map`), named in the refusal when a renaming would fix it."""
    problem = joint_name_mismatch(robot_names, policy_names, what, hint_flag=hint_flag)
    if problem is not None:
        raise RigError(problem)
