"""Safety checks that refuse before moving, and the e-stop.

- First-action guard: the first action of an episode (and the first after a hold) is compared with the measured
  state joint by joint; beyond `first_action_max_delta` the run is refused with the joints named, unless the
  operator overrides -- then the arm ramps there slowly. This is the check that would have stopped the seed
  incident (a never-normalized policy whose first action flew the arm away).
- E-stop: an event set from a signal (SIGUSR1 by default), from the keyboard ('e' or 's' + Enter on the
  controlling terminal) or programmatically; the loop then brings the arm to a jerk-limited stop and holds.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class JointDelta:
    name: str
    current: float
    target: float

    @property
    def delta(self) -> float:
        return self.target - self.current


class FirstActionError(RuntimeError):
    """The first action is too far from the current state; names every offending joint."""

    def __init__(self, deltas: Sequence[JointDelta], threshold: float) -> None:
        listing = ", ".join(f"{d.name} {d.current:+.3f} -> {d.target:+.3f} (delta {d.delta:+.3f})" for d in deltas)
        super().__init__(
            f"first action is farther than {threshold} from the current state on {len(deltas)} joint(s): {listing}. "
            "Check the policy's normalization (python -m replay doctor) and the robot's start pose; "
            "pass --allow-far-start to ramp there slowly anyway."
        )
        self.deltas = tuple(deltas)
        self.threshold = threshold


def far_joints(first: F64, state: F64, names: Sequence[str], threshold: float,
               skip: Sequence[int] = ()) -> list[JointDelta]:
    """Joints (except `skip`, e.g. grippers) whose first target is more than `threshold` from the state."""
    out = []
    for i, name in enumerate(names):
        if i in skip:
            continue
        if abs(float(first[i]) - float(state[i])) > threshold:
            out.append(JointDelta(name, float(state[i]), float(first[i])))
    return out


def check_first_action(first: F64, state: F64, names: Sequence[str], threshold: float, *,
                       skip: Sequence[int] = (), override: bool = False) -> list[JointDelta]:
    """Raise FirstActionError unless every joint is within `threshold` (or `override`); returns the far joints."""
    far = far_joints(first, state, names, threshold, skip)
    if far and not override:
        raise FirstActionError(far, threshold)
    if far:
        log.warning("first action far from the state on %s: ramping there slowly (override given)",
                    [d.name for d in far])
    return far


class EStop:
    """A latched stop request; `trigger(reason)` from any thread or a signal handler."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def trigger(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()
            log.error("E-STOP: %s", reason)

    @property
    def active(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self.reason = ""

    def install_signal(self, signum: int = signal.SIGUSR1) -> None:
        """E-stop on `signum` (main thread only). `kill -USR1 <pid>` from another terminal stops the arm."""
        def handler(sig: int, frame: FrameType | None) -> None:
            self.trigger(f"signal {signal.Signals(sig).name}")

        signal.signal(signum, handler)

    def watch_keyboard(self) -> threading.Thread | None:
        """E-stop when the operator types 'e' or 's' and Enter on the controlling terminal."""
        if not sys.stdin or not sys.stdin.isatty():
            return None

        def reader() -> None:
            for line in sys.stdin:
                if line.strip().lower() in ("e", "s", "stop", "estop"):
                    self.trigger("keyboard")
                    return

        thread = threading.Thread(target=reader, name="estop-keyboard", daemon=True)
        thread.start()
        return thread
