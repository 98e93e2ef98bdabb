"""The servo loop: read state, pick the target, jerk-limit it, command, at a fixed rate with measured timing.

Per tick: read the robot (a fault stops the loop with the arm held by the backend), ask the chunk scheduler for
the target at this instant, and run one jerk-limited servo step toward it. When no usable target exists for
longer than the server deadline (server down, late, or every action executed), or on e-stop, the servo switches
to a jerk-limited stop where the arm is and holds; when a target comes back it resumes. In dry-run mode
everything is computed and reported but nothing is sent to the motors.

Time comes from a `Clock`: the wall clock on the robot, or a simulated clock for deterministic, faster than
real-time runs in simulation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from robot_client.chunking import ChunkScheduler
from robot_client.robot import JointState, Robot, RobotFault
from robot_client.safety import EStop
from robot_client.servo import JerkLimitedServo, ServoStep

log = logging.getLogger(__name__)
F64 = npt.NDArray[np.float64]


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...


class WallClock:
    """time.monotonic(), with a short busy-wait before the deadline for sub-millisecond tick accuracy.

    The spin stays at SCHED_FIFO too: on this project's VM a FIFO thread's plain sleep woke late enough to put the
    servo process's p99 period error at 0.86-0.95 ms (0.004-0.49 ms with the spin; docs/benchmarks.md)."""

    SPIN_S = 0.0008

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float) -> None:
        remaining = t - time.monotonic()
        if remaining > self.SPIN_S:
            time.sleep(remaining - self.SPIN_S)
        while time.monotonic() < t:
            pass


def run_should_end(stop: Callable[[], bool] | None, estop: EStop, servo_is_still: Callable[[], bool]) -> bool:
    """When a `run_for` (in this process's loop or a servo process's) ends early: `stop()` said so, or an
    e-stop has settled (the arm is still)."""
    return (stop is not None and stop()) or (estop.active and servo_is_still())


@dataclass
class LoopTiming:
    """Tick periods (s, on the loop's clock) and overruns (ticks that started more than half a period late);
    `work` is the wall time spent inside each tick (reading, servo step, command)."""

    periods: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)
    overruns: int = 0

    def summary(self, nominal: float) -> str:
        if not self.periods:
            return "no ticks"
        p = np.asarray(self.periods)
        err = np.abs(p - nominal)
        # `work` is empty where the ticks ran in another process (a servo process reports periods only).
        work = f"work p99 {np.percentile(np.asarray(self.work), 99) * 1e3:.3f} ms, " if self.work else ""
        return (f"{len(p)} ticks, period p50 {np.percentile(p, 50) * 1e3:.3f} ms, "
                f"p99 {np.percentile(p, 99) * 1e3:.3f} ms (|error| p99 {np.percentile(err, 99) * 1e3:.3f} ms), "
                f"{work}overruns {self.overruns}")


@dataclass(frozen=True)
class TickRecord:
    time: float
    state: JointState
    target: F64 | None
    command: ServoStep
    holding: bool
    # Seconds since the last scheduled action passed (how late the policy is); inf before the first chunk.
    exhausted_s: float = 0.0


@dataclass
class LoopEvents:
    holds: int = 0
    resumes: int = 0
    target_clamps: int = 0
    output_clamps: int = 0
    # Ticks where ruckig's synchronized solve failed and a fallback (still jerk-limited) step was used.
    servo_fallbacks: int = 0
    log: list[str] = field(default_factory=list)

    def add(self, t: float, message: str) -> None:
        self.log.append(f"{t:.3f} {message}")
        log.info("%s", message)


