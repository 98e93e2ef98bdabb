"""The policy worker: a thread that asks the policy for chunks when the scheduler wants one.

It builds the observation from the servo loop's latest joint state and the cameras, sends it (with RTC fields
when the scheduler asks for them), and hands the chunk to the scheduler with its observation, send and arrival
times, so the scheduler can align it and drop what arrived too late. A failing or unreachable server never
blocks the servo loop: the failure is counted, the worker backs off and retries, and the loop holds once its
deadline passes. One failure is not retried: a response from another model (`ModelChangedError`). The worker
keeps it as `abort_error`, never hands that chunk on and stops asking; the episode runner then holds the arm and
ends the episode as aborted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from robot_client.chunking import Chunk, ChunkingError, ChunkScheduler
from robot_client.control_loop import Clock
from robot_client.policy_client import ModelChangedError
from robot_client.robot import JointState

log = logging.getLogger(__name__)

ImageCapture = Callable[[], Mapping[str, tuple[npt.NDArray[np.uint8], float]]]


class InferencePolicy(Protocol):
    """openpi's BasePolicy shape (robot_client.policy_client.GrpcPolicy, openpi's WebsocketClientPolicy)."""

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ChunkRecord:
    """One received chunk with its request, for recording and live comparison."""

    obs_time: float
    sent_time: float
    received_time: float
    state: npt.NDArray[np.float64]
    actions: npt.NDArray[np.float64]
    step_index: int
    response: Mapping[str, Any]
    images: Mapping[str, npt.NDArray[np.uint8]]


@dataclass
class WorkerStats:
    queries: int = 0
    failures: int = 0
    last_error: str = ""
    delays: list[float] = field(default_factory=list)
    # When (worker clock) the worker stopped asking because the episode must end (see PolicyWorker.abort_error).
    aborted_at: float | None = None


class PolicyWorker:
    def __init__(
        self,
        policy: InferencePolicy,
        scheduler: ChunkScheduler,
        clock: Clock,
        latest_state: Callable[[], JointState | None],
        capture_images: ImageCapture,
        *,
        prompt: str,
        episode_index: int,
        episode_start: float,
        fps: float,
        backoff_s: float = 0.1,
        on_chunk: Callable[[ChunkRecord], None] | None = None,
    ) -> None:
        self.policy = policy
        self.scheduler = scheduler
        self.clock = clock
        self.latest_state = latest_state
        self.capture_images = capture_images
        self.prompt = prompt
        self.episode_index = episode_index
        self.episode_start = episode_start
        self.fps = fps
        self.backoff_s = backoff_s
        self.on_chunk = on_chunk
        self.stats = WorkerStats()
        # Why the episode must end (another model answered); None while it may go on.
        self.abort_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def observation(self, state: JointState, obs_time: float) -> dict[str, Any]:
        frames = self.capture_images()
        return {
            "state": state.positions.astype(np.float32),
            "images": {name: rgb for name, (rgb, _) in frames.items()},
            "image_timestamps": {name: float(ts) for name, (_, ts) in frames.items()},
            "prompt": self.prompt,
            "timestamp": float(obs_time),
            "episode_index": int(self.episode_index),
            "step_index": max(0, int(round((obs_time - self.episode_start) * self.fps))),
        }

    def query_once(self) -> Chunk | None:
        """One synchronous query; returns the chunk (also handed to the scheduler) or None on failure."""
        state = self.latest_state()
        if state is None:
            return None
        obs_time = state.timestamp
        plan = self.scheduler.plan_query(obs_time)
        try:
            obs = self.observation(state, obs_time)
            if plan.rtc is not None:
                obs["rtc"] = plan.rtc
            sent = self.clock.now()
            self.stats.queries += 1
            response = self.policy.infer(obs)
            received = self.clock.now()
            actions = np.asarray(response["actions"], dtype=np.float64)
            chunk = Chunk(actions=actions, obs_time=obs_time, sent_time=max(sent, obs_time),
                          received_time=max(received, sent, obs_time))
            self.scheduler.on_chunk(chunk, received)
        except ChunkingError as exc:
            self.scheduler.on_query_failed()
            self._fail(f"unusable chunk: {exc}")
            return None
        except ModelChangedError as exc:  # never retried: every later chunk would come from that model too
            self.stats.aborted_at = self.clock.now()
            self.abort_error = exc
            self.scheduler.on_query_failed()
            self._fail(f"{type(exc).__name__}: {exc}")
            return None
        except Exception as exc:  # server down, timeout, refused request: the loop holds, we retry
            self.scheduler.on_query_failed()
            self._fail(f"{type(exc).__name__}: {exc}")
            return None
        self.stats.delays.append(chunk.delay)
        if self.on_chunk is not None:
            self.on_chunk(ChunkRecord(obs_time, chunk.sent_time, chunk.received_time, state.positions.copy(),
                                      actions, int(obs["step_index"]), response, obs["images"]))
        return chunk

    def _fail(self, message: str) -> None:
        self.stats.failures += 1
        if message != self.stats.last_error or self.stats.failures % 20 == 1:
            log.warning("policy query failed (%d so far): %s", self.stats.failures, message)
        self.stats.last_error = message

    def _run(self) -> None:
        while not self._stop.is_set() and self.abort_error is None:
            if self.scheduler.needs_query(self.clock.now()):
                if self.query_once() is None:
                    self._stop.wait(self.backoff_s)
            else:
                self._stop.wait(0.002)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="policy-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("policy worker did not stop within %.1f s (a request is still in flight)", timeout)
