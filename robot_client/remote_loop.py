"""The deploy process's side of a servo process: what the runner drives when the loop runs in a process of its own.

`RemoteServoLoop` has the servo loop's interface as the runner uses it (start, tick, run_for, drive_to, the
servo's stop/is_still, timing, events, e-stop, latest state, on_tick records), so an episode runs the same way
whichever process the loop lives in. Instead of stepping the servo it publishes, at the policy's pace, a plan: the
scheduler's targets and velocities for the next `plan_horizon_s` sampled at the servo period (cut where the
scheduled actions end, so the servo process sees the policy run late exactly as the in-process loop does). It
drains the servo process's tick rows into TickRecords for the recorder and the report. `ProcessRobot` stands for
the robot the servo process owns: reads come from shared memory, holds become the hold mode, and direct commands
are refused (only plans move the arm).

A servo process that dies (a motor fault, a lost bus) surfaces here as a RobotFault naming it, so the runner ends
the episode as aborted with that reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from robot_client.chunking import ChunkScheduler
from robot_client.config import RobotConfig
from robot_client.control_loop import Clock, LoopEvents, LoopTiming, TickRecord, run_should_end
from robot_client.robot import (
    F64,
    FaultRecord,
    JointState,
    Robot,
    RobotCommandError,
    RobotFault,
    RobotStatus,
)
from robot_client.safety import EStop
from robot_client.servo import ServoStep
from robot_client.servo_process import ServoProcess, ServoProcessError
from robot_client.servo_shm import Plan, TickRow

log = logging.getLogger(__name__)
SERVO_PROCESS_JOINT = "servo_process"


def _fault(exc: ServoProcessError) -> RobotFault:
    return RobotFault(SERVO_PROCESS_JOINT, "servo_process_exited", str(exc))


class ProcessRobot(Robot):
    """The robot as the deploy process sees it when a servo process owns it."""

    def __init__(self, config: RobotConfig, proc: ServoProcess) -> None:
        self.config = config
        self.proc = proc

    def connect(self) -> None:
        """Start the servo process (it connects, enables holding where the arm is, and reports ready)."""
        if self.proc.block is None:
            try:
                self.proc.start()
            except ServoProcessError as exc:
                raise _fault(exc) from exc

    def enable(self) -> None:
        """The servo process enabled at start, holding where the arm was."""

    def disable(self) -> None:
        self.close()

    def close(self) -> None:
        """Shut the servo process down: it comes to rest, disables and exits."""
        if self.proc.block is not None:
            try:
                self.proc.stop()
            except ServoProcessError as exc:
                raise _fault(exc) from exc

    def read_state(self) -> JointState:
        try:
            return self.proc.state()
        except ServoProcessError as exc:
            raise _fault(exc) from exc

    def command(self, positions: F64, velocities: F64 | None = None) -> None:
        raise RobotCommandError("the servo process owns the motors: targets reach them only as plans "
                                "(RemoteServoLoop)")

    def hold(self) -> None:
        try:
            self.proc.hold()
        except ServoProcessError as exc:
            raise _fault(exc) from exc

    def status(self) -> RobotStatus:
        if self.proc.block is None:
            return RobotStatus(enabled=False)
        status = self.proc.status()
        fault = self.proc.block.fault()
        faults = (FaultRecord(SERVO_PROCESS_JOINT, "servo_process_exited", fault),) if fault else ()
        return RobotStatus(enabled=not status["exited"], faults=faults)


class _RemoteServo:
    """The servo handle the runner stops and waits on (`_bring_to_rest`)."""

    def __init__(self, loop: RemoteServoLoop) -> None:
        self._loop = loop
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        self._loop.robot.hold()

    def resume(self) -> None:
        self.stopping = False

    def is_still(self, tolerance: float = 1e-4) -> bool:
        """Every joint's commanded velocity over the servo's last two ticks below `tolerance` (rad/s), as
        `JerkLimitedServo.is_still` holds its own velocity."""
        rows = self._loop.last_rows
        if len(rows) < 2 or rows[-1].time <= rows[-2].time:
            return False
        rate = np.abs(rows[-1].command - rows[-2].command) / (rows[-1].time - rows[-2].time)
        return bool(np.all(rate < tolerance))


class RemoteServoLoop:
    """ServoLoop's interface over a servo process (see the module docstring)."""

    def __init__(self, robot: ProcessRobot, clock: Clock, *, deadline_s: float, dry_run: bool = False,
                 estop: EStop | None = None, on_tick: Callable[[TickRecord], None] | None = None,
                 plan_period_s: float = 1 / 30, plan_horizon_s: float = 0.5) -> None:
        if dry_run != robot.proc.spec.dry_run:
            raise ServoProcessError(f"the episode asks dry_run={dry_run} but the servo process was started with "
                                    f"dry_run={robot.proc.spec.dry_run}: start it with the episode's setting")
        if deadline_s != robot.proc.spec.deadline_s:
            log.warning("episode deadline %.3f s differs from the servo process's %.3f s; the servo process's "
                        "applies", deadline_s, robot.proc.spec.deadline_s)
        self.robot = robot
        self.proc = robot.proc
        self.clock = clock
        self.period = 1.0 / robot.config.servo_hz
        self.deadline_s = deadline_s
        self.estop = estop or EStop()
        self.on_tick = on_tick
        self.plan_period_s = plan_period_s
        self.samples = min(self.proc.layout.horizon, max(2, int(round(plan_horizon_s / self.period)) + 1))
        self.timing = LoopTiming()
        self.events = LoopEvents()
        self.servo = _RemoteServo(self)
        self.latest_state: JointState | None = None
        self.last_target: F64 | None = None
        self.holding = True
        self.last_rows: list[TickRow] = []
        self._estop_sent = False
        self._exhausted: Callable[[float], float] = lambda t: 0.0

    def start(self) -> JointState:
        state = self.robot.read_state()
        self.latest_state = state
        self.last_target = state.positions.copy()
        self.proc.drain()  # the episode's rows start here
        return state

    def tick(self, target_source: Callable[[float], F64 | None], exhausted_since: Callable[[float], float],
             velocity_source: Callable[[float], F64 | None] | None = None) -> TickRecord | None:
        """One step of the deploy side: publish the plan from `target_source` (hold when it has nothing now),
        wait one servo period, drain the servo's ticks. Returns the latest tick record (None before any)."""
        self._exhausted = exhausted_since
        self._publish(target_source, exhausted_since, velocity_source)
        time.sleep(self.period)
        return self._drain()

    def run_for(self, scheduler: ChunkScheduler, duration_s: float, stop: Callable[[], bool] | None = None) -> None:
        """Publish the scheduler's plan at the policy's pace until `duration_s` passed, `stop()`, or e-stop."""
        self._exhausted = scheduler.exhausted_since
        end = self.clock.now() + duration_s
        while self.clock.now() < end:
            self._publish(scheduler.target_at, scheduler.exhausted_since, scheduler.target_velocity_at)
            time.sleep(self.plan_period_s)
            self._drain()
            if run_should_end(stop, self.estop, self.servo.is_still):
                break

    def drive_to(self, target: F64, *, velocity_scale: float, tolerance: float = 2e-3,
                 timeout_s: float = 30.0) -> bool:
        """The slow ramp: a plan that holds `target` with scaled velocity limits, renewed at the plan's pace
        (not every servo period: the servo process interpolates it); True once reached and still (the same
        tolerances as `ServoLoop.drive_to`)."""
        goal = np.asarray(target, dtype=np.float64)
        held = Plan(0.0, self.period, np.tile(goal, (self.samples, 1)), np.zeros((self.samples, goal.size)))
        try:
            self.proc.set_velocity_scale(velocity_scale)
            end = self.clock.now() + timeout_s
            while self.clock.now() < end and not self.estop.active:
                try:
                    self.proc.track(replace(held, t0=time.monotonic()))
                except ServoProcessError as exc:
                    raise _fault(exc) from exc
                time.sleep(self.plan_period_s)
                self._drain()
                rows = self.last_rows
                if rows and float(np.max(np.abs(rows[-1].command - goal))) < tolerance and self.servo.is_still(1e-3):
                    return True
            return False
        finally:
            self.proc.set_velocity_scale(1.0)

    # -- internals -------------------------------------------------------------------------------------------
    def _publish(self, target_source: Callable[[float], F64 | None], exhausted_since: Callable[[float], float],
                 velocity_source: Callable[[float], F64 | None] | None) -> None:
        try:
            if self.estop.active:
                if not self._estop_sent:
                    self.proc.estop()
                    self._estop_sent = True
                    self.events.add(self.clock.now(), f"e-stop ({self.estop.reason}): stopping and holding")
                return
            now = time.monotonic()
            times = now + self.period * np.arange(self.samples)
            positions: list[F64] = []
            velocities: list[F64] = []
            for t in times:
                target = target_source(float(t))
                if target is None or (positions and exhausted_since(float(t)) > 0):
                    break
                velocity = velocity_source(float(t)) if velocity_source is not None else None
                positions.append(np.asarray(target, dtype=np.float64))
                velocities.append(np.zeros_like(positions[-1]) if velocity is None else np.asarray(velocity))
            if not positions:
                self.proc.hold()
                return
            if self.servo.stopping:
                self.servo.resume()
            self.last_target = positions[0]
            self.proc.track(Plan(now, self.period, np.stack(positions), np.stack(velocities)))
        except ServoProcessError as exc:
            raise _fault(exc) from exc

    def _drain(self) -> TickRecord | None:
        try:
            rows = self.proc.drain()
            status = self.proc.status()
        except ServoProcessError as exc:
            raise _fault(exc) from exc
        record = None
        names = self.robot.config.joint_names
        for row in rows:
            if row.period > 0:
                self.timing.periods.append(row.period)
            if row.holding and not self.holding:
                self.events.holds += 1
                self.events.add(row.time, "hold (servo process): no fresh plan")
            elif self.holding and not row.holding:
                self.events.resumes += 1
                self.events.add(row.time, "resume (servo process)")
            self.holding = row.holding
            state = JointState(row.positions, row.velocities, row.efforts, row.time, names)
            zeros = np.zeros(len(names))
            step = ServoStep(position=row.command, velocity=zeros, acceleration=zeros, jerk=zeros)
            target = None if np.isnan(row.target).all() else row.target
            record = TickRecord(row.time, state, target, step, row.holding, self._exhausted(row.time))
            self.latest_state = state
            if self.on_tick is not None:
                self.on_tick(record)
        self.last_rows = (self.last_rows + rows)[-2:]
        self.timing.overruns = int(status["overruns"])
        if status["exited"]:
            raise RobotFault(SERVO_PROCESS_JOINT, "servo_process_exited",
                             f"the servo process exited: {self.proc.block.fault() if self.proc.block else ''}")
        return record
