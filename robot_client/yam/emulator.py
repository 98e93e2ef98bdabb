"""Emulated Damiao motors on a python-can bus (virtual in tests), with fault injection.

The driver is tested against real frames on a bus, never against a mock of itself: this emulator reads the
driver's frames, runs `EmulatedMotor` for each addressed motor and sends the replies back.

Determinism: motion advances by a fixed `command_dt_s` per MIT command received (not by wall time), so the
same command sequence always yields the same trajectory; `advance()` adds motion without frames. The watchdog
compares against `clock` (inject a `ManualClock` to trip it exactly when a test says so). Random reply drops
draw from a generator seeded by `EmulatorConfig.seed`. Reply delays use wall time, because they exist to test
the driver's wall-clock timeouts.

Fault injection (all thread-safe, all by motor id):
- `drop_replies(id, count=N)` drops the next N replies; `drop_replies(id, probability=p)` drops each with p;
  `drop_replies(id)` drops every reply. The motor still acts on the frames; only its answers are lost.
- `delay_replies(id, seconds, count=None)` sends replies late.
- `set_error(id, code)` latches an error status (0x8..0xE) until a clear-error frame.
- `set_temperature(id, mosfet_c=, rotor_c=)` at or above the limit latches 0xB / 0xC.
- `set_mechanical_stops(id, lower, upper)` physical limits where the motor stalls.
- `set_obstacle(id, position, side)` a one-sided stiff wall (an object in the gripper's jaws): the motor stalls
  against it and reports the MIT law's torque there, so a force limiter's effect is visible.
- `set_load(model)` a pose-dependent static load on every motor (`gravity_load(arm, factors)`: the arm's gravity
  from its MuJoCo model, scaled by "true" per-joint factors), so a motor holding with kp sags and reports the
  torque a real one would.
- `set_position_offset(id, offset)` shifts what the motor reports (wrong zero); `set_position(id, q)` moves it.
- `clear_injections(id=None)` removes drops and delays.
- Firmware variants (`EmulatorConfig.unanswered` / `.ignored`): frame kinds a motor acts on without answering
  (clear-error, save-zero on some firmware), or never takes at all.

Progress: `wait_for_frames(n)` blocks until every motor has received n more MIT frames (n x command_dt_s of
emulated motion), for a driver that sends from its own thread at its own pace.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import can

from robot_client.config import ArmConfig
from robot_client.yam import protocol as dm
from robot_client.yam.bus import LOCAL_INTERFACES, open_local_bus
from robot_client.yam.motor_model import EmulatedMotor, MotorPhysics, MotorSnapshot


class ManualClock:
    """A clock that only moves when told to (for the emulator's watchdog)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass(frozen=True)
class MotorSpec:
    motor_id: int
    motor_type: str
    position: float = 0.0  # initial physical position (rad)
    stops: tuple[float, float] | None = None
    physics: MotorPhysics | None = None  # None: defaults for the type


# Physical motor positions by motor id -> static load torque by motor id (N m the motor must produce to hold).
LoadModel = Callable[[Mapping[int, float]], Mapping[int, float]]
LOAD_RESOLUTION_RAD = 1e-3


def gravity_load(arm: ArmConfig, factors: Sequence[float] = (1.0,) * 6,
                 gripper_limits: tuple[float, float] | None = None) -> LoadModel:
    """The arm's gravity as emulated motor loads: the arm model's torque (robot_client.gravity, unclipped) at
    the motors' physical angles, times `factors` (the emulated arm's "true" factors a calibration should
    recover). The gripper motor carries no load; its opening (from `gripper_limits` = (closed, open) motor rad,
    else fully open) moves the fingers' mass."""
    from robot_client.gravity import ARM_JOINTS, GravityModel

    if len(arm.joints) != ARM_JOINTS or len(factors) != ARM_JOINTS:
        raise ValueError(f"gravity_load: the arm model has {ARM_JOINTS} joints; arm '{arm.name}' has "
                         f"{len(arm.joints)}, factors {len(factors)}")
    model = GravityModel()
    scale = [float(f) for f in factors]
    joint_ids = arm.motor_ids[:ARM_JOINTS]
    gripper_id = arm.motor_ids[ARM_JOINTS]

    def load(positions: Mapping[int, float]) -> Mapping[int, float]:
        opening = 1.0
        if gripper_limits is not None:
            closed, opened = gripper_limits
            opening = (positions[gripper_id] - closed) / (opened - closed)
        raw = model.raw([positions[mid] for mid in joint_ids], opening)
        return {mid: float(raw[i]) * scale[i] for i, mid in enumerate(joint_ids)}

    return load


@dataclass(frozen=True)
class EmulatorConfig:
    command_dt_s: float = 0.004  # simulated time per MIT command (a 250 Hz loop)
    poll_s: float = 0.002  # how often the thread wakes without traffic (watchdog, delayed replies)
    seed: int = 0
    log_size: int = 100_000
    # Firmware variants, as sets of frame kinds (FRAME_KINDS): `unanswered` frames are acted on but never answered
    # (firmware that does not reply to clear-error or save-zero); `ignored` frames are neither acted on nor
    # answered (a motor that never takes them, e.g. a save-zero that does not stick).
    unanswered: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for label in ("unanswered", "ignored"):
            unknown = sorted(set(getattr(self, label)) - FRAME_KINDS)
            if unknown:
                raise ValueError(f"EmulatorConfig.{label}: unknown frame kinds {unknown}; known {sorted(FRAME_KINDS)}")


# Kinds of frames the emulator tells apart (its frame log names them so).
FRAME_KINDS = frozenset({"mit", "enable", "disable", "clear_error", "save_zero", "register_read", "register_write",
                         "register_save"})


@dataclass(frozen=True)
class FrameLogEntry:
    """A frame the emulator received: which motor and what kind ('mit', 'enable', 'register_write', ...)."""

    motor_id: int
    kind: str


@dataclass
class _Injection:
    drop_count: int = 0
    drop_probability: float = 0.0
    delay_s: float = 0.0
    delay_count: int | None = None


class MotorEmulator:
    """Motors on one bus channel, answered from a background thread. Use as a context manager."""

    def __init__(self, channel: str, motors: Sequence[MotorSpec], *, config: EmulatorConfig | None = None,
                 clock: Callable[[], float] = time.monotonic, interface: str = "virtual") -> None:
        self.channel = channel
        self.interface = interface
        self.config = config or EmulatorConfig()
        self.clock = clock
        self._motors: dict[int, EmulatedMotor] = {}
        for spec in motors:
            if spec.motor_id in self._motors:
                raise ValueError(f"motor id {spec.motor_id} appears twice")
            dm.reply_id(spec.motor_id)
            self._motors[spec.motor_id] = EmulatedMotor(
                motor_id=spec.motor_id, motor_type=spec.motor_type,
                physics=spec.physics or MotorPhysics.for_type(spec.motor_type), q=spec.position, stops=spec.stops)
        self._injections = {mid: _Injection() for mid in self._motors}
        self._rng = random.Random(self.config.seed)
        self._lock = threading.RLock()
        # (motor id, kind) per frame received. Plain tuples, not FrameLogEntry objects: tuples of ints and strings
        # leave the garbage collector's care, where 100,000 dataclass instances per emulator made every full
        # collection take ~30 ms, during which the emulated motors answered nothing (`frame_log` builds entries).
        self._log: deque[tuple[int, str]] = deque(maxlen=self.config.log_size)
        self._delayed: list[tuple[float, int, can.Message]] = []
        self._seq = 0
        self._bus: can.BusABC | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._load: LoadModel | None = None
        self._load_at: dict[int, float] = {}  # positions the loads were last evaluated at
        self._counts: dict[tuple[int, str], int] = {}  # frames received by (motor id, kind), never capped
        self._frames_seen = threading.Condition(self._lock)
        self.replies_lost = 0  # replies the bus refused (see `_send`)

    @classmethod
    def for_arm(cls, arm: ArmConfig, *, positions: Mapping[str, float] | None = None,
                stops: Mapping[str, tuple[float, float]] | None = None, config: EmulatorConfig | None = None,
                clock: Callable[[], float] = time.monotonic, load: LoadModel | None = None) -> MotorEmulator:
        """The arm's motors (ids and types from the config) on its channel; positions/stops by joint name;
        `load` e.g. `gravity_load(arm, factors)`."""
        positions = positions or {}
        stops = stops or {}
        specs = [MotorSpec(mid, mtype, positions.get(name, 0.0), stops.get(name))
                 for name, mid, mtype in zip(arm.names, arm.motor_ids, arm.motor_types, strict=True)]
        emulator = cls(arm.can_channel or f"yam_{arm.name}", specs, config=config, clock=clock,
                       interface=arm.can_interface)
        if load is not None:
            emulator.set_load(load)
        return emulator

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> MotorEmulator:
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        with self._lock:
            now = self.clock()
            for m in self._motors.values():
                m.last_frame_at = now
        if self.interface in LOCAL_INTERFACES:
            self._bus = open_local_bus(self.interface, self.channel, "device", f"motor emulator on {self.channel}")
        else:
            self._bus = can.Bus(interface=self.interface, channel=self.channel)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"motor-emulator-{self.channel}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the bus; re-raises an exception the thread met (a bug worth seeing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None
        if self._errors:
            raise RuntimeError(f"motor emulator thread failed: {self._errors[0]!r}") from self._errors[0]

    def __enter__(self) -> MotorEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- fault injection -----------------------------------------------------------------------------------------
    def drop_replies(self, motor_id: int, *, count: int | None = None, probability: float | None = None) -> None:
        if count is not None and probability is not None:
            raise ValueError("give count or probability, not both")
        with self._lock:
            inj = self._injection(motor_id)
            if count is not None:
                inj.drop_count = count
            else:
                p = 1.0 if probability is None else probability
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"probability must be in [0, 1], got {p}")
                inj.drop_probability = p

    def delay_replies(self, motor_id: int, seconds: float, *, count: int | None = None) -> None:
        with self._lock:
            inj = self._injection(motor_id)
            inj.delay_s = seconds
            inj.delay_count = count

    def clear_injections(self, motor_id: int | None = None) -> None:
        with self._lock:
            for mid in self._ids(motor_id):
                self._injections[mid] = _Injection()

    def set_error(self, motor_id: int, code: int) -> None:
        status = dm.StatusCode(code)
        if not dm.is_error_status(status):
            raise ValueError(f"{status.name} is not an error status")
        with self._lock:
            self._motor(motor_id).latch(status)

    def set_temperature(self, motor_id: int, *, mosfet_c: float | None = None, rotor_c: float | None = None) -> None:
        with self._lock:
            m = self._motor(motor_id)
            if mosfet_c is not None:
                m.mosfet_c = mosfet_c
            if rotor_c is not None:
                m.rotor_c = rotor_c
            m.check_temperature()

    def set_mechanical_stops(self, motor_id: int, lower: float | None, upper: float | None = None) -> None:
        """Physical stops (rad); `lower=None` removes them."""
        with self._lock:
            m = self._motor(motor_id)
            if lower is None or upper is None:
                m.stops = None
            else:
                if not lower < upper:
                    raise ValueError(f"stops need lower < upper, got {lower}, {upper}")
                m.stops = (lower, upper)

    def set_obstacle(self, motor_id: int, position: float | None, side: int = +1) -> None:
        """A stiff wall at physical `position` (rad) blocking motion past it: `side` +1 blocks motion above it,
        -1 below it (closing is +1 for the YAM linear grippers). `position=None` removes it. The motor must be on
        the free side when the wall is set."""
        with self._lock:
            m = self._motor(motor_id)
            if position is None:
                m.obstacle = None
                return
            if side not in (-1, 1):
                raise ValueError(f"obstacle side must be +1 or -1, got {side}")
            if (m.q - position) * side > 0:
                raise ValueError(f"motor {motor_id} is at {m.q:.3f} rad, already past an obstacle at {position:.3f} "
                                 f"(side {side:+d}); set it ahead of the motor")
            m.obstacle = (float(position), side)

    def set_load(self, model: LoadModel | None) -> None:
        """Pose-dependent static loads on the motors (None removes them), re-evaluated before every step."""
        with self._lock:
            self._load = model
            self._load_at = {}
            if model is None:
                for m in self._motors.values():
                    m.load_nm = 0.0
            else:
                self._update_loads()

    def set_position_offset(self, motor_id: int, offset: float) -> None:
        with self._lock:
            self._motor(motor_id).offset = offset

    def set_position(self, motor_id: int, position: float) -> None:
        """Move the motor's physical position instantly (at rest)."""
        with self._lock:
            m = self._motor(motor_id)
            m.q, m.v = position, 0.0

    def advance(self, seconds: float, motor_ids: Iterable[int] | None = None) -> None:
        """Integrate motion for `seconds` without any frame (e.g. a motor coasting in damping mode)."""
        with self._lock:
            self._update_loads()
            for mid in self._ids(None) if motor_ids is None else motor_ids:
                self._motor(mid).step(seconds)

    # -- introspection -------------------------------------------------------------------------------------------
    def snapshot(self, motor_id: int) -> MotorSnapshot:
        with self._lock:
            return self._motor(motor_id).snapshot()

    def frame_log(self, motor_id: int | None = None) -> list[FrameLogEntry]:
        with self._lock:
            return [FrameLogEntry(mid, kind) for mid, kind in self._log if motor_id is None or mid == motor_id]

    def frame_count(self, motor_id: int | None = None) -> int:
        return len(self.frame_log(motor_id))

    def frames_received(self, motor_id: int, kind: str = "mit") -> int:
        """Frames of `kind` the motor received since start (a counter: not limited by the log size)."""
        with self._lock:
            return self._counts.get((self._motor(motor_id).motor_id, kind), 0)

    def wait_for_frames(self, count: int, kind: str = "mit", motor_ids: Iterable[int] | None = None,
                        timeout_s: float = 10.0) -> None:
        """Block until every motor (or each of `motor_ids`) has received `count` more frames of `kind` than when
        called. Motion advances per MIT frame, so this waits for a known amount of emulated time whatever the
        host's speed. Raises TimeoutError naming the motors that fell short."""
        if kind not in FRAME_KINDS:
            raise ValueError(f"unknown frame kind {kind!r}; known {sorted(FRAME_KINDS)}")
        with self._lock:
            ids = self._ids(None) if motor_ids is None else [self._motor(mid).motor_id for mid in motor_ids]
            goal = {mid: self._counts.get((mid, kind), 0) + count for mid in ids}

            def short() -> list[int]:
                return [mid for mid in ids if self._counts.get((mid, kind), 0) < goal[mid]]

            if not self._frames_seen.wait_for(lambda: not short(), timeout=timeout_s):
                raise TimeoutError(f"motors {short()} on {self.channel} did not receive {count} {kind} frames within "
                                   f"{timeout_s:g} s")

    # -- thread --------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        bus = self._bus
        assert bus is not None
        while not self._stop.is_set():
            try:
                timeout = self.config.poll_s
                with self._lock:
                    if self._delayed:
                        timeout = min(timeout, max(0.0, self._delayed[0][0] - time.monotonic()))
                msg = bus.recv(timeout=timeout)
                with self._lock:
                    now = self._event_time(msg)
                    for m in self._motors.values():
                        m.check_watchdog(now)
                    if msg is not None:
                        self._handle(bus, msg, now)
                    self._flush_delayed(bus)
            except Exception as exc:  # keep serving; stop() reports the first failure
                self._errors.append(exc)
                if len(self._errors) > 100:
                    return

    def _event_time(self, msg: can.Message | None) -> float:
        """The emulator's time of this event: on the wall clock, a frame counts from when it was put on the bus,
        not from when this thread got to it. A real motor's firmware is never starved, so a frame the host sent in
        time must not trip the watchdog because the emulating thread (sharing the interpreter) ran late."""
        now = self.clock()
        if msg is not None and self.clock is time.monotonic and msg.timestamp:
            return now - min(max(0.0, time.time() - msg.timestamp), 1.0)
        return now

    def _handle(self, bus: can.BusABC, msg: can.Message, now: float) -> None:
        if msg.is_extended_id or msg.is_error_frame or msg.is_remote_frame or len(msg.data) != dm.FRAME_LENGTH:
            return
        data = bytes(msg.data)
        arb = msg.arbitration_id
        if arb == dm.REGISTER_ID:
            try:
                frame = dm.unpack_register(data)
            except dm.ProtocolError:
                return
            motor = self._motors.get(frame.motor_id)
            if motor is None:
                return
            kind = f"register_{frame.op.name.lower()}"
            if self._receive(motor.motor_id, kind):
                self._answer(bus, motor.motor_id, kind, motor.on_register(frame))
            return
        motor = self._motors.get(arb - dm.MIT_ID_OFFSET)
        if motor is None:
            return
        special = dm.parse_special_command(data)
        if special is not None:
            kind = special.name.lower()
            if self._receive(motor.motor_id, kind):
                self._answer(bus, motor.motor_id, kind, motor.on_special(special, now))
        elif self._receive(motor.motor_id, "mit"):
            self._update_loads()
            self._answer(bus, motor.motor_id, "mit", motor.on_mit(data, now, self.config.command_dt_s))

    def _receive(self, motor_id: int, kind: str) -> bool:
        """Log and count a received frame; False when this firmware ignores the kind (`EmulatorConfig.ignored`)."""
        self._log.append((motor_id, kind))
        self._counts[(motor_id, kind)] = self._counts.get((motor_id, kind), 0) + 1
        self._frames_seen.notify_all()
        return kind not in self.config.ignored

    def _answer(self, bus: can.BusABC, motor_id: int, kind: str, data: bytes) -> None:
        if kind not in self.config.unanswered:
            self._reply(bus, motor_id, data)

    def _reply(self, bus: can.BusABC, motor_id: int, data: bytes) -> None:
        inj = self._injections[motor_id]
        if inj.drop_count > 0:
            inj.drop_count -= 1
            return
        if inj.drop_probability > 0.0 and self._rng.random() < inj.drop_probability:
            return
        msg = can.Message(arbitration_id=dm.reply_id(motor_id), data=data, is_extended_id=False)
        if inj.delay_s > 0.0 and (inj.delay_count is None or inj.delay_count > 0):
            if inj.delay_count is not None:
                inj.delay_count -= 1
            self._seq += 1
            heapq.heappush(self._delayed, (time.monotonic() + inj.delay_s, self._seq, msg))
            return
        self._send(bus, msg)

    def _send(self, bus: can.BusABC, msg: can.Message) -> None:
        """Put a reply on the bus. A bus that refuses it (a link whose other end is closed or not reading) loses
        it, as a motor's answer that no node takes is lost; counted in `replies_lost`, never an error here."""
        try:
            bus.send(msg)
        except can.CanOperationError:
            self.replies_lost += 1

    def _flush_delayed(self, bus: can.BusABC) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            self._send(bus, heapq.heappop(self._delayed)[2])

    def _update_loads(self) -> None:
        """Re-evaluate the loads once any motor moved by more than LOAD_RESOLUTION_RAD since the last time (the
        model costs tens of microseconds; gravity changes by under 0.01 N m per mrad on a YAM)."""
        if self._load is None:
            return
        positions = {mid: m.q for mid, m in self._motors.items()}
        if self._load_at and all(abs(q - self._load_at[mid]) <= LOAD_RESOLUTION_RAD for mid, q in positions.items()):
            return
        self._load_at = positions
        loads = self._load(positions)
        for mid, m in self._motors.items():
            m.load_nm = float(loads.get(mid, 0.0))

    def _motor(self, motor_id: int) -> EmulatedMotor:
        try:
            return self._motors[motor_id]
        except KeyError:
            raise ValueError(f"no emulated motor with id {motor_id}; have {sorted(self._motors)}") from None

    def _injection(self, motor_id: int) -> _Injection:
        self._motor(motor_id)
        return self._injections[motor_id]

    def _ids(self, motor_id: int | None) -> list[int]:
        return sorted(self._motors) if motor_id is None else [self._motor(motor_id).motor_id]