class ServoLoop:
    def __init__(
        self,
        robot: Robot,
        servo: JerkLimitedServo,
        clock: Clock,
        *,
        deadline_s: float,
        dry_run: bool = False,
        estop: EStop | None = None,
        on_tick: Callable[[TickRecord], None] | None = None,
    ) -> None:
        self.robot = robot
        self.servo = servo
        self.clock = clock
        self.period = servo.period_s
        self.deadline_s = deadline_s
        self.dry_run = dry_run
        self.estop = estop or EStop()
        self.on_tick = on_tick
        self.timing = LoopTiming()
        self.events = LoopEvents()
        self.latest_state: JointState | None = None
        self.last_target: F64 | None = None
        self.holding = False
        self._next_tick: float | None = None
        self._last_start: float | None = None

    def start(self) -> JointState:
        """Read the robot and start the servo from where it is (nothing moves)."""
        state = self.robot.read_state()
        self.latest_state = state
        self.servo.reset(state.positions)
        self.last_target = state.positions.copy()
        self._next_tick = self.clock.now()
        return state

    def tick(
        self,
        target_source: Callable[[float], F64 | None],
        exhausted_since: Callable[[float], float],
        velocity_source: Callable[[float], F64 | None] | None = None,
    ) -> TickRecord:
        """One servo tick: waits for its slot, reads, steps, commands."""
        assert self._next_tick is not None, "call start() first"
        self.clock.sleep_until(self._next_tick)
        t0 = self.clock.now()
        work_start = time.perf_counter()
        if self._last_start is not None:
            period = t0 - self._last_start
            self.timing.periods.append(period)
            if period > 1.5 * self.period:
                self.timing.overruns += 1
        self._last_start = t0
        try:
            state = self.robot.read_state()
        except RobotFault as fault:
            self.events.add(t0, f"robot fault: {fault}; stopping")
            raise
        self.latest_state = state
        target = target_source(t0)
        exhausted = exhausted_since(t0)
        late = exhausted > self.deadline_s
        if self.estop.active:
            if not self.servo.stopping:
                self.servo.stop()
                self.events.add(t0, f"e-stop ({self.estop.reason}): stopping and holding")
            self.holding = True
        elif target is None or late:
            if not self.holding:
                self.servo.stop()
                self.holding = True
                self.events.holds += 1
                why = "no target" if target is None else f"no fresh actions for {exhausted:.3f} s"
                self.events.add(t0, f"hold: {why} (deadline {self.deadline_s:.3f} s)")
        elif self.holding:
            self.servo.resume()
            self.holding = False
            self.events.resumes += 1
            self.events.add(t0, "resume: fresh actions")
        velocity = None
        if target is not None and not self.holding:
            self.last_target = target
            velocity = velocity_source(t0) if velocity_source is not None else None
        fallbacks_before = self.servo.fallbacks
        step = self.servo.step(self.last_target if self.last_target is not None else state.positions, velocity)
        if self.servo.fallbacks != fallbacks_before:
            self.events.servo_fallbacks += 1
            self.events.add(t0, "servo: synchronized trajectory solve failed, used the fallback step")
        if step.target_clamped:
            self.events.target_clamps += 1
        if step.output_clamped:
            self.events.output_clamps += 1
            self.events.add(t0, f"output clamped at position limits: {step.output_clamped}")
        if not self.dry_run:
            self.robot.command(step.position, step.velocity)
        else:
            # Dry run: the servo's commands are computed and reported but never sent; holding where the arm is
            # keeps a real arm's motor watchdog fed and its feedback fresh (a silent bus would trip both).
            self.robot.hold()
        self.timing.work.append(time.perf_counter() - work_start)
        self._next_tick += self.period
        record = TickRecord(t0, state, target, step, self.holding, exhausted)
        if self.on_tick is not None:
            self.on_tick(record)
        return record

    def run_for(self, scheduler: ChunkScheduler, duration_s: float,
                stop: Callable[[], bool] | None = None) -> None:
        """Tick until `duration_s` has passed on the loop's clock, e-stop settles, or `stop()` is true."""
        assert self._next_tick is not None, "call start() first"
        end = self._next_tick + duration_s
        while self._next_tick < end:
            self.tick(scheduler.target_at, scheduler.exhausted_since, scheduler.target_velocity_at)
            if run_should_end(stop, self.estop, self.servo.is_still):
                break

    def drive_to(self, target: F64, *, velocity_scale: float, tolerance: float = 2e-3,
                 timeout_s: float = 30.0) -> bool:
        """Move to `target` with scaled velocity limits (the slow ramp); True when reached within tolerance."""
        assert self._next_tick is not None, "call start() first"
        self.servo.set_velocity_scale(velocity_scale)
        end = self._next_tick + timeout_s
        try:
            while self._next_tick < end and not self.estop.active:
                record = self.tick(lambda t: target, lambda t: 0.0)
                if np.max(np.abs(record.command.position - target)) < tolerance and self.servo.is_still(1e-3):
                    return True
            return False
        finally:
            self.servo.set_velocity_scale(1.0)
