"""Request/reply transactions with Damiao motors on one CAN bus.

Every frame a motor receives is answered on its reply id, so a transaction is "send, then wait for that id".
Requests to several motors are sent back to back and their replies collected together: one cycle of 7 motors
costs about one round trip plus the bus time of 14 frames (~2 ms at 1 Mbit/s) instead of 7 round trips.

Failure handling (why it is shaped like this):
- A reply that misses the per-attempt timeout is asked for again (the request is resent) up to `retries`
  times; a motor silent after that is reported by `NoReplyError`, never papered over. Replies already queued
  when the deadline passes still count (the host, not the motor, was late).
- `can.CanError` on send (e.g. ENOBUFS on a full socketcan queue) is retried after a short pause; persistent
  send errors count as a failed attempt and are named in the final error.
- Frames waiting in the receive queue are discarded before a new transaction so a reply that arrived too late
  for the previous one is not mistaken for a current answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import can

from robot_client.robot import RobotError

# Discarding stale frames is bounded so a babbling bus cannot stall a cycle forever.
_MAX_DRAIN = 4096


class NoReplyError(RobotError):
    """Some motors did not answer after all retries. `missing` holds their request keys."""

    def __init__(self, missing: tuple[int, ...], attempts: int, timeout_s: float, send_error: str | None) -> None:
        self.missing = missing
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.send_error = send_error
        detail = f"; last send error: {send_error}" if send_error else ""
        super().__init__(f"no reply from {missing} after {attempts} attempts of {timeout_s * 1e3:.0f} ms{detail}")


@dataclass(frozen=True)
class Request:
    """One frame to send and the reply that answers it.

    `key` identifies the request in the result (the motor id); `accept` can reject frames on the reply id that
    are not the expected kind (e.g. a feedback frame while waiting for a register reply).
    """

    key: int
    arbitration_id: int
    data: bytes
    reply_id: int
    accept: Callable[[bytes], bool] | None = None


@dataclass(frozen=True)
class Reply:
    data: bytes
    received_at: float  # time.monotonic() when the frame was taken off the bus


@dataclass(frozen=True)
class TransportConfig:
    reply_timeout_s: float = 0.010
    retries: int = 2
    send_attempts: int = 3
    send_retry_pause_s: float = 0.0005

    def __post_init__(self) -> None:
        if not self.reply_timeout_s > 0:
            raise ValueError(f"reply_timeout_s must be > 0, got {self.reply_timeout_s}")
        if self.retries < 0 or self.send_attempts < 1:
            raise ValueError("retries must be >= 0 and send_attempts >= 1")


@dataclass
class Exchange:
    """An in-flight batch: sent, replies not yet collected. Finish it with `Transport.wait`."""

    requests: dict[int, Request]  # by reply id
    retries: int
    replies: dict[int, Reply] = field(default_factory=dict)
    send_error: str | None = None
    attempt: int = 1
    deadline: float = 0.0


class Transport:
    """Transactions on one bus. Not thread-safe: one caller drives a bus at a time (`YamRobot` makes its
    background sender and its setup calls take turns)."""

    def __init__(self, bus: can.BusABC, config: TransportConfig | None = None) -> None:
        self.bus = bus
        self.config = config or TransportConfig()
        # time.monotonic() a frame last came in on each arbitration id, late or drained ones included: a motor
        # whose answers arrive after the deadline is slow (or the host was), not silent.
        self.heard: dict[int, float] = {}

    def exchange(self, requests: Sequence[Request], retries: int | None = None) -> dict[int, Reply]:
        """Send `requests` and return their replies by key; raises NoReplyError naming the silent ones."""
        return self.wait(self.post(requests, retries))

    def post(self, requests: Sequence[Request], retries: int | None = None) -> Exchange:
        """Send a batch without waiting, so batches on several buses can be in flight at once."""
        by_reply: dict[int, Request] = {}
        for req in requests:
            if req.reply_id in by_reply:
                raise ValueError(f"two requests in one batch wait on reply id {req.reply_id:#x}")
            by_reply[req.reply_id] = req
        self._drain()
        ex = Exchange(requests=by_reply, retries=self.config.retries if retries is None else retries)
        self._send_pending(ex, list(by_reply.values()))
        return ex

    def send_unacknowledged(self, requests: Sequence[Request], repeats: int = 1) -> dict[int, Reply]:
        """Send every request `repeats` times without requiring an answer; returns the replies that did come.

        For the frames the maker's driver sends blind (clear error, three times): some firmware never answers
        them, so silence here is not an error, and the caller learns the motor's state from a frame that is
        answered. Replies are gathered for one reply timeout (or until each request has its `repeats` answers),
        so a late answer cannot be taken for the reply to the next transaction. The latest reply per key wins.
        """
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        by_reply = {req.reply_id: req for req in requests}
        self._drain()
        for _ in range(repeats):
            for req in by_reply.values():
                self._send(req)
        replies: dict[int, Reply] = {}
        heard = dict.fromkeys(by_reply, 0)
        deadline = time.monotonic() + self.config.reply_timeout_s
        while any(n < repeats for n in heard.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            msg = self.bus.recv(timeout=remaining)
            if msg is None:
                break
            if not self._note(msg):
                continue
            answered = by_reply.get(msg.arbitration_id)
            data = bytes(msg.data)
            if answered is None or (answered.accept is not None and not answered.accept(data)):
                continue
            heard[msg.arbitration_id] += 1
            replies[answered.key] = Reply(data=data, received_at=time.monotonic())
        return replies

    def wait(self, ex: Exchange) -> dict[int, Reply]:
        pending = {rid: req for rid, req in ex.requests.items() if req.key not in ex.replies}
        while True:
            self._collect(ex, pending)
            if not pending:
                return ex.replies
            if ex.attempt > ex.retries:
                missing = tuple(sorted(req.key for req in pending.values()))
                raise NoReplyError(missing, ex.attempt, self.config.reply_timeout_s, ex.send_error)
            ex.attempt += 1
            self._send_pending(ex, list(pending.values()))

    def take(self, ex: Exchange) -> dict[int, Reply]:
        """The replies of `ex` that have arrived, without waiting or resending; raises NoReplyError naming the
        rest. For a caller that must not wait on the bus (the servo loop in tick mode takes a cycle's replies one
        tick after sending it): a reply that comes later is drained by the next transaction and still counts as
        heard (`heard`), so only a motor silent for longer than its allowance is a fault."""
        pending = {rid: req for rid, req in ex.requests.items() if req.key not in ex.replies}
        ex.deadline = 0.0  # what is queued, nothing more
        self._collect(ex, pending)
        if pending:
            missing = tuple(sorted(req.key for req in pending.values()))
            raise NoReplyError(missing, ex.attempt, self.config.reply_timeout_s, ex.send_error)
        return ex.replies

    # -- internals ----------------------------------------------------------------------------------------------
    def _send_pending(self, ex: Exchange, requests: list[Request]) -> None:
        for req in requests:
            error = self._send(req)
            if error is not None:
                ex.send_error = error
        ex.deadline = time.monotonic() + self.config.reply_timeout_s

    def _send(self, req: Request) -> str | None:
        msg = can.Message(arbitration_id=req.arbitration_id, data=req.data, is_extended_id=False)
        error: str | None = None
        for attempt in range(self.config.send_attempts):
            try:
                self.bus.send(msg)
                return None
            except can.CanError as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt + 1 < self.config.send_attempts:
                    time.sleep(self.config.send_retry_pause_s)
        return error

    def _collect(self, ex: Exchange, pending: dict[int, Request]) -> None:
        late_reads = 0
        while pending:
            # Past the deadline, what is already queued still counts: a reply that arrived in time while this
            # thread was not scheduled (a busy host) is not a silent motor. Bounded, so a babbling bus cannot
            # hold the cycle.
            remaining = ex.deadline - time.monotonic()
            if remaining <= 0:
                late_reads += 1
                if late_reads > _MAX_DRAIN:
                    return
            msg = self.bus.recv(timeout=max(0.0, remaining))
            if msg is None:
                return
            if not self._note(msg):
                continue
            req = pending.get(msg.arbitration_id)
            data = bytes(msg.data)
            if req is None or (req.accept is not None and not req.accept(data)):
                continue
            ex.replies[req.key] = Reply(data=data, received_at=time.monotonic())
            del pending[msg.arbitration_id]

    def _note(self, msg: can.Message) -> bool:
        """Record when a data frame came in on its id; False for frames that are no motor's answer."""
        if msg.is_error_frame or msg.is_remote_frame or msg.is_extended_id:
            return False
        self.heard[msg.arbitration_id] = time.monotonic()
        return True

    def _drain(self) -> None:
        for _ in range(_MAX_DRAIN):
            msg = self.bus.recv(timeout=0.0)
            if msg is None:
                return
            self._note(msg)
