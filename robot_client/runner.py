"""One episode on a rig: first-chunk guard and ramp, then the servo loop with the policy worker, then a report.

Sequence per episode:
1. read the robot, start the servo where the arm is;
2. ask for the first chunk (the arm holds); refuse if its first action is far from the state (names the joints)
   unless overridden, then ramp to it slowly;
3. run the servo loop for the episode length with the policy worker refilling the scheduler; holds and resumes
   happen inside the loop on server loss;
4. stop the worker, bring the arm to rest, and report timing, chunking and safety events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from robot_client.chunking import Chunk, ChunkingConfig, make_scheduler
from robot_client.control_loop import LoopEvents, ServoLoop, TickRecord
from robot_client.motion_stats import MotionMeter, MotionSummary
from robot_client.policy_worker import ChunkRecord, InferencePolicy, PolicyWorker, WorkerStats
from robot_client.rig import Rig
from robot_client.safety import EStop, check_first_action
from robot_client.servo import JerkLimitedServo, ServoLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodeOptions:
    chunking: ChunkingConfig
    duration_s: float = 20.0
    prompt: str = ""
    dry_run: bool = False
    allow_far_start: bool = False
    first_query_timeout_s: float = 60.0


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

    def summary(self) -> str:
        delays = np.asarray(self.worker.delays) * 1e3 if self.worker.delays else np.zeros(1)
        return (f"episode {self.index}: {self.ticks} ticks, {self.chunks} chunks (delay p50 "
                f"{np.percentile(delays, 50):.0f} ms, p99 {np.percentile(delays, 99):.0f} ms), "
                f"{self.stale_dropped} stale actions dropped, {self.events.holds} holds / {self.events.resumes} "
                f"resumes, {self.worker.failures} failed queries, max tracking error {self.max_tracking_error:.3f}, "
                f"success {self.success}; loop {self.timing}"
                + (f"; {self.motion.describe()}" if self.motion is not None else ""))


def run_episode(
    rig: Rig,
    policy: InferencePolicy,
    options: EpisodeOptions,
    index: int,
    *,
    estop: EStop | None = None,
    on_chunk: Callable[[ChunkRecord], None] | None = None,
    on_tick: Callable[[TickRecord], None] | None = None,
) -> EpisodeReport:
    robot = rig.robot
    config = robot.config
    report = EpisodeReport(index=index)
    t_wall = time.monotonic()
    limits = ServoLimits.from_config(config)
    servo = JerkLimitedServo(limits, 1.0 / config.servo_hz)
    errors: list[float] = []
    meter = MotionMeter(config.joint_names, limits.velocity, limits.acceleration, limits.jerk)

    def tick_hook(record: TickRecord) -> None:
        errors.append(float(np.max(np.abs(record.command.position - record.state.positions))))
        meter.add(record.time, record.command.position)
        if on_tick is not None:
            on_tick(record)

    loop = ServoLoop(robot, servo, rig.clock, deadline_s=config.safety.server_deadline_s,
                     dry_run=options.dry_run, estop=estop, on_tick=tick_hook)
    state = loop.start()
    scheduler = make_scheduler(options.chunking, config.dof)
    worker = PolicyWorker(policy, scheduler, rig.clock, lambda: loop.latest_state, rig.capture_images,
                          prompt=options.prompt, episode_index=index, episode_start=state.timestamp,
                          fps=options.chunking.fps, on_chunk=on_chunk)

    # First chunk: the arm holds still while we wait, then the guard decides.
    first = _first_chunk(worker, loop, options.first_query_timeout_s)
    fresh = first.actions[0]
    far = check_first_action(fresh, loop.latest_state.positions if loop.latest_state else state.positions,
                             config.joint_names, config.safety.first_action_max_delta,
                             skip=config.gripper_indices(), override=options.allow_far_start)
    report.far_joints = [d.name for d in far]
    vmax = float(np.max(limits.velocity))
    if not loop.drive_to(fresh, velocity_scale=min(1.0, config.safety.ramp_velocity / vmax)):
        raise RuntimeError("the ramp to the first action did not finish (e-stop or timeout); the arm holds")
    # The arm waited: the first chunk starts now, and policy steps count from here.
    now = rig.clock.now()
    report.execution_start = now
    worker.episode_start = now
    scheduler.reset()
    scheduler.on_chunk(Chunk(first.actions, now, now, now), now)

    worker.start()
    try:
        loop.run_for(scheduler, options.duration_s)
    finally:
        worker.stop()
        loop.servo.stop()
        for _ in range(int(2 * config.servo_hz)):  # bring the arm to rest (at most 2 s)
            if loop.servo.is_still():
                break
            loop.tick(lambda t: None, lambda t: float("inf"))
    report.ticks = len(loop.timing.periods) + 1
    report.chunks = scheduler.stats.chunks
    report.stale_dropped = scheduler.stats.stale_dropped
    report.timing = loop.timing.summary(1.0 / config.servo_hz)
    report.events = loop.events
    report.worker = worker.stats
    report.success = rig.success(options.prompt)
    report.max_tracking_error = max(errors) if errors else 0.0
    report.motion = meter.summary()
    report.wall_s = time.monotonic() - t_wall
    return report


def _first_chunk(worker: PolicyWorker, loop: ServoLoop, timeout_s: float) -> Chunk:
    """Query until a chunk arrives, ticking the loop (holding) between attempts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chunk = worker.query_once()
        if chunk is not None:
            return chunk
        for _ in range(10):
            loop.tick(lambda t: None, lambda t: 0.0)
    raise RuntimeError(f"no chunk from the policy within {timeout_s:.0f} s ({worker.stats.last_error}); "
                       "the arm did not move")
