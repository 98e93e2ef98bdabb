"""Admission limits: how many streams a client and the whole server may hold open, and how many unary
inferences may wait for the model.

Why: an open stream costs the asyncio server almost nothing while idle, so the real limits are the model's
throughput and the memory of queued requests. Without a bound, one runaway client (or a lab restarting all its
robots at once) could queue work the model will never catch up with; with one, the extra stream is refused at
once with RESOURCE_EXHAUSTED and a message naming the limit, which the client can act on, instead of waiting
until its deadline. Health checks and metadata never pass through here: they are always answered.

The counters are touched only from the server's event loop thread, so they need no lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class LimitExceeded(RuntimeError):
    """A stream or request over one of the limits; mapped to RESOURCE_EXHAUSTED with this message."""


@dataclass(frozen=True)
class AdmissionLimits:
    """Defaults: 256 streams is a lab's worth of robots (each holds one stream) at a few KiB each while idle;
    32 per client lets one host run several robots or evaluation workers without letting it take every slot;
    64 queued unary inferences is what the thread-pool server used to allow in flight."""

    max_streams: int = 256
    max_streams_per_client: int = 32
    max_queued_infers: int = 64

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_streams_per_client", "max_queued_infers"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


class Admission:
    """Counts open streams (per client and in total) and unary calls waiting for or running on the model."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._streams: Counter[str] = Counter()
        self._open_streams = 0
        self._unary = 0

    @property
    def open_streams(self) -> int:
        return self._open_streams

    @property
    def queued_infers(self) -> int:
        return self._unary

    def streams_of(self, client: str) -> int:
        return self._streams[client]

    @contextmanager
    def stream(self, client: str) -> Iterator[None]:
        """Hold one stream slot for `client` while the block runs. Raises LimitExceeded when none is free."""
        limits = self.limits
        held = self._streams[client]
        if held >= limits.max_streams_per_client:
            raise LimitExceeded(
                f"too many open streams for this client: {held} of {limits.max_streams_per_client}; "
                "close one or raise --max-streams-per-client"
            )
        if self._open_streams >= limits.max_streams:
            raise LimitExceeded(
                f"too many open streams on this server: {self._open_streams} of {limits.max_streams}; "
                "close one, use another replica, or raise --max-streams"
            )
        self._streams[client] += 1
        self._open_streams += 1
        try:
            yield
        finally:
            self._open_streams -= 1
            self._streams[client] -= 1
            if self._streams[client] <= 0:
                del self._streams[client]

    @contextmanager
    def unary(self) -> Iterator[None]:
        """Hold one unary slot (Infer, Reset) until the model answered. Raises LimitExceeded when all are taken."""
        if self._unary >= self.limits.max_queued_infers:
            raise LimitExceeded(
                f"too many unary requests queued for the model: {self._unary} of {self.limits.max_queued_infers}; "
                "retry later or send observations over one InferStream"
            )
        self._unary += 1
        try:
            yield
        finally:
            self._unary -= 1
