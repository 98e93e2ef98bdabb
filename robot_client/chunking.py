"""Action chunk scheduling: which action target the servo should track at time t, and when to ask for more.

A chunk answers an observation taken at `obs_time`: its action i is meant for `obs_time + i / fps`. Time is
passed in explicitly (seconds on one monotonic clock), so the same code runs against the wall clock on the robot
and against simulated time in tests. Between policy steps targets are interpolated linearly; the jerk-limited
servo does the smoothing. Actions whose time has passed when the chunk arrives (those the robot could only
execute late) are dropped and counted, never replayed.

Modes:
- `sync`: query, wait (the arm holds its last target), execute `execute_steps` actions re-timed from arrival,
  query again (openpi's ActionChunkBroker behaviour, without its stall being invisible: the wait is counted).
- `async`: query in the background when fewer than `refill_threshold` actions remain; align the new chunk by its
  observation time; blend the first `blend_steps` fresh actions linearly from the old chunk into the new one.
- `ensemble`: ACT temporal ensembling: every `ensemble_every` steps a new chunk; the target at t is the
  weighted mean of all chunks covering t with w_i = exp(-m i), i = 0 for the oldest.
- `rtc`: real-time chunking: like async, but the request carries the not-yet-executed remainder of the current
  chunk and the expected inference delay in steps, the server continues it (guided denoising), and the new
  chunk replaces the old one without blending.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


class ChunkingError(ValueError):
    """A chunk does not fit the scheduler (shape, non-finite values) or the configuration is invalid."""


@dataclass(frozen=True)
class ChunkingConfig:
    mode: str = "async"
    fps: float = 30.0
    # sync: actions executed per chunk before querying again (0 = the whole chunk).
    execute_steps: int = 0
    # async/rtc: query when at most this many future actions remain.
    refill_threshold: int = 20
    # async: fresh actions blended from the old chunk into the new one.
    blend_steps: int = 4
    # ensemble: query every this many policy steps; weight decay m.
    ensemble_every: int = 1
    ensemble_decay: float = 0.01
    # rtc: inference delay estimate = ceil(max of the last `delay_window` delays * fps) (+ margin steps).
    delay_window: int = 10
    delay_margin_steps: int = 0

    def __post_init__(self) -> None:
        if self.mode not in SCHEDULERS:  # the live table, so a strategy defined elsewhere is accepted too
            raise ChunkingError(f"chunking mode must be one of {tuple(SCHEDULERS)}, got '{self.mode}'")
        if not self.fps > 0:
            raise ChunkingError(f"fps must be > 0, got {self.fps}")
        for name in ("execute_steps", "refill_threshold", "blend_steps", "delay_margin_steps"):
            if getattr(self, name) < 0:
                raise ChunkingError(f"{name} must be >= 0")
        if self.ensemble_every < 1 or self.delay_window < 1:
            raise ChunkingError("ensemble_every and delay_window must be >= 1")

    @property
    def period(self) -> float:
        return 1.0 / self.fps


@dataclass(frozen=True)
class Chunk:
    actions: F64  # [H, D] robot units
    obs_time: float
    sent_time: float
    received_time: float

    @property
    def delay(self) -> float:
        return self.received_time - self.obs_time


@dataclass(frozen=True)
class QueryPlan:
    """What to send with the next query (filled by the scheduler at query time)."""

    obs_time: float
    rtc: dict[str, Any] | None = None


@dataclass
class SchedulerStats:
    chunks: int = 0
    stale_dropped: int = 0
    blended: int = 0
    delays: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    waits: int = 0


class Timeline:
    """Actions at times t_i (ascending); value at t by linear interpolation, clamped to the last action."""

    def __init__(self, times: F64, actions: F64) -> None:
        if len(times) != len(actions) or len(times) == 0:
            raise ChunkingError(f"timeline needs matching non-empty times/actions, got {len(times)}/{len(actions)}")
        self.times = times
        self.actions = actions
        self._velocities: F64 | None = None  # per action, computed on first use

    def velocity_at(self, t: float) -> F64:
        """Velocity of the timeline at t: central differences at the actions, interpolated linearly (so it is
        continuous between actions); 0 outside the timeline."""
        times, actions = self.times, self.actions
        if len(times) < 2 or t < times[0] or t > times[-1]:
            return np.zeros(actions.shape[1], dtype=np.float64)
        if self._velocities is None:
            dt = np.diff(times)
            forward = np.diff(actions, axis=0) / dt[:, None]
            self._velocities = np.empty_like(actions, dtype=np.float64)
            self._velocities[0], self._velocities[-1] = forward[0], forward[-1]
            self._velocities[1:-1] = (forward[:-1] + forward[1:]) / 2
        velocities = self._velocities
        k = min(int(np.searchsorted(times, t, side="right")) - 1, len(times) - 2)
        w = (t - times[k]) / (times[k + 1] - times[k])
        return np.asarray((1 - w) * velocities[k] + w * velocities[k + 1], dtype=np.float64)

    def covers(self, t: float) -> bool:
        return bool(self.times[0] <= t <= self.times[-1])

    def at(self, t: float) -> F64:
        times = self.times
        if t <= times[0]:
            return np.array(self.actions[0], dtype=np.float64)
        if t >= times[-1]:
            return np.array(self.actions[-1], dtype=np.float64)
        k = int(np.searchsorted(times, t, side="right")) - 1
        w = (t - times[k]) / (times[k + 1] - times[k])
        return np.asarray((1 - w) * self.actions[k] + w * self.actions[k + 1], dtype=np.float64)

    def remaining(self, t: float) -> int:
        """Actions scheduled strictly after t."""
        return int(len(self.times) - np.searchsorted(self.times, t, side="right"))

    def after(self, t: float) -> Timeline | None:
        keep = self.times >= t
        if not keep.any():
            return None
        return Timeline(self.times[keep], self.actions[keep])


SCHEDULERS: dict[str, type[ChunkScheduler]] = {}  # mode name -> strategy, filled by the class statements below


class ChunkScheduler(ABC):
    """Thread-safe: the servo loop calls `target_at`, the policy worker calls `plan_query`/`on_chunk`.

    A concrete scheduler names its mode in its class statement (`class X(ChunkScheduler, mode="x")`), which
    registers it in SCHEDULERS: `--chunking` choices, config validation and `make_scheduler` all read that one
    table, so a new strategy is one class."""

    mode: str

    def __init_subclass__(cls, mode: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if mode is None:
            return  # an intermediate base, not a strategy of its own
        if mode in SCHEDULERS:
            raise ChunkingError(f"chunking mode {mode!r} is registered twice: {SCHEDULERS[mode].__name__} and "
                                f"{cls.__name__}")
        cls.mode = mode
        SCHEDULERS[mode] = cls

    def __init__(self, config: ChunkingConfig, dof: int) -> None:
        self.config = config
        self.dof = dof
        self.stats = SchedulerStats()
        self._lock = threading.Lock()
        self._pending = False

    def _check(self, chunk: Chunk) -> None:
        a = chunk.actions
        if a.ndim != 2 or a.shape[1] != self.dof or a.shape[0] == 0:
            raise ChunkingError(f"chunk must be [H, {self.dof}], got {list(a.shape)}")
        if not np.all(np.isfinite(a)):
            raise ChunkingError("chunk has non-finite actions")
        if not chunk.obs_time <= chunk.sent_time <= chunk.received_time:
            raise ChunkingError("chunk times must satisfy obs_time <= sent_time <= received_time")

    def _stamped(self, chunk: Chunk, start: float) -> Timeline:
        times = start + np.arange(len(chunk.actions), dtype=np.float64) * self.config.period
        return Timeline(times, np.asarray(chunk.actions, dtype=np.float64))

    def _drop_stale(self, timeline: Timeline, now: float) -> Timeline | None:
        """Drop actions whose time is before `now` minus half a step (they could only run late)."""
        cutoff = now - 0.5 * self.config.period
        fresh = timeline.after(cutoff)
        dropped = len(timeline.times) - (0 if fresh is None else len(fresh.times))
        self.stats.stale_dropped += dropped
        return fresh

    # -- worker side ----------------------------------------------------------------------------------------
    def needs_query(self, now: float) -> bool:
        with self._lock:
            return not self._pending and self._needs_query(now)

    def plan_query(self, obs_time: float) -> QueryPlan:
        with self._lock:
            self._pending = True
            return self._plan(obs_time)

    def on_chunk(self, chunk: Chunk, now: float) -> None:
        self._check(chunk)
        with self._lock:
            self._pending = False
            self.stats.chunks += 1
            self.stats.delays.append(chunk.delay)
            self._accept(chunk, now)

    def on_query_failed(self) -> None:
        with self._lock:
            self._pending = False

    # -- servo side -----------------------------------------------------------------------------------------
    def target_at(self, now: float) -> F64 | None:
        """The action target at `now`, or None when there is nothing (not yet, or all executed)."""
        with self._lock:
            return self._target(now)

    def target_velocity_at(self, now: float) -> F64 | None:
        """Velocity of the target at `now` (for the servo's tracking mode), or None when there is no target."""
        with self._lock:
            return self._velocity(now)

    def exhausted_since(self, now: float) -> float:
        """Seconds since the last scheduled action passed (0 while actions remain; inf before any chunk)."""
        with self._lock:
            end = self._end_time()
            return math.inf if end is None else max(0.0, now - end)

    def reset(self) -> None:
        with self._lock:
            self._pending = False
            self._reset()

    # -- mode specifics -------------------------------------------------------------------------------------
    @abstractmethod
    def _needs_query(self, now: float) -> bool: ...

    def _plan(self, obs_time: float) -> QueryPlan:
        return QueryPlan(obs_time=obs_time)

    @abstractmethod
    def _accept(self, chunk: Chunk, now: float) -> None: ...

    @abstractmethod
    def _target(self, now: float) -> F64 | None: ...

    @abstractmethod
    def _velocity(self, now: float) -> F64 | None: ...

    @abstractmethod
    def _end_time(self) -> float | None: ...

    @abstractmethod
    def _reset(self) -> None: ...


class SyncScheduler(ChunkScheduler, mode="sync"):
    def __init__(self, config: ChunkingConfig, dof: int) -> None:
        super().__init__(config, dof)
        self._timeline: Timeline | None = None

    def _needs_query(self, now: float) -> bool:
        return self._timeline is None or self._timeline.remaining(now) == 0

    def _accept(self, chunk: Chunk, now: float) -> None:
        n = self.config.execute_steps or len(chunk.actions)
        # The arm waited during inference, so the chunk starts now (nothing is stale in sync mode).
        trimmed = Chunk(chunk.actions[:n], chunk.obs_time, chunk.sent_time, chunk.received_time)
        self._timeline = self._stamped(trimmed, now)
        self.stats.waits += 1

    def _target(self, now: float) -> F64 | None:
        return None if self._timeline is None else self._timeline.at(now)

    def _velocity(self, now: float) -> F64 | None:
        return None if self._timeline is None else self._timeline.velocity_at(now)

    def _end_time(self) -> float | None:
        return None if self._timeline is None else float(self._timeline.times[-1])

    def _reset(self) -> None:
        self._timeline = None


class AsyncScheduler(ChunkScheduler, mode="async"):
    def __init__(self, config: ChunkingConfig, dof: int) -> None:
        super().__init__(config, dof)
        self._timeline: Timeline | None = None

    def _needs_query(self, now: float) -> bool:
        return self._timeline is None or self._timeline.remaining(now) <= self.config.refill_threshold

    def _accept(self, chunk: Chunk, now: float) -> None:
        fresh = self._drop_stale(self._stamped(chunk, chunk.obs_time), now)
        if fresh is None:
            return  # everything arrived too late to use; the old timeline continues
        old = self._timeline
        if old is not None and self.config.blend_steps > 0:
            actions = fresh.actions.copy()
            b = min(self.config.blend_steps, len(actions))
            for j in range(b):
                t = float(fresh.times[j])
                if old.covers(t):
                    w = (j + 1) / (b + 1)
                    actions[j] = w * actions[j] + (1 - w) * old.at(t)
                    self.stats.blended += 1
            fresh = Timeline(fresh.times, actions)
        self._timeline = fresh

    def _target(self, now: float) -> F64 | None:
        return None if self._timeline is None else self._timeline.at(now)

    def _velocity(self, now: float) -> F64 | None:
        return None if self._timeline is None else self._timeline.velocity_at(now)

    def _end_time(self) -> float | None:
        return None if self._timeline is None else float(self._timeline.times[-1])

    def _reset(self) -> None:
        self._timeline = None


class EnsembleScheduler(ChunkScheduler, mode="ensemble"):
    def __init__(self, config: ChunkingConfig, dof: int) -> None:
        super().__init__(config, dof)
        self._chunks: list[Timeline] = []
        self._last_query_obs: float | None = None

    def _needs_query(self, now: float) -> bool:
        if self._last_query_obs is None:
            return True
        return now - self._last_query_obs >= self.config.ensemble_every * self.config.period - 1e-9

    def _plan(self, obs_time: float) -> QueryPlan:
        self._last_query_obs = obs_time
        return QueryPlan(obs_time=obs_time)

    def _accept(self, chunk: Chunk, now: float) -> None:
        self._chunks = [c for c in self._chunks if c.times[-1] >= now]  # forget chunks that have fully passed
        fresh = self._drop_stale(self._stamped(chunk, chunk.obs_time), now)
        if fresh is not None:
            self._chunks.append(fresh)

    def _target(self, now: float) -> F64 | None:
        # A pure function of `now` (nothing pruned here): a servo process's plan samples future instants too.
        alive = [c for c in self._chunks if c.times[-1] >= now]
        covering = [c for c in alive if c.covers(now)]
        if not covering:
            return None if not alive else alive[-1].at(now)
        weights = np.exp(-self.config.ensemble_decay * np.arange(len(covering)))  # oldest first, weighs most
        values = np.stack([c.at(now) for c in covering])
        return np.asarray((weights[:, None] * values).sum(0) / weights.sum(), dtype=np.float64)

    def _velocity(self, now: float) -> F64 | None:
        alive = [c for c in self._chunks if c.times[-1] >= now]
        covering = [c for c in alive if c.covers(now)]
        if not covering:
            return None if not alive else np.zeros(self.dof)
        weights = np.exp(-self.config.ensemble_decay * np.arange(len(covering)))
        values = np.stack([c.velocity_at(now) for c in covering])
        return np.asarray((weights[:, None] * values).sum(0) / weights.sum(), dtype=np.float64)

    def _end_time(self) -> float | None:
        return None if not self._chunks else max(float(c.times[-1]) for c in self._chunks)

    def _reset(self) -> None:
        self._chunks = []
        self._last_query_obs = None


class RtcScheduler(AsyncScheduler, mode="rtc"):
    """Async timing; the request carries the remainder of the current chunk and the delay in steps."""

    def estimated_delay_steps(self) -> int:
        recent = list(self.stats.delays)[-self.config.delay_window:]
        if not recent:
            return self.config.delay_margin_steps
        return int(math.ceil(max(recent) * self.config.fps)) + self.config.delay_margin_steps

    def _plan(self, obs_time: float) -> QueryPlan:
        timeline = self._timeline
        if timeline is None:
            return QueryPlan(obs_time=obs_time)
        remainder = timeline.after(obs_time - 0.5 * self.config.period)
        if remainder is None or len(remainder.actions) < 2:
            return QueryPlan(obs_time=obs_time)
        horizon_rows = len(remainder.actions)
        delay = min(self.estimated_delay_steps(), horizon_rows - 1)
        return QueryPlan(obs_time=obs_time, rtc={
            "previous_chunk_remainder": remainder.actions.astype(np.float32),
            "inference_delay_steps": delay,
        })

    def _accept(self, chunk: Chunk, now: float) -> None:
        fresh = self._drop_stale(self._stamped(chunk, chunk.obs_time), now)
        if fresh is not None:
            self._timeline = fresh  # guided denoising already continues the old chunk: no blending


MODES: tuple[str, ...] = tuple(SCHEDULERS)  # in definition order: sync, async, ensemble, rtc


def make_scheduler(config: ChunkingConfig, dof: int) -> ChunkScheduler:
    """The scheduler registered for `config.mode` (ChunkingConfig has already refused unknown modes)."""
    return SCHEDULERS[config.mode](config, dof)
