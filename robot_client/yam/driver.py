"""`YamRobot`: the `Robot` backend for real YAM arms, one CAN bus per arm.

Joint order is `config.joint_names` (each arm's joints then its gripper, arms in config order).

The motors are fed by a background sender, not by the servo loop (as the maker's driver does it): from connect
to close, one thread sends every enabled motor its latest command (MIT frames with the latest target, or the
hold pose, and the feed-forward of that moment) at `YamOptions.send_hz` (250 Hz), reads the replies and updates
the cached feedback. A cycle sends every arm's frames before collecting any reply, so two arms on two buses cost
one round trip, not two. `command()` and `hold()` only check and store the target; `read_state()` reads the
cached feedback; faults the sender finds (status codes, silence, the limit watch) are latched and raised by the
next call. Why: the motors' watchdog must only catch a dead process, never a live one that paused (a GC, a slow
camera read); the servo loop's own deadline is enforced above it by the sender (`command_timeout_s`: no
command() for that long while tracking = `servo_loop_stalled`, every motor holds its measured position). The
deadline guards a moving target only: after enable() or an explicit hold() the motors hold a pose the caller chose,
which is safe for as long as the process lives (between episodes, during a blocking first policy query), so no
deadline runs until the next command().
After any stop the sender keeps feeding the stop pose to the motors still enabled, until `disable()`.

Tick mode (`YamOptions.send_mode = "tick"`, an option of `robot_client.servo_process`, where the servo loop runs
in a process of its own with nothing else to do and a second busy thread beside it only costs it the interpreter
lock): command() and hold() send the frames themselves, from the calling thread, and return without waiting
for the replies: the next read_state() (the next tick) takes in those that have arrived (normally all), without
waiting or resending, so the loop never waits on the bus (the feedback is one tick old, as a sender cycle's would
be; a motor whose reply missed the tick is asked again by the next tick's frame, and only silence beyond
`silence_timeout_s` is a fault, as in thread mode). The background sender stays
asleep while they do; once nothing has been sent for `keepalive_gap_s` it takes over at `send_hz`, with the same
watchdog feeding and the same servo deadline as in thread mode. Every other use of the buses (a sender cycle, the
setup calls) first takes in the replies still in flight. A failure of the bus in the caller's cycle is latched
as `sender_failed` and raised there.

Threads: one lock (`_lock`) guards the shared state (targets, feedback, faults); the buses are taken in turn
(`_bus_lock`) by the sender's cycle and by the synchronous setup calls (connect, enable, disable, close), so
setup frames never interleave with the sender's. The sender does its bus I/O without `_lock`, so command() and
read_state() never wait for a round trip. close() stops and joins the sender before the buses close.

Calibration: before any bus is opened, the rig calibration file the config names (or the one passed in) is
checked against the config and its zero offsets and gripper limits are handed to the arms
(`robot_client.yam.rig_calibration`); a file that does not fit refuses the robot before anything moves.

Gravity compensation and the gripper force limit: each arm whose config has `gravity_compensation` gets its own
gravity model as the arm's feed-forward hook (`robot_client.yam.gravity_ff.ArmGravity`; factors from the rig
calibration file when it has them, else the config's), unless a `feedforward` is passed in (which then replaces
it on every arm). The force limiter lives in each arm. `actuation_report()` gives the feed-forward used per joint
and each gripper's grasp state for the episode report.

A fault on any arm stops the whole robot: that arm holds its healthy motors and disables the faulted ones, the
other arms hold where they are. Commands stay refused until `clear_faults()` and `enable()`: a bimanual task
with one arm down is not something to carry on with unattended.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import can
import numpy as np

from robot_client.config import ArmConfig, RobotConfig
from robot_client.robot import (
    F64,
    ActuationReport,
    FaultRecord,
    JointState,
    Robot,
    RobotCommandError,
    RobotError,
    RobotFault,
    RobotStatus,
)
from robot_client.yam.arm import FaultsLatched, FeedForward, YamArm, YamOptions
from robot_client.yam.bus import open_bus
from robot_client.yam.gravity_ff import ArmGravity, gravity_config
from robot_client.yam.rig_calibration import load_robot_calibration, resolve_calibration
from robot_client.yam.transport import Exchange, Request

if TYPE_CHECKING:
    from robot_client.calfile import RigCalibration

BusFactory = Callable[[ArmConfig], can.BusABC]

log = logging.getLogger(__name__)

# Fault code latched when the servo loop stops calling command()/hold() for longer than `command_timeout_s`.
SERVO_LOOP_STALLED = "servo_loop_stalled"


class YamRobot(Robot):
    """Real bimanual (or single) YAM robot. Thread-safe (one state lock; the buses taken in turn, see above); its
    background sender runs from connect() to close().

    `calibration`: the rig calibration to apply; None = the file `config.calibration` names (if any).
    """

    def __init__(self, config: RobotConfig, *, options: YamOptions | None = None,
                 bus_factory: BusFactory = open_bus, feedforward: FeedForward | None = None,
                 calibration: RigCalibration | None = None) -> None:
        self.config = config
        self._calibration = calibration
        self.options = options or YamOptions()
        self._bus_factory = bus_factory
        self._feedforward = feedforward
        self._buses: list[can.BusABC] = []
        self._arms: list[YamArm] = []
        self._slices: list[slice] = []
        self._lock = threading.RLock()  # the shared state: the arms' targets, feedback and faults
        self._bus_lock = threading.RLock()  # whose turn it is on the buses: the sender's cycle or a setup call
        self._sender: threading.Thread | None = None
        self._stop_sender = threading.Event()
        # time.monotonic() of the last enable(), command() or hold(); None while nothing is being driven.
        self._last_command_at: float | None = None
        self.sender_cycles = 0  # completed cycles, the sender's and (tick mode) the callers' (diagnostics)
        self.caller_cycles = 0  # of which command()/hold() ran in tick mode (diagnostics)
        # time.monotonic() when command()/hold() last finished a cycle (tick mode); the sender waits out the gap.
        self._last_caller_cycle_at = -float("inf")
        # Tick mode: the caller's posted cycle whose replies the next read_state() (or bus user) takes in.
        self._in_flight: list[tuple[YamArm, Exchange]] = []

    @property
    def arms(self) -> tuple[YamArm, ...]:
        return tuple(self._arms)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Check the rig calibration, open every arm's bus, program the motor watchdogs and start the sender.
        Motors are not enabled. A calibration that does not fit raises RigCalibrationError before any bus is
        opened."""
        with self._bus_lock, self._lock:
            if self._arms:
                return
            calibration = self._calibration if self._calibration is not None else load_robot_calibration(self.config)
            arms = resolve_calibration(self.config, calibration)
            try:
                start = 0
                for cal in arms:
                    arm_cfg = cal.config
                    bus = self._bus_factory(arm_cfg)
                    self._buses.append(bus)
                    self._arms.append(YamArm(arm_cfg, bus, self.config.limits, self.options,
                                             self._arm_feedforward(arm_cfg), zero_offsets=cal.zero_offsets))
                    self._slices.append(slice(start, start + len(arm_cfg.names)))
                    start += len(arm_cfg.names)
                for arm in self._arms:
                    arm.configure_watchdog()
            except BaseException:
                self._shutdown_buses(raise_errors=False)
                raise
            self._stop_sender.clear()
            self._sender = threading.Thread(target=self._send_loop, name=f"yam-sender-{self.config.name}",
                                            daemon=True)
            self._sender.start()

    def enable(self) -> None:
        """Enable every arm holding its current pose. Refused while faults are latched. The servo loop's deadline
        (`command_timeout_s`) starts with the first command()."""
        with self._bus_lock, self._lock:
            self._require_connected()
            self._settle_in_flight()
            self._refuse_if_faulted("enable")
            for arm in self._arms:
                others = [a for a in self._arms if a is not arm]
                try:
                    # The sender waits for the buses meanwhile: the other arms are fed between this arm's motors.
                    arm.enable(keep_alive=functools.partial(self._cycle, others))
                    self._refuse_if_faulted("enable")  # an arm fed meanwhile may have faulted
                except RobotFault:
                    self._halt_enabled()
                    raise
            self._last_command_at = None

    def disable(self) -> None:
        """All motors limp. Safe after faults and repeatedly; silent motors are not an error here."""
        with self._bus_lock, self._lock:
            self._last_command_at = None
            self._in_flight.clear()  # sent; their answers no longer matter
            failed: list[str] = []
            for arm in self._arms:  # every arm is tried, whatever the others' buses do
                try:
                    arm.disable()
                except (can.CanError, OSError) as exc:
                    log.error("arm '%s': disable failed on its bus: %s", arm.config.name, exc)
                    failed.append(f"arm '{arm.config.name}': {type(exc).__name__}: {exc}")
            if failed:
                raise RobotError(f"disable could not reach the motors ({'; '.join(failed)}); they go to damping "
                                 f"mode when their watchdog expires")

    def close(self) -> None:
        """Stop and join the sender, disable every motor, close the buses."""
        self._join_sender()  # without the locks: the sender finishes its cycle with them
        with self._bus_lock, self._lock:
            try:
                self.disable()
            finally:
                self._shutdown_buses(raise_errors=True)

    @property
    def sender_running(self) -> bool:
        """Whether the background sender thread is alive."""
        thread = self._sender
        return thread is not None and thread.is_alive()

    def clear_faults(self) -> None:
        """Forget latched faults (after the cause is fixed). Call `enable()` afterwards to drive again."""
        with self._lock:
            for arm in self._arms:
                arm.clear_faults()

    # -- cycle ---------------------------------------------------------------------------------------------------
    def command(self, positions: F64, velocities: F64 | None = None) -> None:
        """Check the targets (and planned velocities) and store them; the sender carries them to the motors on its
        next cycle, the velocities as v_des while fresh. Raises a fault the sender latched since (FaultsLatched
        naming it)."""
        with self._lock:
            self._require_connected()
            self._refuse_if_faulted("command")
            arr = self.check_command(positions)
            vel = None if velocities is None else self.check_velocities(velocities)
            targets = [arm.prepare(arr[sl]) for arm, sl in zip(self._arms, self._slices, strict=True)]
            v_des = [None if vel is None else arm.prepare_velocities(vel[sl])
                     for arm, sl in zip(self._arms, self._slices, strict=True)]
            for arm, arm_targets, arm_v in zip(self._arms, targets, v_des, strict=True):
                arm.set_target(arm_targets, arm_v)
            self._last_command_at = time.monotonic()
        if self.options.send_mode == "tick":
            self._caller_io("command", functools.partial(self._send_cycle, wait=False))

    def hold(self) -> None:
        """Hold every motor at its measured position (no limit check: a joint resting on a stop may read just
        outside its limits, and holding it there is exactly right). Like command(), it only stores. A deliberate
        hold ends the servo deadline: the sender keeps this pose until the next command()."""
        with self._lock:
            self._require_connected()
            self._refuse_if_faulted("hold")
            for arm in self._arms:
                arm.set_hold()
            self._last_command_at = None
        if self.options.send_mode == "tick":
            self._caller_io("hold", functools.partial(self._send_cycle, wait=False))

    def read_state(self) -> JointState:
        """The cached feedback of the sender's latest replies (the timestamp is the oldest motor's reply). Tick
        mode: the replies to the last command()/hold() are taken in first (faults they show are raised here)."""
        if self._in_flight:
            self._caller_io("read_state", self._settle_in_flight)
        with self._lock:
            self._require_connected()
            self._refuse_if_faulted("read_state")
            parts = [arm.state() for arm in self._arms]
            return JointState(
                positions=np.concatenate([p[0] for p in parts]),
                velocities=np.concatenate([p[1] for p in parts]),
                efforts=np.concatenate([p[2] for p in parts]),
                timestamp=min(p[3] for p in parts),
                names=self.joint_names,
            )

    def status(self) -> RobotStatus:
        with self._lock:
            temps: dict[str, float] = {}
            for arm in self._arms:
                temps.update(arm.temperatures())
            return RobotStatus(
                enabled=bool(self._arms) and all(arm.enabled for arm in self._arms),
                faults=tuple(f for arm in self._arms for f in arm.faults),
                temperatures_c=temps,
            )

    def actuation_report(self, reset: bool = False) -> ActuationReport | None:
        """Gravity feed-forward per joint (mean/max |tau|) and each gripper's grasp state since the last reset."""
        with self._lock:
            if not self._arms:
                return None
            joints: list[str] = []
            means: list[float] = []
            maxes: list[float] = []
            grippers = []
            for arm in self._arms:
                mean, peak, _ = arm.feedforward_stats()
                for i, name in enumerate(arm.config.joints):
                    joints.append(name)
                    means.append(float(mean[i]))
                    maxes.append(float(peak[i]))
                grasp = arm.grasp_report()
                if grasp is not None:
                    grippers.append(grasp)
                if reset:
                    arm.reset_actuation_stats()
            return ActuationReport(tuple(joints), tuple(means), tuple(maxes), tuple(grippers))

    # -- internals -----------------------------------------------------------------------------------------------
    def _arm_feedforward(self, arm: ArmConfig) -> FeedForward | None:
        """The passed-in hook, else this arm's gravity compensation when its config turns it on."""
        if self._feedforward is not None:
            return self._feedforward
        if not arm.gravity_compensation:
            return None
        return ArmGravity(gravity_config(arm), arm.gripper_limits)

    # -- the sender ----------------------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        """Cycles at `send_hz` until close(). A cycle that runs late is not caught up (no bursts): the period
        restarts from then. Tick mode: asleep while command()/hold() cycle, cycling once they have not for
        `keepalive_gap_s`."""
        period = 1.0 / self.options.send_hz
        gap = self.options.keepalive_gap_s if self.options.send_mode == "tick" else 0.0
        next_at = time.monotonic()
        while not self._stop_sender.is_set():
            quiet_until = self._last_caller_cycle_at + gap
            now = time.monotonic()
            if now < quiet_until:  # the caller is feeding the motors: look again when its gap would end
                if self._stop_sender.wait(quiet_until - now):
                    return
                next_at = time.monotonic()
                continue
            try:
                self._send_cycle()
            except Exception as exc:  # a bug or a dead bus: name it on every arm, stop what can be stopped
                self._sender_failed(exc)
                return
            next_at += period
            delay = next_at - time.monotonic()
            if delay <= 0:
                next_at = time.monotonic()
            elif self._stop_sender.wait(delay):
                return

    def _caller_io(self, what: str, io: Callable[[], None]) -> None:
        """Tick mode: bus I/O in the calling thread (a cycle posted, or the replies in flight taken in). A bus
        failure is latched as the sender's would be, and raised as the latched fault (naming it)."""
        try:
            with self._bus_lock:
                io()
        except Exception as exc:
            self._stop_sender.set()  # no gap-filling on a failed bus either, as in thread mode
            self._sender_failed(exc, f"the bus I/O of {what}() (tick mode)")
            with self._lock:
                self._refuse_if_faulted(what)
            raise
        if what != "read_state":
            with self._lock:
                self.caller_cycles += 1
            self._last_caller_cycle_at = time.monotonic()

    def _send_cycle(self, wait: bool = True) -> None:
        """One cycle: deadline check and frames built under the state lock, bus I/O without it, replies taken
        in under it again (`wait`), or left in flight for the next bus user. A fault on one arm stops the other
        arms too (they hold where they are)."""
        with self._bus_lock:
            if self._stop_sender.is_set():
                return
            with self._lock:
                self._check_servo_deadline()
            self._cycle(self._arms, wait)
            with self._lock:
                self.sender_cycles += 1

    def _cycle(self, arms: Sequence[YamArm], wait: bool = True) -> None:
        """One cycle for `arms` (the caller holds the buses). Faults are latched on their arm, never raised: the
        next command() or read_state() raises them. Replies still in flight are taken in first (they are the
        feedback this cycle's feed-forward and force limit start from)."""
        self._settle_in_flight()
        with self._lock:
            plans: list[tuple[YamArm, list[Request]]] = []
            for arm in arms:
                try:
                    requests = arm.cycle_requests()
                except RobotError as exc:  # the feed-forward hook failed: stop, holding without it
                    arm.latch_and_stop([RobotFault(arm.config.name, "feedforward_error", str(exc))], ())
                    self._halt_enabled()
                    requests = arm.cycle_requests()
                if requests:
                    plans.append((arm, requests))
        in_flight = [(arm, arm.post(requests)) for arm, requests in plans]
        if wait:
            self._settle(in_flight)
        else:
            self._in_flight = in_flight

    def _settle_in_flight(self) -> None:
        """Take in the replies of a cycle posted without waiting (the caller holds the buses): those that have
        arrived, without waiting or resending, so the servo loop never waits on the bus. A motor that missed a
        tick is asked again by the next one; only silence beyond `silence_timeout_s` is a fault, as always."""
        if self._in_flight:
            in_flight, self._in_flight = self._in_flight, []
            self._settle(in_flight, wait=False)

    def _settle(self, in_flight: list[tuple[YamArm, Exchange]], wait: bool = True) -> None:
        """Wait for a cycle's replies (or take those in, `wait` False; bus I/O, no state lock) and take them in
        (under it)."""
        outcomes = [(arm, ex, arm.collect(ex, wait)) for arm, ex in in_flight]
        with self._lock:
            faulted = False
            for arm, ex, silence in outcomes:
                try:
                    arm.settle(ex, silence)
                except RobotFault:
                    faulted = True
            if faulted:
                self._halt_enabled()

    def _check_servo_deadline(self) -> None:
        """The servo loop's deadline: enabled arms with no command() for `command_timeout_s` since the last one
        (no hold() in between) stop (every motor holds its measured position) with `servo_loop_stalled` latched."""
        last = self._last_command_at
        if last is None:
            return
        idle = time.monotonic() - last
        timeout = self.options.command_timeout_s
        if idle <= timeout:
            return
        self._last_command_at = None
        for arm in self._arms:
            if arm.enabled:
                arm.latch_and_stop([RobotFault(
                    arm.config.name, SERVO_LOOP_STALLED,
                    f"no command() for {idle:.2f} s while tracking (command_timeout_s {timeout:g} s): the servo loop "
                    f"stopped calling; every motor of arm '{arm.config.name}' holds its measured position")], ())

    def _halt_enabled(self) -> None:
        for arm in self._arms:
            if arm.enabled:
                arm.halt()

    def _sender_failed(self, exc: Exception, who: str = "the background sender") -> None:
        """The sender cannot go on: latch `sender_failed` on every arm and try a stop. The motors get no more
        frames, so their watchdogs put them in damping mode when it expires."""
        log.error("YAM sender stopped (%s): %s: %s", who, type(exc).__name__, exc, exc_info=exc)
        with self._bus_lock, self._lock:
            self._last_command_at = None
            self._in_flight.clear()
            for arm in self._arms:
                arm.faults.append(FaultRecord(
                    arm.config.name, "sender_failed",
                    f"{who} stopped ({type(exc).__name__}: {exc}); the motors get no more frames "
                    f"and go to damping mode after their {arm.config.watchdog_ms:g} ms watchdog"))
                try:
                    arm.safe_stop(())
                except Exception:  # best effort on a bus that just failed
                    log.exception("arm '%s': stop after the sender failure failed", arm.config.name)

    def _join_sender(self) -> None:
        thread = self._sender
        if thread is None:
            return
        self._stop_sender.set()
        thread.join(timeout=5.0)
        self._sender = None
        if thread.is_alive():
            raise RobotError("the YAM sender thread did not stop within 5 s")

    def _refuse_if_faulted(self, what: str) -> None:
        for arm in self._arms:
            if arm.faults:
                first = arm.faults[0]
                raise FaultsLatched(first.joint, first.code,
                                    f"{what} refused: fault latched ({first.message}); call clear_faults() and "
                                    f"then enable()")

    def _require_connected(self) -> None:
        if not self._arms:
            raise RobotCommandError("YamRobot is not connected (call connect())")

    def _shutdown_buses(self, raise_errors: bool) -> None:
        errors = []
        for bus in self._buses:
            try:
                bus.shutdown()
            except (can.CanError, OSError) as exc:
                errors.append(exc)
        self._buses.clear()
        self._arms.clear()
        self._slices.clear()
        if errors and raise_errors:
            raise RobotError(f"closing CAN buses failed: {errors}")


@contextmanager
def open_arm(config: RobotConfig, arm_name: str, *, zero_offsets: Sequence[float] | None = None,
             options: YamOptions | None = None, bus_factory: BusFactory = open_bus,
             feedforward: FeedForward | None = None) -> Iterator[YamArm]:
    """One arm alone on its bus, watchdog programmed, motors not enabled; disabled (limp) and closed on exit.

    For the calibration procedures, which work arm by arm in motor units and must not depend on the calibration
    they are measuring (so no rig calibration is applied here; `zero_offsets` only when the caller wants them;
    no feed-forward unless `feedforward` is given).
    """
    arm_cfg = next((a for a in config.arms if a.name == arm_name), None)
    if arm_cfg is None:
        raise RobotCommandError(f"no arm {arm_name!r} in {config.source or config.name} (arms: "
                                f"{[a.name for a in config.arms]})")
    bus = bus_factory(arm_cfg)
    try:
        arm = YamArm(arm_cfg, bus, config.limits, options, feedforward, zero_offsets=zero_offsets)
        try:
            arm.configure_watchdog()
            yield arm
        finally:
            arm.disable()
    finally:
        bus.shutdown()
