"""Offline chunking runs in simulated time: scheduler + jerk-limited servo without a robot or a server.

Why: to compare chunking modes and their parameters (blend steps, refill threshold, delays) on the same chunks
before touching a robot, and to check limits sample by sample. A chunk source is any function
`(obs_time, rtc_fields | None) -> actions [H, D]`; delays are simulated by delivering each chunk
`delay(obs_time)` seconds after its observation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from robot_client.chunking import Chunk, ChunkingConfig, ChunkScheduler, make_scheduler
from robot_client.servo import JerkLimitedServo, ServoLimits, ServoStep

F64 = npt.NDArray[np.float64]
ChunkSource = Callable[[float, dict[str, Any] | None], F64]


@dataclass
class OfflineRun:
    commands: list[ServoStep] = field(default_factory=list)
    targets: list[F64] = field(default_factory=list)
    switch_ticks: list[int] = field(default_factory=list)
    scheduler: ChunkScheduler | None = None
    servo_hz: float = 200.0

    @property
    def positions(self) -> F64:
        return np.stack([c.position for c in self.commands])

    @property
    def target_array(self) -> F64:
        return np.stack(self.targets)


def run_offline(
    config: ChunkingConfig,
    limits: ServoLimits,
    source: ChunkSource,
    start: F64,
    *,
    duration_s: float,
    servo_hz: float = 200.0,
    delay: Callable[[float], float] = lambda t: 0.08,
) -> OfflineRun:
    scheduler = make_scheduler(config, len(start))
    servo = JerkLimitedServo(limits, 1.0 / servo_hz)
    servo.reset(start)
    run = OfflineRun(scheduler=scheduler, servo_hz=servo_hz)
    pending: list[tuple[float, Chunk]] = []
    last_target = np.asarray(start, dtype=np.float64)
    for k in range(int(round(duration_s * servo_hz))):
        now = k / servo_hz
        arrived = [p for p in pending if p[0] <= now]
        for item in arrived:
            scheduler.on_chunk(item[1], now)
            pending.remove(item)
            run.switch_ticks.append(k)
        if scheduler.needs_query(now):
            plan = scheduler.plan_query(now)
            actions = np.clip(source(now, plan.rtc), limits.lower, limits.upper)
            arrival = now + delay(now)
            pending.append((arrival, Chunk(actions, now, now, arrival)))
        target = scheduler.target_at(now)
        velocity = None
        if target is not None:
            last_target = target
            velocity = scheduler.target_velocity_at(now)
        run.commands.append(servo.step(last_target, velocity))
        run.targets.append(last_target.copy())
    return run


def finite_differences(positions: F64, dt: float) -> tuple[F64, F64, F64]:
    """Velocity, acceleration and jerk of a sampled trajectory by backward differences."""
    v = np.diff(positions, axis=0) / dt
    a = np.diff(v, axis=0) / dt
    j = np.diff(a, axis=0) / dt
    return v, a, j


def switch_jerk_peaks(positions: F64, ticks: list[int], dt: float, jerk_limit: F64, window: int = 10) -> F64:
    """Per chunk switch, the largest |jerk| / limit over joints within `window` ticks of the switch."""
    _, _, j = finite_differences(positions, dt)
    ratios = np.abs(j) / jerk_limit
    return np.asarray([np.max(ratios[max(0, t - 3): t + window]) for t in ticks if t + 3 < len(j)])


def switch_target_jumps(targets: F64, ticks: list[int]) -> F64:
    """Per chunk switch, the largest jump of the target (any joint) across the switch tick, robot units."""
    return np.asarray([np.max(np.abs(targets[t] - targets[t - 1])) for t in ticks if 0 < t < len(targets)])
