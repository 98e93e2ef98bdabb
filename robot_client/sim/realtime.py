"""Background stepping that keeps simulated time equal to wall-clock time.

Why: a real-time servo loop (sleeping to its period, reading state, commanding) expects the robot to move on
its own between calls, as the real arm does. This thread advances the physics to `sim0 + (now - wall0)` every
`period_s` while holding the world lock, so readers see consistent states. If the machine cannot keep up
(the lag exceeds `max_lag_s`), it drops the backlog and re-anchors instead of running in a burst; each such
overrun is counted, and the world clock is rebased so stamps keep following the wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from robot_client.sim.world import SimWorld


@dataclass
class RealtimeStats:
    overruns: int = 0
    max_lag_s: float = 0.0


class RealtimeStepper:
    """Calls `advance_to(sim_time)` under the world lock from its own thread until `stop()`."""

    def __init__(self, world: SimWorld, advance_to: Callable[[float], None],
                 on_error: Callable[[BaseException], None], period_s: float = 0.001,
                 max_lag_s: float = 0.1) -> None:
        if not 0 < period_s <= 0.05 or not max_lag_s > 0:
            raise ValueError(f"realtime stepper: need 0 < period_s <= 0.05 and max_lag_s > 0, got "
                             f"{period_s}, {max_lag_s}")
        self._world = world
        self._advance_to = advance_to
        self._on_error = on_error
        self._period_s = period_s
        self._max_lag_s = max_lag_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wall0 = 0.0
        self._sim0 = 0.0
        self.stats = RealtimeStats()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def reanchor(self) -> None:
        """Restart the wall/sim correspondence from now (after a reset or an overrun). Caller holds the lock."""
        now = time.monotonic()
        self._wall0, self._sim0 = now, self._world.time
        self._world.rebase_clock(now)

    def start(self) -> None:
        if self.running:
            return
        with self._world.lock:
            self.reanchor()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-realtime", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._period_s):
                with self._world.lock:
                    target = self._sim0 + (time.monotonic() - self._wall0)
                    self._advance_to(min(target, self._world.time + self._max_lag_s))
                    lag = target - self._world.time
                    self.stats.max_lag_s = max(self.stats.max_lag_s, lag)
                    if lag > self._max_lag_s:
                        self.stats.overruns += 1
                        self.reanchor()
        except BaseException as exc:  # surfaced to the robot as a fault; the thread must not die silently
            self._on_error(exc)
