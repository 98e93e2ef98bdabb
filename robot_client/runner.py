"""One episode on a rig: first-chunk guard and ramp, then the servo loop with the policy worker, then a report.

Sequence per episode:
1. read the robot, start the servo where the arm is;
2. ask for the first chunk (the arm holds); refuse if its first action is far from the state (names the joints)
   unless overridden, then ramp to it slowly;
3. run the servo loop for the episode length with the policy worker refilling the scheduler; holds and resumes
   happen inside the loop on server loss;
4. stop the worker, bring the arm to rest, and report timing, chunking and safety events.

An episode that cannot go on ends early as `aborted`, with the arm holding and the reason in the report: the
first-action guard refused, no first chunk came, the ramp did not finish, another model answered
(`ModelChangedError`), no usable chunk came for longer than `hold_timeout_s` past the deadline (server lost), or
the robot faulted (e.g. a tracking error). The stop goes through the loop's own hold (the servo's jerk-limited
stop, as on server loss); a faulted robot is already held by its backend. By default the cause is then re-raised
for the caller; `raise_on_abort=False` (the `run` CLI) returns the report instead, so an aborted episode is a
recorded outcome, not a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from robodata.recording_layout import EPISODE_ABORTED, EPISODE_COMPLETED
from robot_client.chunking import Chunk, ChunkingConfig, make_scheduler
from robot_client.control_loop import LoopEvents, ServoLoop, TickRecord
from robot_client.motion_stats import MotionMeter, MotionSummary
from robot_client.policy_client import ModelChangedError
from robot_client.policy_worker import ChunkRecord, InferencePolicy, PolicyWorker, WorkerStats
from robot_client.remote_loop import RemoteServoLoop
from robot_client.rig import Rig
from robot_client.robot import ActuationReport, RobotFault
from robot_client.safety import EStop, FirstActionError, check_first_action
from robot_client.servo import JerkLimitedServo, ServoLimits

log = logging.getLogger(__name__)


class PolicyLostError(RuntimeError):
    """No usable chunk came from the policy for too long (server down, or every request refused)."""


class RampNotFinishedError(RuntimeError):
    """The slow ramp to the first action did not reach it (e-stop or timeout)."""


# Why an episode may end early without that being a bug: each ends it as aborted with its message as the reason.
ABORT_ERRORS: tuple[type[Exception], ...] = (FirstActionError, ModelChangedError, PolicyLostError,
                                             RampNotFinishedError, RobotFault)


@dataclass(frozen=True)
class EpisodeOptions:
    chunking: ChunkingConfig
    duration_s: float = 20.0
    prompt: str = ""
    dry_run: bool = False
    allow_far_start: bool = False
    first_query_timeout_s: float = 60.0
    # Abort the episode when no usable chunk came for this long after the hold deadline passed (server lost);
    # None holds until the episode's time is up.
    hold_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.hold_timeout_s is not None and not self.hold_timeout_s >= 0:
            raise ValueError(f"hold_timeout_s must be >= 0 seconds (or None: hold until the episode ends), got "
                             f"{self.hold_timeout_s}")


@dataclass
class EpisodeReport:
    index: int
    ticks: int = 0
    chunks: int = 0
    stale_dropped: int = 0
    timing: str = ""
    events: LoopEvents = field(default_factory=LoopEvents)
    worker: WorkerStats = field(default_factory=WorkerStats)
    far_joints: list[str] = field(default_factory=list)
    success: bool | None = None
    max_tracking_error: float = 0.0
    wall_s: float = 0.0
    # Clock time at which the first chunk's action 0 started executing (after the guard and the ramp).
    execution_start: float = 0.0
    # Peaks of the commanded trajectory (finite differences of what was sent), ramp and rest included.
    motion: MotionSummary | None = None
    # EPISODE_COMPLETED, or EPISODE_ABORTED with the reason (the error's message, or the e-stop's): the same words
    # the recording stores.
    outcome: str = EPISODE_COMPLETED
    reason: str = ""
    # The error that aborted the episode (None when completed or e-stopped).
    error: Exception | None = field(default=None, repr=False)
    # Gravity feed-forward used per joint (mean/max |tau|) and each gripper's grasp state over the episode; None
    # when the backend does not track them.
    actuation: ActuationReport | None = None

    @property
    def aborted(self) -> bool:
        return self.outcome == EPISODE_ABORTED

    def abort(self, reason: str, error: Exception | None = None) -> None:
        """Mark the episode aborted; the first cause wins (what followed from it is not the reason)."""
        if self.aborted:
            return
        self.outcome, self.reason, self.error = EPISODE_ABORTED, reason, error
        log.error("episode %d aborted: %s", self.index, reason)

    def summary(self) -> str:
        delays = np.asarray(self.worker.delays) * 1e3 if self.worker.delays else np.zeros(1)
        return (f"episode {self.index}: {self.ticks} ticks, {self.chunks} chunks (delay p50 "
                f"{np.percentile(delays, 50):.0f} ms, p99 {np.percentile(delays, 99):.0f} ms), "
                f"{self.stale_dropped} stale actions dropped, {self.events.holds} holds / {self.events.resumes} "
                f"resumes, {self.worker.failures} failed queries, max tracking error {self.max_tracking_error:.3f}, "
                f"success {self.success}; loop {self.timing}"
                + (f"; {self.motion.describe()}" if self.motion is not None else "")
                + (f"; {self.actuation.describe()}" if self.actuation is not None and self.actuation.describe()
                   else "")
                + (f"; ABORTED: {self.reason}" if self.aborted else ""))


def run_episode(
    rig: Rig,
    policy: InferencePolicy,
    options: EpisodeOptions,
    index: int,
    *,
    estop: EStop | None = None,
    on_chunk: Callable[[ChunkRecord], None] | None = None,
    on_tick: Callable[[TickRecord], None] | None = None,
    raise_on_abort: bool = True,
) -> EpisodeReport:
    """Run one episode (see the module docstring). An aborted episode re-raises its cause unless
    `raise_on_abort` is False; then the report says why (`outcome`, `reason`, `error`)."""
    robot = rig.robot
    config = robot.config
    report = EpisodeReport(index=index)
    t_wall = time.monotonic()
    limits = ServoLimits.from_config(config)
    servo = JerkLimitedServo(limits, 1.0 / config.servo_hz)
    errors: list[float] = []
    meter = MotionMeter(config.joint_names, limits.velocity, limits.acceleration, limits.jerk)
    deadline_s = config.safety.server_deadline_s
    # Armed while the episode executes: the first tick that has waited past the deadline plus the hold timeout.
    lost: list[PolicyLostError] = []
    watch_loss = False

    def tick_hook(record: TickRecord) -> None:
        errors.append(float(np.max(np.abs(record.command.position - record.state.positions))))
        meter.add(record.time, record.command.position)
        if (watch_loss and not lost and options.hold_timeout_s is not None
                and record.exhausted_s > deadline_s + options.hold_timeout_s):
            lost.append(PolicyLostError(
                f"no usable chunk from the policy for {record.exhausted_s:.1f} s (held {options.hold_timeout_s:g} s "
                f"past the {deadline_s:g} s deadline); last error: {worker.stats.last_error or 'none'}"))
        if on_tick is not None:
            on_tick(record)

    loop: ServoLoop | RemoteServoLoop
    if rig.remote_loop is not None:  # the servo loop runs in a process of its own
        loop = rig.remote_loop(deadline_s=config.safety.server_deadline_s, dry_run=options.dry_run, estop=estop,
                               on_tick=tick_hook)
    else:
        loop = ServoLoop(robot, servo, rig.clock, deadline_s=config.safety.server_deadline_s,
                         dry_run=options.dry_run, estop=estop, on_tick=tick_hook)
    state = loop.start()
    robot.actuation_report(reset=True)  # the episode's figures start here
    scheduler = make_scheduler(options.chunking, config.dof)
    worker = PolicyWorker(policy, scheduler, rig.clock, lambda: loop.latest_state, rig.capture_images,
                          prompt=options.prompt, episode_index=index, episode_start=state.timestamp,
                          fps=options.chunking.fps, on_chunk=on_chunk)

    def must_stop() -> bool:
        return worker.abort_error is not None or bool(lost)

    try:
        # First chunk: the arm holds still while we wait, then the guard decides.
        first = _first_chunk(worker, loop, options.first_query_timeout_s)
        fresh = first.actions[0]
        far = check_first_action(fresh, loop.latest_state.positions if loop.latest_state else state.positions,
                                 config.joint_names, config.safety.first_action_max_delta,
                                 skip=config.gripper_indices(), override=options.allow_far_start)
        report.far_joints = [d.name for d in far]
        vmax = float(np.max(limits.velocity))
        if not loop.drive_to(fresh, velocity_scale=min(1.0, config.safety.ramp_velocity / vmax)):
            raise RampNotFinishedError("the ramp to the first action did not finish (e-stop or timeout); the arm "
                                       "holds")
        # The arm waited: the first chunk starts now, and policy steps count from here.
        now = rig.clock.now()
        report.execution_start = now
        worker.episode_start = now
        scheduler.reset()
        scheduler.on_chunk(Chunk(first.actions, now, now, now), now)

        worker.start()
        watch_loss = True
        loop.run_for(scheduler, options.duration_s, stop=must_stop)
        watch_loss = False
        stop_error = worker.abort_error or (lost[0] if lost else None)
        if stop_error is not None:
            raise stop_error
    except ABORT_ERRORS as exc:
        report.abort(str(exc), exc)
    finally:
        watch_loss = False
        worker.stop()
        if not isinstance(report.error, RobotFault):  # a faulted robot is held by its backend and cannot be read
            try:
                _bring_to_rest(loop, config.servo_hz)
                # A deliberate hold between episodes: a backend with a servo deadline (the YAM sender) then keeps
                # the pose for as long as the next episode takes to start, instead of calling it a stalled loop.
                robot.hold()
            except RobotFault as fault:
                report.abort(str(fault), fault)
    if loop.estop.active:
        report.abort(f"e-stop ({loop.estop.reason})")
    report.ticks = len(loop.timing.periods) + 1
    report.chunks = scheduler.stats.chunks
    report.stale_dropped = scheduler.stats.stale_dropped
    report.timing = loop.timing.summary(1.0 / config.servo_hz)
    report.events = loop.events
    report.worker = worker.stats
    report.success = rig.success(options.prompt)
    report.max_tracking_error = max(errors) if errors else 0.0
    report.motion = meter.summary()
    report.actuation = robot.actuation_report()
    report.wall_s = time.monotonic() - t_wall
    if raise_on_abort and report.error is not None:
        raise report.error
    return report


def _bring_to_rest(loop: ServoLoop | RemoteServoLoop, servo_hz: float) -> None:
    """The loop's own hold: a jerk-limited stop where the arm is, ticked until still (at most 2 s)."""
    loop.servo.stop()
    for _ in range(int(2 * servo_hz)):
        if loop.servo.is_still():
            break
        loop.tick(lambda t: None, lambda t: float("inf"))


def _first_chunk(worker: PolicyWorker, loop: ServoLoop | RemoteServoLoop, timeout_s: float) -> Chunk:
    """Query until a chunk arrives, ticking the loop (holding) between attempts. The query blocks the loop, so the
    robot is told to hold first: a backend with a servo deadline keeps the pose through a slow first answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        loop.robot.hold()
        chunk = worker.query_once()
        if chunk is not None:
            return chunk
        if worker.abort_error is not None:
            raise worker.abort_error
        for _ in range(10):
            loop.tick(lambda t: None, lambda t: 0.0)
    raise PolicyLostError(f"no chunk from the policy within {timeout_s:.0f} s ({worker.stats.last_error}); "
                          "the arm did not move")
