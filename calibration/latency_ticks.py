"""One servo tick of the latency procedures: wait for the slot, send a full joint target, read the state back.

Why not the servo loop (robot_client.control_loop): the measurements need the exact instant each command was
sent and the raw reading after it, with no trajectory generator in between, and they send targets that were
already made small and smooth by the procedures themselves (latency_command, latency_pattern).

Guard: every reading is checked against the rest pose the procedure started from: a joint farther than
`max_excursion` from it (the planned motion plus a margin) stops the procedure with the arm held
(LatencyError naming the joint), so a mistake in a plan cannot carry the arm away.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from calibration.latency_signal import LatencyError
from robot_client.control_loop import Clock
from robot_client.robot import JointState, Robot

F64 = npt.NDArray[np.float64]


class Ticker:
    def __init__(self, robot: Robot, clock: Clock, period_s: float, rest: F64, max_excursion: F64) -> None:
        self.robot = robot
        self.clock = clock
        self.period_s = period_s
        self.rest = np.asarray(rest, dtype=np.float64)
        self.max_excursion = np.asarray(max_excursion, dtype=np.float64)
        self._next = clock.now()

    def tick(self, target: F64) -> tuple[float, JointState]:
        """Send `target` in the next slot; return the send instant (robot clock) and the state read after it.
        A late tick does not make later ones rush: the schedule restarts from now."""
        self.clock.sleep_until(self._next)
        sent = self.clock.now()
        self._next = max(self._next, sent) + self.period_s
        self.robot.command(target)
        state = self.robot.read_state()
        away = np.abs(state.positions - self.rest) > self.max_excursion
        if away.any():
            j = int(np.flatnonzero(away)[0])
            self.robot.hold()
            raise LatencyError(f"{state.names[j]} moved to {state.positions[j]:.4f}, more than "
                               f"{self.max_excursion[j]:.3f} from where the procedure started "
                               f"({self.rest[j]:.4f}); holding and stopping")
        return sent, state
