"""SimRobot: the Robot interface backed by MuJoCo, for tests, demos and dry runs of the full stack.

Clock modes (SimConfig.realtime):
- realtime=False (default): simulated time advances only when the caller asks, so runs are deterministic and
  as fast as the CPU allows. With `step_on_command=True` (default) each `command()` sets the targets and then
  advances the physics by exactly one servo period (1 / config.servo_hz; at a 2 ms timestep a 5 ms period is
  2 or 3 physics steps, accumulated without drift). A servo loop written for the real arm therefore runs
  unchanged, in lockstep with simulated time, and only its sleep has to be skipped. `step(seconds)` advances
  without a new command (settling, waiting); with `step_on_command=False` it is the only way time advances.
- realtime=True: a background thread keeps simulated time equal to wall-clock time (robot_client.sim.realtime),
  so a real-time servo loop drives the sim like the real arm; `command()` only sets targets and `step()` is
  refused.
Timestamps (JointState.timestamp, camera frames) are simulated time mapped onto the `time.monotonic()` axis
(SimWorld.stamp): in real-time mode they follow the wall clock; otherwise they start at the monotonic time of
the connect/reset and advance with simulated time only, so their differences are simulated durations.

Actuation (SimConfig.actuation): "position" (default) drives each joint with a stiff position servo and cancels
gravity per body, an idealised arm; "mit" drives it through the real motors' MIT law (robot_client.sim.mit): the
arm config's kp/kd, v_des = 0, the motor type's torque range, real gravity and the driver's gravity feed-forward,
the gripper force limiter, applied every physics step. There the arm sags without the feed-forward, a stalled
gripper's push is capped, and efforts are motor torques (N m, grippers included). Everything below (clock modes,
faults, holds, delays) works the same in both.

Injected command latency (SimConfig.command_delay_s, for the latency calibration's tests; default 0 = none):
each `command()` takes effect that many simulated seconds after it was sent, as a real bus and motor driver
delay it; the motors keep following the previous target meanwhile. `hold()` and the holds on a fault act at once
and drop the commands still in flight: they stand for the driver's own safe reaction, and a simulated delay must
never postpone a stop.

Faults: a joint whose |commanded - measured| exceeds `config.safety.max_tracking_error` continuously for
`SimConfig.tracking_hold_s` latches a `tracking_error` fault naming it; `inject_stuck` makes a joint stop
following its commands to provoke one, `inject_fault` raises a motor-style error directly. On any fault the
sim holds every joint where it is (never limp); `read_state()`, `command()` and `enable()` raise RobotFault
while a fault is active, and `status()` lists them without raising. Recovery is the real driver's sequence:
`clear_faults()` then `enable()`; injected faults model broken hardware and persist (enable() keeps refusing)
until `clear_injected_faults()`. Grippers are not tracking-checked by default: a gripper closed on an object
legitimately stays away from its target.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from robot_client.backends import SIM_ACTUATIONS
from robot_client.config import RobotConfig
from robot_client.gravity import ARM_JOINTS
from robot_client.robot import (
    F64,
    ActuationReport,
    FaultRecord,
    JointState,
    Robot,
    RobotCommandError,
    RobotError,
    RobotFault,
    RobotStatus,
)
from robot_client.sim.layout import Pose, SceneLayout
from robot_client.sim.mit import MODEL_GRAVITY_FACTORS, MitDrive
from robot_client.sim.realtime import RealtimeStats, RealtimeStepper
from robot_client.sim.tracking import TRACKING_ERROR, TrackingMonitor
from robot_client.sim.world import DEFAULT_MODEL, SimWorld

SIM_JOINT = "sim"  # the `joint` of faults that belong to the simulation itself
RANGE_TOLERANCE = 1e-6
Actuation = Literal["position", "mit"]  # = robot_client.backends.SIM_ACTUATIONS


@dataclass(frozen=True)
class SimConfig:
    """How the simulated robot runs (see the module docstring for the clock modes)."""

    model_path: Path = DEFAULT_MODEL
    layout: SceneLayout = field(default_factory=SceneLayout)
    # Seed of the object layout applied at connect (reset() takes its own).
    seed: int = 0
    # Joint positions at connect, robot units and joint order; None = all zero (the YAM home pose).
    initial_positions: tuple[float, ...] | None = None
    realtime: bool = False
    # Non-real-time only: advance one servo period per command (lockstep) instead of only on step().
    step_on_command: bool = True
    # A tracking error must persist this long (simulated seconds) to become a fault.
    tracking_hold_s: float = 0.1
    check_gripper_tracking: bool = False
    # Real-time stepping thread: wake-up period and the lag after which it drops the backlog.
    realtime_period_s: float = 0.001
    realtime_max_lag_s: float = 0.1
    # Injected latency: commands take effect this many simulated seconds after command() (0 = at once).
    command_delay_s: float = 0.0
    # How the joints are driven (robot_client.backends.SIM_ACTUATIONS): "position" (default; the embedded demo
    # policy was trained on it) or "mit", the real motors' law with their gains and torque limits, real gravity and
    # the driver's gravity feed-forward (robot_client.sim.mit). The three settings below apply to "mit" only.
    actuation: Actuation = "position"
    # Gravity feed-forward on (as the real driver); an arm whose config turns it off stays off.
    gravity_compensation: bool = True
    # Per-joint factors of the feed-forward; None = each arm's configured gravity_factors. Default 1.0: the sim's
    # plant is the very model the feed-forward comes from, so 1.0 cancels gravity exactly (the real arm's factors
    # correct for how the real arm differs from it).
    gravity_factors: tuple[float, ...] | None = MODEL_GRAVITY_FACTORS
    # Gripper force limiter (robot_client.gripper_force) on the gripper motors; an arm whose config turns it off
    # stays off.
    gripper_force_limit: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.command_delay_s) and self.command_delay_s >= 0):
            raise ValueError(f"SimConfig.command_delay_s must be finite and >= 0, got {self.command_delay_s}")
        if self.actuation not in SIM_ACTUATIONS:
            raise ValueError(f"SimConfig.actuation must be one of {list(SIM_ACTUATIONS)}, got {self.actuation!r}")
        if self.gravity_factors is not None:
            f = self.gravity_factors
            if len(f) != ARM_JOINTS or not all(math.isfinite(x) and 0.0 <= x <= 3.0 for x in f):
                raise ValueError(f"SimConfig.gravity_factors must be {ARM_JOINTS} numbers in [0, 3] (joints 1-6) "
                                 f"or None, got {list(f)}")


class SimRobot(Robot):
    """The bimanual YAM in MuJoCo. Thread-safe: every access to the physics holds the world lock."""

    def __init__(self, config: RobotConfig, sim: SimConfig | None = None) -> None:
        self.config = config
        self.sim_config = sim if sim is not None else SimConfig()
        self.period_s = 1.0 / config.servo_hz
        n = config.dof
        grippers = set(config.gripper_indices())
        self._monitor = TrackingMonitor(
            config.joint_names, config.safety.max_tracking_error, self.sim_config.tracking_hold_s,
            [self.sim_config.check_gripper_tracking or i not in grippers for i in range(n)])
        self._world: SimWorld | None = None
        self._stepper: RealtimeStepper | None = None
        self._enabled = False
        self._commanded = np.zeros(n)  # the targets the motors follow now (after any injected delay)
        self._commanded_velocity: F64 | None = None  # the planned velocities sent with `_commanded` (None: 0)
        # (sim time it takes effect, targets, planned velocities)
        self._in_flight: deque[tuple[float, F64, F64 | None]] = deque()
        self._sim_target = 0.0
        self._latched: list[FaultRecord] = []
        self._injected: dict[str, FaultRecord] = {}
        self._stuck: dict[int, float] = {}
        self._drive: MitDrive | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def world(self) -> SimWorld:
        if self._world is None:
            raise RobotError("SimRobot is not connected; call connect() first")
        return self._world

    @property
    def connected(self) -> bool:
        return self._world is not None

    def connect(self) -> None:
        """Load the model, place joints and objects (SimConfig.seed), start real-time stepping if configured.
        Motors start limp, as the Robot contract asks; call enable()."""
        if self._world is None:
            world = SimWorld(self.joint_names, self.sim_config.model_path, self.sim_config.layout)
            # A whole number of physics steps per servo period: every tick then advances exactly one period
            # (a 2 ms step would alternate 4 and 6 ms ticks at 200 Hz and distort the servo's trajectory).
            steps = max(1, math.ceil(self.period_s / world.timestep - 1e-9))
            world.model.opt.timestep = self.period_s / steps
            self._check_ranges(world)
            if self.sim_config.actuation == "mit":
                sc = self.sim_config
                self._drive = MitDrive(self.config, world, gravity_compensation=sc.gravity_compensation,
                                       gravity_factors=sc.gravity_factors,
                                       gripper_force_limit=sc.gripper_force_limit)
                world.use_drive(self._drive)
            self._world = world
            initial = self.sim_config.initial_positions
            self.reset(self.sim_config.seed, joint_positions=None if initial is None else np.asarray(initial, float))
            world.set_limp(True)
        if self.sim_config.realtime and self._stepper is None:  # also restarts stepping after close()
            self._stepper = RealtimeStepper(self.world, self._advance_locked, self._on_stepper_error,
                                            self.sim_config.realtime_period_s, self.sim_config.realtime_max_lag_s)
            self._stepper.start()

    def _check_ranges(self, world: SimWorld) -> None:
        """Every configured limit must be reachable in the model, or in-limit commands could never be tracked."""
        for name, (lo, hi) in zip(self.joint_names, world.position_ranges(), strict=True):
            lim = self.config.limits[name]
            if lim.lower < lo - RANGE_TOLERANCE or lim.upper > hi + RANGE_TOLERANCE:
                raise RobotError(f"{name}: configured limits [{lim.lower}, {lim.upper}] exceed the model's range "
                                 f"[{lo:.6f}, {hi:.6f}] in {self.sim_config.model_path}")

    def reset(self, seed: int | None = None, object_poses: Mapping[str, Pose] | None = None,
              joint_positions: F64 | None = None) -> None:
        """Start a new episode: fresh physics at the given joint positions (default home), objects from the
        layout for `seed` (default SimConfig.seed) with `object_poses` overriding, latched faults cleared.
        Injected faults stay (they model hardware); stuck joints stay stuck where they now are."""
        world = self.world
        with world.lock:
            world.reset(self.sim_config.seed if seed is None else seed, object_poses, joint_positions)
            self._commanded = world.positions()
            self._commanded_velocity = None
            self._in_flight.clear()
            self._stuck = {i: float(self._commanded[i]) for i in self._stuck}
            self._latched.clear()
            self._monitor.reset()
            if self._drive is not None:
                self._drive.reset()
            self._sim_target = world.time
            if self._stepper is not None:
                self._stepper.reanchor()

    def enable(self) -> None:
        """Energise the motors holding the measured position. Refused while any fault is active."""
        world = self.world
        with world.lock:
            self._raise_if_faulted("enable")
            self._monitor.reset()
            if self._drive is not None:
                self._drive.reset()
            world.set_limp(False)
            self._commanded = world.positions()
            self._commanded_velocity = None
            self._in_flight.clear()
            self._apply_targets()
            self._enabled = True

    def clear_faults(self) -> None:
        """Forget latched faults (after the cause is fixed); call enable() afterwards to drive again."""
        with self.world.lock:
            self._latched.clear()
            self._monitor.reset()

    def disable(self) -> None:
        if self._world is None:
            return
        with self._world.lock:
            self._world.set_limp(True)
            self._enabled = False

    def close(self) -> None:
        """Stop real-time stepping and go limp. The world stays readable (object poses, cameras)."""
        if self._stepper is not None:
            self._stepper.stop()
            self._stepper = None
        self.disable()

    # -- Robot interface ---------------------------------------------------------------------------------------
    def read_state(self) -> JointState:
        with self.world.lock:
            self._raise_if_faulted("read_state")
            return self.measured_state()

    def measured_state(self) -> JointState:
        """The current state without fault checks (diagnostics after a fault)."""
        world = self.world
        with world.lock:
            return JointState(world.positions(), world.velocities(), world.efforts(), world.stamp(),
                              self.joint_names)

    def command(self, positions: F64, velocities: F64 | None = None) -> None:
        target = self.check_command(positions)
        velocity = None if velocities is None else self.check_velocities(velocities).copy()
        world = self.world
        with world.lock:
            self._raise_if_faulted("command")
            if not self._enabled:
                raise RobotCommandError("command refused: the robot is disabled (call enable())")
            if self.sim_config.command_delay_s > 0:
                self._in_flight.append((world.time + self.sim_config.command_delay_s, target.copy(), velocity))
            else:
                self._commanded = target.copy()
                self._commanded_velocity = velocity
                self._apply_targets()
            if self._stepper is None and self.sim_config.step_on_command:
                self._sim_target += self.period_s
                self._advance_locked(self._sim_target)
                self._raise_if_faulted("command")

    def hold(self) -> None:
        """Target the measured position. Works while faulted (it is the safe action); a no-op while limp."""
        world = self.world
        with world.lock:
            if self._enabled:
                self._commanded = world.positions()
                self._commanded_velocity = None
                self._in_flight.clear()
                self._apply_targets()

    def status(self) -> RobotStatus:
        with self.world.lock:
            return RobotStatus(enabled=self._enabled, faults=tuple(self._all_faults()))

    # -- simulated time ----------------------------------------------------------------------------------------
    @property
    def sim_time(self) -> float:
        return self.world.time

    def now(self) -> float:
        """The robot clock (simulated time on the monotonic axis), the same clock as JointState.timestamp."""
        with self.world.lock:
            return self.world.stamp()

    def step(self, duration_s: float) -> None:
        """Advance simulated time by `duration_s` with the current targets (non-real-time mode only).
        Faults that latch meanwhile are raised by the next read_state()/command()."""
        if self._stepper is not None:
            raise RobotError("step() is not available in real-time mode; the stepping thread owns the clock")
        if not duration_s >= 0:
            raise ValueError(f"step: duration must be >= 0 s, got {duration_s}")
        with self.world.lock:
            self._sim_target += duration_s
            self._advance_locked(self._sim_target)

    def actuation_report(self, reset: bool = False) -> ActuationReport | None:
        """"mit" actuation: the gravity feed-forward per joint and the grippers' grasp states since the last reset,
        as the real driver reports them; None in "position" actuation (no motor law to report on)."""
        if self._drive is None or self._world is None:
            return None
        with self._world.lock:
            report = self._drive.report()
            if reset:
                self._drive.reset_stats()
            return report

    @property
    def mit_drive(self) -> MitDrive | None:
        """The motors' law in "mit" actuation (feed-forward and targets of the last step, grasp states); None in
        "position" actuation or before connect()."""
        return self._drive

    @property
    def realtime_stats(self) -> RealtimeStats | None:
        return None if self._stepper is None else self._stepper.stats

    # -- objects -----------------------------------------------------------------------------------------------
    @property
    def object_names(self) -> tuple[str, ...]:
        return self.world.object_names

    def object_pose(self, name: str) -> Pose:
        with self.world.lock:
            return self.world.object_pose(name)

    def object_positions(self) -> dict[str, F64]:
        """World positions (m) of every free object, e.g. for task success checks."""
        with self.world.lock:
            return {n: np.asarray(self.world.object_pose(n).position) for n in self.world.object_names}

    def set_object_pose(self, name: str, pose: Pose) -> None:
        with self.world.lock:
            self.world.set_object_pose(name, pose)

    def site_position(self, name: str) -> F64:
        """World position of a model site, e.g. "left_grasp" (between the finger pads) or "right_tcp"."""
        with self.world.lock:
            return self.world.site_position(name)

    # -- fault injection ---------------------------------------------------------------------------------------
    def inject_stuck(self, joint: str) -> None:
        """Freeze `joint` where it is: its motor stops following commands, so tracking errors build up."""
        index = self._index(joint)
        with self.world.lock:
            self._stuck[index] = float(self.world.positions()[index])
            self._apply_targets()

    def inject_fault(self, joint: str, code: str = "overload", message: str = "injected motor fault") -> None:
        """A motor error on `joint` (e.g. over-temperature): the robot holds and every read/command raises."""
        self._index(joint)
        with self.world.lock:
            self._injected[joint] = FaultRecord(joint, code, message)
            self._hold_locked()

    def clear_injected_faults(self) -> None:
        """Undo inject_stuck/inject_fault (the hardware is fixed); latched faults still need clear_faults()."""
        with self.world.lock:
            self._injected.clear()
            self._stuck.clear()
            self._apply_targets()

    # -- internals (callers hold the world lock) ---------------------------------------------------------------
    def _index(self, joint: str) -> int:
        try:
            return self.joint_names.index(joint)
        except ValueError:
            raise RobotError(f"no joint '{joint}'; joints are {list(self.joint_names)}") from None

    def _all_faults(self) -> list[FaultRecord]:
        return [*self._injected.values(), *self._latched]

    def _raise_if_faulted(self, what: str) -> None:
        faults = self._all_faults()
        if faults:
            first = faults[0]
            then = "clear_injected_faults(), " if self._injected else ""
            raise RobotFault(first.joint, first.code, f"{what} refused: {first.message}; call {then}clear_faults() "
                                                      f"and then enable()")

    def _apply_targets(self) -> None:
        ctrl = self._commanded.copy()
        velocity = None if self._commanded_velocity is None else self._commanded_velocity.copy()
        for index, frozen in self._stuck.items():
            ctrl[index] = frozen
            if velocity is not None:
                velocity[index] = 0.0
        self.world.set_targets(ctrl, velocity)

    def _hold_locked(self) -> None:
        self._commanded = self.world.positions()
        self._commanded_velocity = None
        self._in_flight.clear()
        self._apply_targets()
        self._monitor.reset()

    def _latch(self, fault: FaultRecord) -> None:
        if all((f.joint, f.code) != (fault.joint, fault.code) for f in self._latched):
            self._latched.append(fault)
        self._hold_locked()

    def _advance_locked(self, target: float) -> None:
        """Step the physics until simulated time reaches `target` (to the nearest step), checking tracking."""
        world = self.world
        half_step = 0.5 * world.timestep
        while world.time < target - half_step:
            self._deliver_due(world.time + half_step)
            world.step()
            if world.diverged():
                self._latch(FaultRecord(SIM_JOINT, "diverged", "MuJoCo reported unstable accelerations"))
                return
            if self._enabled and not self._latched:
                violation = self._monitor.update(world.time, self._commanded, world.positions())
                if violation is not None:
                    self._latch(FaultRecord(violation.joint, TRACKING_ERROR, violation.message))

    def _deliver_due(self, now: float) -> None:
        """Commands in flight whose delay has passed by `now` become the motors' targets (the latest wins)."""
        due = None
        while self._in_flight and self._in_flight[0][0] <= now:
            due = self._in_flight.popleft()[1:]
        if due is not None and self._enabled:
            self._commanded, self._commanded_velocity = due
            self._apply_targets()

    def _on_stepper_error(self, exc: BaseException) -> None:
        lock = self._world.lock if self._world is not None else threading.RLock()
        with lock:
            self._latched.append(FaultRecord(SIM_JOINT, "stepper_error", f"real-time stepping stopped: {exc!r}"))
