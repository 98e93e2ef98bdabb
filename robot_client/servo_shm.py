"""The shared-memory block between a servo process and its parent: the plan one way, state and tick records back.

Why shared memory and not a pipe or a queue: the servo process must never wait on its parent (that is the point
of giving it a process), and nothing between our own processes is pickled. Each side writes only its own regions:

- control (parent -> servo): heartbeat, mode (hold / track / e-stop / shutdown), velocity scale, and the plan: up
  to `horizon` joint targets (and planned velocities) sampled every `dt` from `t0` on the shared monotonic clock,
  published whole under a sequence lock so the servo never reads half a plan;
- status (servo -> parent): ready / exit flags, the latest measured state, tick and overrun counts, the real-time
  policy obtained, and a fault message;
- a ring of tick records (servo -> parent): time, period, measured state, target, command, holding; the parent
  drains it for recording and timing (records older than the ring are counted as dropped, never blocking the servo).

The sequence lock: the writer makes the counter odd, writes, makes it even; a reader copies, and retries when the
counter was odd or changed meanwhile. x86-64 and ARM64 keep stores to shared memory in this order for aligned 8-byte
words as numpy writes them here; the readers copy (never hold views across ticks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import TypeVar

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
T = TypeVar("T")

# Modes the parent sets.
MODE_HOLD = 0.0  # no plan: hold where the arm is
MODE_TRACK = 1.0  # follow the plan
MODE_ESTOP = 2.0  # latched e-stop: jerk-limited stop and hold
MODE_SHUTDOWN = 3.0  # come to rest, disable, exit

# Control words (float64, parent-written).
_C_HEARTBEAT, _C_MODE, _C_SCALE, _C_T0, _C_DT, _C_LEN = range(6)
_CONTROL_WORDS = 8
# Status words (float64, servo-written).
(_S_READY, _S_EXITED, _S_TIME, _S_TICKS, _S_OVERRUNS, _S_HOLDING, _S_RT, _S_PID, _S_FAULT_LEN,
 _S_EXIT_CODE) = range(10)
_STATUS_WORDS = 12
FAULT_BYTES = 1024
# Real-time policy the servo process obtained (status word).
RT_NONE, RT_NICE, RT_FIFO = 0.0, 1.0, 2.0
RT_NAMES = {RT_NONE: "none", RT_NICE: "nice -10", RT_FIFO: "SCHED_FIFO"}


class ServoShmError(RuntimeError):
    """The shared block cannot be created, attached or read consistently (names what and why)."""


@dataclass(frozen=True)
class Plan:
    """Joint targets sampled every `dt` from `t0` (monotonic seconds): positions/velocities [len, dof]."""

    t0: float
    dt: float
    positions: F64
    velocities: F64

    @property
    def end(self) -> float:
        return self.t0 + (len(self.positions) - 1) * self.dt

    def at(self, t: float) -> tuple[F64, F64]:
        """Target and planned velocity at `t`, linear between samples, held at the ends."""
        n = len(self.positions)
        if n == 1 or t <= self.t0:
            return self.positions[0].copy(), self.velocities[0].copy()
        x = (t - self.t0) / self.dt
        i = min(int(x), n - 2)
        w = min(1.0, x - i)
        pos = self.positions[i] + w * (self.positions[i + 1] - self.positions[i])
        vel = self.velocities[i] + w * (self.velocities[i + 1] - self.velocities[i])
        return pos, vel


@dataclass(frozen=True)
class TickRow:
    """One servo tick as the parent reads it back."""

    time: float
    period: float
    positions: F64
    velocities: F64
    efforts: F64
    target: F64  # NaN where the tick had no target
    command: F64
    holding: bool


@dataclass(frozen=True)
class Layout:
    dof: int
    horizon: int
    ring: int

    def __post_init__(self) -> None:
        for name, value, lo in (("dof", self.dof, 1), ("horizon", self.horizon, 2), ("ring", self.ring, 16)):
            if value < lo:
                raise ServoShmError(f"servo shared memory: {name} must be >= {lo}, got {value}")

    @property
    def row_words(self) -> int:
        return 3 + 5 * self.dof  # time, period, holding + pos, vel, eff, target, command

    def sections(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """name -> (byte offset, float64 shape); sequence counters are uint64 words in their own slots."""
        shapes: list[tuple[str, tuple[int, ...]]] = [
            ("control_seq", (1,)), ("control", (_CONTROL_WORDS,)),
            ("plan_pos", (self.horizon, self.dof)), ("plan_vel", (self.horizon, self.dof)),
            ("status_seq", (1,)), ("status", (_STATUS_WORDS,)),
            ("state", (3, self.dof)), ("fault", (FAULT_BYTES // 8,)),
            ("ring_count", (1,)), ("ring", (self.ring, self.row_words)),
        ]
        out: dict[str, tuple[int, tuple[int, ...]]] = {}
        offset = 0
        for name, shape in shapes:
            out[name] = (offset, shape)
            offset += 8 * int(np.prod(shape))
        out["_size"] = (offset, ())
        return out

    @property
    def size(self) -> int:
        return self.sections()["_size"][0]


class ServoShm:
    """Numpy views over one shared block; `create` in the parent, `attach` in the servo process."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: Layout, owner: bool) -> None:
        self._shm = shm
        self.layout = layout
        self.owner = owner
        buf = shm.buf
        assert buf is not None
        views: dict[str, np.ndarray] = {}
        for name, (offset, shape) in layout.sections().items():
            if name == "_size":
                continue
            dtype = np.uint64 if name.endswith("_seq") or name == "ring_count" else np.float64
            views[name] = np.ndarray(shape, dtype=dtype, buffer=buf, offset=offset)
        self._v = views
        # The servo side's last control snapshot and the sequence count it was read at (see `control`).
        self._control: tuple[float, float, float, Plan | None] | None = None
        self._control_seq = -1
        self._fault_bytes = np.ndarray((FAULT_BYTES,), dtype=np.uint8, buffer=buf,
                                       offset=layout.sections()["fault"][0])

    @classmethod
    def create(cls, layout: Layout) -> ServoShm:
        shm = shared_memory.SharedMemory(create=True, size=layout.size)
        block = cls(shm, layout, owner=True)
        for view in block._v.values():
            view[...] = 0
        block._v["control"][_C_SCALE] = 1.0
        return block

    @classmethod
    def attach(cls, name: str, layout: Layout) -> ServoShm:
        try:
            shm = shared_memory.SharedMemory(name=name, create=False)
        except FileNotFoundError:
            raise ServoShmError(f"servo shared memory {name!r} does not exist (the parent is gone?)") from None
        # Python < 3.13 registers an attached block with this process's resource tracker, which would unlink it
        # when this process exits: the block is the parent's to remove.
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        if shm.size < layout.size:
            shm.close()
            raise ServoShmError(f"servo shared memory {name!r} has {shm.size} bytes, the layout needs {layout.size}")
        return cls(shm, layout, owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    def close(self) -> None:
        self._v.clear()
        del self._fault_bytes
        self._shm.close()
        if self.owner:
            self._shm.unlink()

    # -- parent side -----------------------------------------------------------------------------------------
    def publish(self, *, mode: float, plan: Plan | None = None, velocity_scale: float | None = None) -> None:
        """Write mode, heartbeat and (when given) a new plan, as one consistent update."""
        c, seq = self._v["control"], self._v["control_seq"]
        if plan is not None:
            n = len(plan.positions)
            if not 1 <= n <= self.layout.horizon:
                raise ServoShmError(f"plan has {n} samples; 1..{self.layout.horizon} fit")
            if plan.positions.shape != (n, self.layout.dof) or plan.velocities.shape != (n, self.layout.dof):
                raise ServoShmError(f"plan positions/velocities must be [{n}, {self.layout.dof}], got "
                                    f"{plan.positions.shape} / {plan.velocities.shape}")
            for label, values in (("positions", plan.positions), ("velocities", plan.velocities)):
                bad = np.argwhere(~np.isfinite(values))
                if len(bad):
                    raise ServoShmError(f"plan.{label}[{bad[0][0]}, {bad[0][1]}] is {values[tuple(bad[0])]}: "
                                        f"every plan value must be finite")
            if not (np.isfinite(plan.dt) and plan.dt > 0 and np.isfinite(plan.t0)):
                raise ServoShmError(f"plan t0/dt must be finite with dt > 0, got {plan.t0} / {plan.dt}")
        seq[0] += np.uint64(1)
        c[_C_HEARTBEAT] = time.monotonic()
        c[_C_MODE] = mode
        if velocity_scale is not None:
            c[_C_SCALE] = velocity_scale
        if plan is not None:
            n = len(plan.positions)
            self._v["plan_pos"][:n] = plan.positions
            self._v["plan_vel"][:n] = plan.velocities
            c[_C_T0], c[_C_DT], c[_C_LEN] = plan.t0, plan.dt, n
        seq[0] += np.uint64(1)

    def status(self) -> dict[str, float]:
        s = self._read("status_seq", lambda: self._v["status"].copy())
        return {"ready": s[_S_READY], "exited": s[_S_EXITED], "time": s[_S_TIME], "ticks": s[_S_TICKS],
                "overruns": s[_S_OVERRUNS], "holding": s[_S_HOLDING], "rt": s[_S_RT], "pid": s[_S_PID],
                "exit_code": s[_S_EXIT_CODE]}

    def state(self) -> F64:
        """[3, dof]: measured positions, velocities, efforts of the latest tick."""
        return self._read("status_seq", lambda: self._v["state"].copy())

    def fault(self) -> str:
        n = int(self._read("status_seq", lambda: self._v["status"][_S_FAULT_LEN].copy()))
        return bytes(self._fault_bytes[:n]).decode("utf-8", "replace")

    def ring_count(self) -> int:
        return int(self._v["ring_count"][0])

    def rows(self, since: int) -> tuple[list[TickRow], int, int]:
        """Tick rows written since count `since`: (rows, new count, rows lost to the ring's size)."""
        count = self.ring_count()
        ring = self.layout.ring
        lost = max(0, count - since - ring)
        start = since + lost
        d = self.layout.dof
        rows = []
        for k in range(start, count):
            r = self._v["ring"][k % ring].copy()
            rows.append(TickRow(time=float(r[0]), period=float(r[1]), holding=bool(r[2]),
                                positions=r[3:3 + d], velocities=r[3 + d:3 + 2 * d], efforts=r[3 + 2 * d:3 + 3 * d],
                                target=r[3 + 3 * d:3 + 4 * d], command=r[3 + 4 * d:3 + 5 * d]))
        # A row the servo overwrote while it was copied would be torn: re-check the count and drop those.
        overwritten = max(0, self.ring_count() - ring - start)
        return rows[overwritten:], count, lost + overwritten

    # -- servo side ------------------------------------------------------------------------------------------
    def control(self) -> tuple[float, float, float, Plan | None]:
        """(heartbeat, mode, velocity scale, plan or None) as one consistent snapshot. Raises ServoShmError when
        the parent is mid-write for over 2 ms; the servo then keeps its previous snapshot for this tick.

        Called every servo tick while the parent publishes at the policy's pace: an unchanged sequence counter
        means an unchanged block, so the last snapshot is returned without copying the plan again."""
        seq = int(self._v["control_seq"][0])
        if self._control is not None and seq == self._control_seq:
            return self._control

        def copy() -> tuple[F64, F64, F64]:
            c = self._v["control"].copy()
            n = int(c[_C_LEN])
            return c, self._v["plan_pos"][:n].copy(), self._v["plan_vel"][:n].copy()

        c, pos, vel = self._read("control_seq", copy, timeout_s=0.002)
        plan = Plan(float(c[_C_T0]), float(c[_C_DT]), pos, vel) if len(pos) else None
        self._control = (float(c[_C_HEARTBEAT]), float(c[_C_MODE]), float(c[_C_SCALE]), plan)
        self._control_seq = seq
        return self._control

    def write_status(self, **words: float) -> None:
        index = {"ready": _S_READY, "exited": _S_EXITED, "time": _S_TIME, "ticks": _S_TICKS,
                 "overruns": _S_OVERRUNS, "holding": _S_HOLDING, "rt": _S_RT, "pid": _S_PID,
                 "exit_code": _S_EXIT_CODE}
        seq = self._v["status_seq"]
        seq[0] += np.uint64(1)
        for key, value in words.items():
            self._v["status"][index[key]] = value
        seq[0] += np.uint64(1)

    def write_state(self, positions: F64, velocities: F64, efforts: F64, **words: float) -> None:
        seq = self._v["status_seq"]
        seq[0] += np.uint64(1)
        st = self._v["state"]
        st[0], st[1], st[2] = positions, velocities, efforts
        status = self._v["status"]
        for key, value in words.items():
            status[{"time": _S_TIME, "ticks": _S_TICKS, "overruns": _S_OVERRUNS, "holding": _S_HOLDING}[key]] = value
        seq[0] += np.uint64(1)

    def write_fault(self, message: str) -> None:
        data = message.encode("utf-8")[:FAULT_BYTES]
        seq = self._v["status_seq"]
        seq[0] += np.uint64(1)
        self._fault_bytes[:len(data)] = np.frombuffer(data, dtype=np.uint8)
        self._v["status"][_S_FAULT_LEN] = len(data)
        seq[0] += np.uint64(1)

    def append_row(self, t: float, period: float, holding: bool, positions: F64, velocities: F64, efforts: F64,
                   target: F64 | None, command: F64) -> None:
        d = self.layout.dof
        count = int(self._v["ring_count"][0])
        row = self._v["ring"][count % self.layout.ring]
        row[0], row[1], row[2] = t, period, float(holding)
        row[3:3 + d] = positions
        row[3 + d:3 + 2 * d] = velocities
        row[3 + 2 * d:3 + 3 * d] = efforts
        row[3 + 3 * d:3 + 4 * d] = np.nan if target is None else target
        row[3 + 4 * d:3 + 5 * d] = command
        self._v["ring_count"][0] = np.uint64(count + 1)

    # -- both --------------------------------------------------------------------------------------------------
    def _read(self, seq_name: str, copy: Callable[[], T], timeout_s: float = 0.1) -> T:
        """A consistent copy; between tries it sleeps briefly, never spins: the writer may be a lower-priority
        process preempted mid-write on this very core (the servo runs SCHED_FIFO), and only a sleep lets it
        finish."""
        seq = self._v[seq_name]
        end = time.monotonic() + timeout_s
        while True:
            before = int(seq[0])
            if not before % 2:
                value = copy()
                if int(seq[0]) == before:
                    return value
            if time.monotonic() > end:
                raise ServoShmError(f"servo shared memory: no consistent read of {seq_name} within "
                                    f"{timeout_s * 1e3:.0f} ms (its writer stopped mid-write?)")
            time.sleep(20e-6)
