"""The servo loop's clock for a lockstep simulation (SimRobot with realtime=False).

Each `command()` advances simulated time by one servo period, so `sleep_until` only has to (a) advance the
simulation when nothing was commanded (dry-run) and (b) optionally pace simulated time to the wall clock, so a
policy server's real inference delay means the same number of control ticks as on the robot. Pacing follows the
wall clock without catching up: if the loop falls behind (slow rendering), simulated time simply runs slower.
"""

from __future__ import annotations

import time

from robot_client.sim.robot import SimRobot


class SimClock:
    def __init__(self, robot: SimRobot, pace: float | None = 1.0) -> None:
        """pace: simulated seconds per wall second (1.0 = real time); None = as fast as possible."""
        if pace is not None and not pace > 0:
            raise ValueError(f"pace must be > 0 or None, got {pace}")
        self.robot = robot
        self.pace = pace
        self._anchor: tuple[float, float] | None = None  # (sim time, wall time)

    def now(self) -> float:
        return self.robot.now()

    def sleep_until(self, t: float) -> None:
        now = self.robot.now()
        if now < t:
            self.robot.step(t - now)
        if self.pace is None:
            return
        wall = time.monotonic()
        if self._anchor is None:
            self._anchor = (t, wall)
            return
        sim0, wall0 = self._anchor
        due = wall0 + (t - sim0) / self.pace
        if due > wall:
            time.sleep(due - wall)
        elif wall - due > 0.1:
            self._anchor = (t, wall)  # fell behind: re-anchor instead of rushing to catch up
