"""Dynamic batching: concurrent requests share one model call.

Why: a model call on a batch of B costs much less than B calls (the weights are read once, the GPU is busy
instead of waiting on kernel launches), so several robots or evaluation workers served by one server get more
chunks per second. Request threads `submit` (observation, seed) and block; one worker thread takes the first
queued request, gathers more until `max_batch` or until `max_wait_ms` after that first request was queued, runs
`run_batch` and hands each request its own result (an output or its own error).

The wait is what a lone client pays: up to `max_wait_ms` per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from policy_server.policy import BatchItem, PolicyError, PolicyOutput
from policy_server.validate import ObservationInput

log = logging.getLogger(__name__)

RunBatch = Callable[[Sequence[BatchItem]], list[PolicyOutput | Exception]]


class BatchQueueFull(RuntimeError):
    """More requests are waiting than the batch queue holds; mapped to RESOURCE_EXHAUSTED (retry later)."""


class BatcherClosed(RuntimeError):
    """The server is shutting down and will not run this request; mapped to UNAVAILABLE (try another replica)."""


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are gathered into batches.

    Defaults: 8 requests fill the GPU well for a Pi0.5-sized model without making one batch's latency much
    longer than a single request's; 2 ms is a few percent of a chunk's GPU time (~30 ms) yet long enough for
    clients that answer the previous batch at the same moment to arrive together.
    """

    max_batch: int = 8
    max_wait_ms: float = 2.0
    # Requests waiting for the worker beyond this many are refused at once instead of queueing without bound
    # (the gRPC server already caps in-flight RPCs; this also covers the websocket endpoint).
    max_queue: int = 64

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"batching.max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ValueError(f"batching.max_wait_ms must be in [0, 1000], got {self.max_wait_ms}")
        if self.max_queue < self.max_batch:
            raise ValueError(f"batching.max_queue ({self.max_queue}) must be >= max_batch ({self.max_batch})")


@dataclass
class BatchStats:
    """What the batcher did: batch sizes (histogram), failures and refusals."""

    batches: int = 0
    items: int = 0
    sizes: Counter[int] = field(default_factory=Counter)
    failed_batches: int = 0  # run_batch raised: every item of the batch got the error
    refused_full: int = 0
    refused_closed: int = 0

    @property
    def multi_item_batches(self) -> int:
        return sum(n for size, n in self.sizes.items() if size > 1)

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class _Pending:
    """One submitted request and, once set, its result."""

    __slots__ = ("item", "done", "result")

    def __init__(self, item: BatchItem) -> None:
        self.item = item
        self.done = threading.Event()
        self.result: PolicyOutput | Exception | None = None

    def resolve(self, result: PolicyOutput | Exception) -> None:
        self.result = result
        self.done.set()


class Batcher:
    """Queue + one worker thread around `run_batch` (which must return one result per item, in order)."""

    def __init__(self, run_batch: RunBatch, config: BatchingConfig, *, name: str = "batcher") -> None:
        self.config = config
        self._run_batch = run_batch
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._stop = False  # worker: exit once the current batch is done
        self._stats = BatchStats()
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)
        self._worker.start()

    # -- request side ---------------------------------------------------------------------------------------
    def submit(self, obs: ObservationInput, noise_seed: int | None) -> PolicyOutput:
        """Queue one request and block until its batch ran. Raises its own error (WireError, PolicyError...),
        BatchQueueFull or BatcherClosed."""
        pending = _Pending((obs, noise_seed))
        with self._cond:
            if self._closed:
                self._stats.refused_closed += 1
                raise BatcherClosed("server is shutting down; request not run")
            if len(self._queue) >= self.config.max_queue:
                self._stats.refused_full += 1
                raise BatchQueueFull(f"batch queue full ({self.config.max_queue} requests waiting); retry later")
            self._queue.append(pending)
            self._cond.notify_all()
        while not pending.done.wait(1.0):
            if not self._worker.is_alive():  # never hang a request on a dead worker
                pending.resolve(PolicyError("batch worker stopped before running this request"))
        result = pending.result
        if isinstance(result, Exception):
            raise result
        assert result is not None
        return result

    def running(self) -> bool:
        """Whether the worker thread is alive (False once close() has finished)."""
        return self._worker.is_alive()

    def queued(self) -> int:
        """Requests waiting for the worker (not counting the batch it is running)."""
        with self._cond:
            return len(self._queue)

    def stats(self) -> BatchStats:
        with self._cond:
            return BatchStats(self._stats.batches, self._stats.items, Counter(self._stats.sizes),
                              self._stats.failed_batches, self._stats.refused_full, self._stats.refused_closed)

    # -- worker ---------------------------------------------------------------------------------------------
    def _gather(self) -> list[_Pending] | None:
        """Block for the first request, then gather up to max_batch for at most max_wait_ms."""
        cfg = self.config
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            batch = [self._queue.popleft()]
            # The window opens when the worker takes the first request, not when it was queued: clients answered
            # by the previous batch send their next request right away, and waiting for them keeps closed-loop
            # clients in one full batch instead of alternating half batches.
            deadline = time.perf_counter() + cfg.max_wait_ms / 1e3
            while len(batch) < cfg.max_batch:
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._stop:
                    break
                self._cond.wait(remaining)
            return batch

    def _loop(self) -> None:
        while (batch := self._gather()) is not None:
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        try:
            results = self._run_batch([p.item for p in batch])
            if len(results) != len(batch):
                raise PolicyError(f"infer_batch returned {len(results)} results for {len(batch)} requests")
        except Exception as exc:  # the policy failed as a whole: every request of this batch gets the error
            log.error("batch of %d failed: %s", len(batch), exc, exc_info=not isinstance(exc, PolicyError))
            results = [exc] * len(batch)
            failed = True
        else:
            failed = False
        with self._cond:
            self._stats.batches += 1
            self._stats.items += len(batch)
            self._stats.sizes[len(batch)] += 1
            self._stats.failed_batches += failed
        for pending, result in zip(batch, results, strict=True):
            pending.resolve(result)

    # -- shutdown -------------------------------------------------------------------------------------------
    def close(self, drain_s: float = 0.0, join_s: float = 30.0) -> int:
        """Refuse new requests; keep running queued ones for up to `drain_s`, then fail the rest with
        BatcherClosed. Waits (up to `join_s`) for the batch in progress. Returns how many requests were failed."""
        deadline = time.perf_counter() + drain_s
        with self._cond:
            self._closed = True
            while self._queue and (remaining := deadline - time.perf_counter()) > 0:
                self._cond.wait(min(remaining, 0.05))
            abandoned = list(self._queue)
            self._queue.clear()
            self._stop = True
            self._cond.notify_all()
        for pending in abandoned:
            pending.resolve(BatcherClosed("server shut down before this request ran"))
        if abandoned:
            log.warning("shutdown: %d queued requests failed without running", len(abandoned))
        self._worker.join(join_s)
        if self._worker.is_alive():
            log.error("batch worker still busy %.0f s after shutdown", join_s)
        return len(abandoned)
