"""One YAM arm: six joint motors and a gripper motor on one CAN bus, driven in MIT mode.

Safety decisions, and why:
- Every reply's status is decoded. Anything but "enabled" while we drive the arm is a fault that names the joint
  and the code; the arm then stops in a controlled way: the healthy motors hold their measured position (an MIT
  command there with the configured gains, so nothing drops), the faulted motors are disabled. The fault is
  latched: commands are refused until `clear_faults()` and `enable()` are called on purpose. There is no
  automatic recovery: an arm re-enabled on its own has swung violently on other stacks.
- Enabling never jumps: clear errors, read the positions, refuse when a joint reads far outside its limits (a
  wrong zero offset), then per motor enable and immediately command the position just measured.
- The gripper is driven only with calibrated limits; targets are clipped to the stroke in normalized space.
- The motor-side watchdog (register 9) is programmed at connect, so a dead host puts the motors in damping mode
  instead of leaving them on their last command.

Two position spaces: *motor* positions are what the motors report and what MIT frames carry; *joint* angles are
what the robot interface speaks. They differ by the measured zero offsets (`zero_offsets`, from the rig
calibration file): joint angle = motor reading - offset, motor target = joint target + offset. The gripper has no
offset (its closed/open motor positions already say where its stroke is). Everything that talks to the motors
(holding, safe stops, the calibration procedures' `command_motors`) stays in motor space, so a stop never mixes
the two.

Gravity compensation is not applied yet: `feedforward` is the hook for per-motor feed-forward torques.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import can
import numpy as np
import numpy.typing as npt

from robot_client.config import ArmConfig, JointLimits
from robot_client.robot import FaultRecord, RobotCommandError, RobotError, RobotFault
from robot_client.yam import protocol as dm
from robot_client.yam.gripper import GripperMap, gripper_map_for
from robot_client.yam.transport import Exchange, NoReplyError, Reply, Request, Transport, TransportConfig

F64 = npt.NDArray[np.float64]

# (arm name, measured joint angles (zero offsets applied; gripper in motor rad), measured motor velocities)
# -> feed-forward torque per motor (N m).
FeedForward = Callable[[str, F64, F64], F64]


@dataclass(frozen=True)
class YamOptions:
    """Timing and safety knobs of the driver (defaults match the vendor's 10 ms reply timeout)."""

    reply_timeout_s: float = 0.010
    # Resends per command cycle before a silent motor is a fault.
    retries: int = 2
    # Resends for setup frames (clear error, enable, registers), where a little more patience costs nothing.
    setup_retries: int = 5
    send_attempts: int = 3
    # Refuse to enable when a joint reads this far (rad) outside its limits: the zero offset is wrong.
    startup_limit_tolerance: float = 0.1

    def transport(self) -> TransportConfig:
        return TransportConfig(reply_timeout_s=self.reply_timeout_s, retries=self.retries,
                               send_attempts=self.send_attempts)


class FaultsLatched(RobotFault):
    """A command or enable was refused because an earlier fault has not been cleared with clear_faults()."""


@dataclass
class _Motor:
    index: int
    name: str
    motor_id: int
    motor_type: str
    limits: dm.MotorLimits
    kp: float
    kd: float
    feedback: dm.Feedback | None = None
    position: float | None = None  # unwrapped motor position
    received_at: float = 0.0
    enabled: bool = False


class YamArm:
    """One arm on one bus. Order everywhere: the arm's joints, then the gripper (`ArmConfig.names`).

    Not thread-safe; `YamRobot` serializes access.
    """

    def __init__(self, config: ArmConfig, bus: can.BusABC, joint_limits: Mapping[str, JointLimits],
                 options: YamOptions | None = None, feedforward: FeedForward | None = None,
                 zero_offsets: Sequence[float] | None = None) -> None:
        """`zero_offsets`: per joint (gripper excluded), motor rad; None = the motors' own zeros are right."""
        self.config = config
        self.options = options or YamOptions()
        self.transport = Transport(bus, self.options.transport())
        self.joint_limits = joint_limits
        self.feedforward = feedforward
        kp = (*config.kp, config.gripper_kp)
        kd = (*config.kd, config.gripper_kd)
        self.motors = [
            _Motor(index=i, name=name, motor_id=mid, motor_type=mtype, limits=dm.motor_limits(mtype),
                   kp=kp[i], kd=kd[i])
            for i, (name, mid, mtype) in enumerate(zip(config.names, config.motor_ids, config.motor_types,
                                                        strict=True))
        ]
        self.gripper_index = len(config.joints)
        offsets = [0.0] * len(config.joints) if zero_offsets is None else [float(v) for v in zero_offsets]
        if len(offsets) != len(config.joints) or not np.isfinite(offsets).all():
            raise RobotError(f"arm '{config.name}': zero_offsets must be {len(config.joints)} finite numbers (one "
                             f"per joint {list(config.joints)}), got {list(offsets)}")
        self.zero_offsets: F64 = np.array([*offsets, 0.0], dtype=np.float64)  # gripper last, never offset
        self.gripper_map: GripperMap | None = None
        if config.gripper_limits is not None:
            self.gripper_map = gripper_map_for(config, self.motors[self.gripper_index].limits.p_max)
        self.faults: list[FaultRecord] = []
        self.enabled = False
        # Motor positions a hold keeps (latched at the first hold after a command; see prepare_hold).
        self._hold_pose: F64 | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.names

    # -- setup ---------------------------------------------------------------------------------------------------
    def configure_watchdog(self) -> None:
        """Write register 9 (motor watchdog) from `watchdog_ms` on every motor, in RAM only (no flash wear)."""
        value = dm.watchdog_register_value(self.config.watchdog_ms)
        requests = [self._register_request(m, dm.pack_register_write(m.motor_id, dm.WATCHDOG_REGISTER, value),
                                           dm.RegisterOp.WRITE, dm.WATCHDOG_REGISTER) for m in self.motors]
        replies = self._exchange(requests, self.options.setup_retries, "watchdog register write")
        faults = []
        for m in self.motors:
            echoed = dm.unpack_register(replies[m.motor_id].data).as_uint()
            if echoed != value:
                faults.append(RobotFault(m.name, "watchdog_config", f"wrote timeout register {value}, motor "
                                                                     f"reports {echoed}"))
        if faults:
            self._fail(faults)

    def enable(self) -> None:
        """Clear errors, check positions, then enable each motor holding where it is (never a jump)."""
        self._refuse_if_faulted("enable")
        self.gripper_map = gripper_map_for(self.config, self.motors[self.gripper_index].limits.p_max)
        self.enable_holding()

    def enable_holding(self) -> None:
        """`enable()` without requiring a calibrated gripper: for the gripper calibration, which drives the gripper
        motor itself (`command_motors`) while every joint holds. Same checks, same no-jump enabling."""
        self._refuse_if_faulted("enable")
        clear = [self._special_request(m, dm.SpecialCommand.CLEAR_ERROR) for m in self.motors]
        self._absorb(self._exchange(clear, self.options.setup_retries, "clear error"))
        faults = [f for m in self.motors if (f := self._status_fault(m, allow_disabled=True)) is not None]
        if faults:
            self._fail(faults)
        self._check_startup_limits()
        for m in self.motors:
            self._absorb(self._exchange([self._special_request(m, dm.SpecialCommand.ENABLE)],
                                        self.options.setup_retries, "enable"))
            fault = self._status_fault(m, allow_disabled=False)
            if fault is not None:
                self._fail([fault])
            m.enabled = True
            assert m.position is not None
            self._absorb(self._exchange([self._mit_request(m, m.position, float(self._feedforward()[m.index]))],
                                        self.options.setup_retries, "hold command"))
            fault = self._status_fault(m, allow_disabled=False)
            if fault is not None:
                self._fail([fault])
        self.enabled = True
        self._hold_pose = None

    def disable(self) -> tuple[str, ...]:
        """Disable every motor (limp). Never raises for silent motors: returns their names instead."""
        self.enabled = False
        requests = [self._special_request(m, dm.SpecialCommand.DISABLE) for m in self.motors]
        ex = self.transport.post(requests)
        silent: tuple[str, ...] = ()
        try:
            self.transport.wait(ex)
        except NoReplyError as exc:
            silent = tuple(self._by_id(mid).name for mid in exc.missing)
        self._absorb(ex.replies)
        for m in self.motors:
            m.enabled = False
        return silent

    # -- calibration support (motor space) -------------------------------------------------------------------------
    def read_limp(self) -> F64:
        """Every motor's position (motor rad), read while the motors stay disabled (limp).

        Each motor is sent the disable command, which it answers with a feedback frame: nothing is energized, so
        nothing can move because of us (a motor that was enabled goes limp). Silence or an error status is a
        fault naming the joint (an error status would make the reading untrustworthy).
        """
        self._refuse_if_faulted("read")
        self.enabled = False
        requests = [self._special_request(m, dm.SpecialCommand.DISABLE) for m in self.motors]
        self._absorb(self._exchange(requests, self.options.setup_retries, "disable (limp read)"))
        for m in self.motors:
            m.enabled = False
        faults = [f for m in self.motors if (f := self._status_fault(m, allow_disabled=True)) is not None]
        if faults:
            self._fail(faults)
        return self.motor_positions()

    def save_motor_zero(self, names: Collection[str]) -> None:
        """Send save-zero (0xFE) to the named motors: their current position becomes 0, stored in motor flash.

        Refused while the arm is enabled: a motor holding an MIT target whose zero moves under it would jump to
        the old number. Flash wears, so this is for a deliberate re-zeroing, never routine start-up.
        """
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            raise RobotCommandError(f"arm '{self.config.name}': no motors {unknown} (motors {list(self.names)})")
        if self.enabled or any(m.enabled for m in self.motors):
            raise RobotCommandError(f"arm '{self.config.name}': save-zero refused while motors are enabled; "
                                    f"disable the arm first")
        self._refuse_if_faulted("save zero")
        chosen = [m for m in self.motors if m.name in names]
        for m in chosen:
            m.position = None  # the reading restarts at the new zero: do not unwrap against the old one
        self._absorb(self._exchange([self._special_request(m, dm.SpecialCommand.SAVE_ZERO) for m in chosen],
                                    self.options.setup_retries, "save zero"))

    def motor_positions(self) -> F64:
        """Latest measured motor positions (motor rad, unwrapped, no zero offsets, gripper not normalized)."""
        return self._measured_motor_positions()

    def command_motors(self, positions: F64, *, kp: F64 | None = None, kd: F64 | None = None,
                       extra_torque: F64 | None = None) -> None:
        """One MIT cycle in motor units, for calibration procedures: no zero offsets, no gripper map.

        `kp`/`kd` default to the configured gains; `extra_torque` is added to the feed-forward. The gripper
        calibration uses it to hold every joint at its measured position (configured gains) while the gripper
        motor gets kp = 0, a small kd and a torque. Replies are checked like any command cycle.
        """
        self._refuse_if_faulted("command")
        if not self.enabled:
            raise RobotCommandError(f"arm '{self.config.name}': not enabled (call enable_holding())")
        n = len(self.motors)
        given = {"positions": positions, "kp": kp, "kd": kd, "extra_torque": extra_torque}
        defaults = {"kp": [m.kp for m in self.motors], "kd": [m.kd for m in self.motors], "extra_torque": [0.0] * n}
        arrays: dict[str, F64] = {}
        for label, value in given.items():
            arr = np.asarray(defaults.get(label) if value is None else value, dtype=np.float64)
            if arr.shape != (n,) or not np.isfinite(arr).all():
                raise RobotCommandError(f"arm '{self.config.name}': {label} must be {n} finite numbers, got {arr!r}")
            arrays[label] = arr
        if (arrays["kp"] < 0).any() or (arrays["kd"] < 0).any():
            raise RobotCommandError(f"arm '{self.config.name}': gains must be >= 0")
        for m in self.motors:
            if abs(arrays["positions"][m.index]) > m.limits.p_max:
                raise RobotCommandError(f"{m.name}: motor target {arrays['positions'][m.index]:.3f} rad beyond the "
                                        f"+-{m.limits.p_max} rad MIT range")
        torque = self._feedforward() + arrays["extra_torque"]
        requests = [self._mit_request(m, float(arrays["positions"][m.index]), float(torque[m.index]),
                                      kp=float(arrays["kp"][m.index]), kd=float(arrays["kd"][m.index]))
                    for m in self.motors]
        self.finish(self.post(requests))

    def clear_faults(self) -> None:
        """Forget latched faults. Motors stay as they are; `enable()` is still required to drive again."""
        self.faults.clear()

    # -- command cycle -------------------------------------------------------------------------------------------
    def prepare(self, positions: F64) -> list[Request]:
        """Encode one MIT frame per motor for targets in robot units (joints rad, gripper 0..1).

        Validation only (nothing is sent), so a multi-arm command can be refused before any arm moves. Limits
        are the caller's job (`Robot.check_command`); this refuses only what the motors cannot represent.
        """
        self._refuse_if_faulted("command")
        if not self.enabled:
            raise RobotCommandError(f"arm '{self.config.name}': not enabled (call enable())")
        arr = np.asarray(positions, dtype=np.float64)
        if arr.shape != (len(self.motors),):
            raise RobotCommandError(f"arm '{self.config.name}': expected {len(self.motors)} targets, "
                                    f"got shape {arr.shape}")
        self._hold_pose = None  # a new target ends any hold: the next hold latches where the arm is then
        targets = arr + self.zero_offsets  # joint angle + offset = motor position (gripper offset is 0)
        assert self.gripper_map is not None  # set by enable()
        if not np.isfinite(arr).all():
            bad = self.motors[int(np.flatnonzero(~np.isfinite(arr))[0])].name
            raise RobotCommandError(f"{bad}: target is not finite")
        targets[self.gripper_index] = self.gripper_map.to_motor(float(arr[self.gripper_index]))
        for m in self.motors:
            if abs(targets[m.index]) > m.limits.p_max:
                raise RobotCommandError(f"{m.name}: motor target {targets[m.index]:.3f} rad beyond the "
                                        f"+-{m.limits.p_max} rad MIT range")
        return self._mit_requests(targets)

    def prepare_hold(self) -> list[Request]:
        """MIT frames holding every motor where it was when the hold began (stop where the arm is).

        The pose is latched at the first hold after a command (or enable) and reused while holds continue:
        re-targeting the measured position on every frame would let the arm creep, since nothing then resists
        the small velocity the MIT encoding gives a zero velocity target (or gravity, or a push)."""
        self._refuse_if_faulted("hold")
        if not self.enabled:
            raise RobotCommandError(f"arm '{self.config.name}': not enabled (call enable())")
        if self._hold_pose is None:
            self._hold_pose = self._measured_motor_positions()
        return self._mit_requests(self._hold_pose)

    def post(self, requests: Sequence[Request]) -> Exchange:
        return self.transport.post(requests)

    def finish(self, ex: Exchange) -> None:
        """Collect a cycle's replies, update the state, and fault on silence or any non-enabled status."""
        faults: list[RobotFault] = []
        try:
            self.transport.wait(ex)
        except NoReplyError as exc:
            faults.extend(self._no_reply_fault(self._by_id(mid), exc, "MIT command") for mid in exc.missing)
        self._absorb(ex.replies)
        for m in self.motors:
            if m.motor_id in ex.replies:
                fault = self._status_fault(m, allow_disabled=False)
                if fault is not None:
                    faults.append(fault)
        if faults:
            faults.sort(key=lambda f: self.names.index(f.joint))
            self._fail(faults)

    def command(self, positions: F64) -> None:
        """One command cycle for this arm alone (`YamRobot` interleaves arms with prepare/post/finish)."""
        self.finish(self.post(self.prepare(positions)))

    # -- stopping ------------------------------------------------------------------------------------------------
    def safe_stop(self, faulted: Collection[str] = ()) -> list[RobotFault]:
        """Controlled stop: healthy enabled motors hold their measured position, `faulted` motors are disabled.

        Best effort and never raises: problems found on the way are returned as further faults.
        """
        self.enabled = False
        extra: list[RobotFault] = []
        to_disable = [m for m in self.motors if m.name in faulted]
        holders = [m for m in self.motors if m.name not in faulted and m.enabled and m.position is not None]
        if holders:
            try:
                ff = self._feedforward()
            except RobotError:
                ff = np.zeros(len(self.motors))  # a broken hook must not prevent the stop
            ex = self.transport.post([self._mit_request(m, p, float(ff[m.index]))
                                      for m in holders if (p := m.position) is not None])
            try:
                self.transport.wait(ex)
            except NoReplyError as exc:
                extra.extend(self._no_reply_fault(self._by_id(mid), exc, "hold command") for mid in exc.missing)
            self._absorb(ex.replies)
            for m in holders:
                if m.motor_id in ex.replies and (fault := self._status_fault(m, allow_disabled=False)) is not None:
                    extra.append(fault)
                    to_disable.append(m)
        if to_disable:
            ex = self.transport.post([self._special_request(m, dm.SpecialCommand.DISABLE) for m in to_disable])
            try:
                self.transport.wait(ex)
            except NoReplyError:
                pass  # already reported; a silent motor cannot be told anything
            self._absorb(ex.replies)
            for m in to_disable:
                m.enabled = False
        return extra

    def halt(self) -> None:
        """Stop because another arm faulted: hold everything, accept no commands until re-enabled."""
        for fault in self.safe_stop(()):
            self.faults.append(FaultRecord(fault.joint, fault.code, fault.detail))

    # -- state ---------------------------------------------------------------------------------------------------
    def state(self) -> tuple[F64, F64, F64, float]:
        """(positions, velocities, efforts, timestamp) from the latest feedback, in robot units.

        The timestamp is the oldest reply among the motors: the state is at least that fresh.
        """
        if self.gripper_map is None:
            raise RobotError(f"{self.config.gripper}: gripper not calibrated; cannot report its opening")
        missing = [m.name for m in self.motors if m.feedback is None]
        if missing:
            raise RobotError(f"no feedback yet from {missing}; call enable() first")
        pos = self._joint_positions()
        vel = np.array([m.feedback.velocity for m in self.motors if m.feedback is not None])
        eff = np.array([m.feedback.torque for m in self.motors if m.feedback is not None])
        g = self.gripper_index
        pos[g] = self.gripper_map.to_normalized(float(pos[g]))
        vel[g] = self.gripper_map.rate_to_normalized(float(vel[g]))
        return pos, vel, eff, min(m.received_at for m in self.motors)

    def temperatures(self) -> dict[str, float]:
        """Hottest of MOSFET and rotor temperature per joint (only motors heard from)."""
        return {m.name: max(m.feedback.mosfet_temp_c, m.feedback.rotor_temp_c)
                for m in self.motors if m.feedback is not None}

    def feedback(self, name: str) -> dm.Feedback | None:
        """Latest raw feedback of one joint (for diagnostics and calibration)."""
        return self.motors[self.names.index(name)].feedback

    # -- internals -----------------------------------------------------------------------------------------------
    def _by_id(self, motor_id: int) -> _Motor:
        return next(m for m in self.motors if m.motor_id == motor_id)

    def _joint_positions(self) -> F64:
        """Measured positions with the zero offsets applied (gripper still in motor rad)."""
        return self._measured_motor_positions() - self.zero_offsets

    def _measured_motor_positions(self) -> F64:
        missing = [m.name for m in self.motors if m.position is None]
        if missing:
            raise RobotError(f"no feedback yet from {missing}")
        return np.array([m.position for m in self.motors], dtype=np.float64)

    def _feedforward(self) -> F64:
        n = len(self.motors)
        if self.feedforward is None or any(m.feedback is None for m in self.motors):
            return np.zeros(n)
        vel = np.array([m.feedback.velocity for m in self.motors if m.feedback is not None])
        torques = np.asarray(self.feedforward(self.config.name, self._joint_positions(), vel),
                             dtype=np.float64)
        if torques.shape != (n,) or not np.isfinite(torques).all():
            raise RobotError(f"arm '{self.config.name}': feed-forward returned {torques!r}; expected {n} finite "
                             f"torques")
        return torques

    def _mit_request(self, m: _Motor, position: float, torque: float, *, kp: float | None = None,
                     kd: float | None = None) -> Request:
        data = dm.pack_mit_command(m.motor_type, position, 0.0, m.kp if kp is None else kp, m.kd if kd is None else kd,
                                   torque)
        return Request(key=m.motor_id, arbitration_id=dm.command_id(m.motor_id), data=data,
                       reply_id=dm.reply_id(m.motor_id))

    def _mit_requests(self, targets: F64) -> list[Request]:
        ff = self._feedforward()
        return [self._mit_request(m, float(targets[m.index]), float(ff[m.index])) for m in self.motors]

    def _special_request(self, m: _Motor, command: dm.SpecialCommand) -> Request:
        return Request(key=m.motor_id, arbitration_id=dm.command_id(m.motor_id),
                       data=dm.special_command_frame(command), reply_id=dm.reply_id(m.motor_id))

    def _register_request(self, m: _Motor, data: bytes, op: dm.RegisterOp, register: int) -> Request:
        def accept(reply: bytes) -> bool:
            return len(reply) == dm.FRAME_LENGTH and reply[0] == m.motor_id and reply[2] == op \
                and reply[3] == register

        return Request(key=m.motor_id, arbitration_id=dm.REGISTER_ID, data=data,
                       reply_id=dm.reply_id(m.motor_id), accept=accept)

    def _exchange(self, requests: list[Request], retries: int, what: str) -> dict[int, Reply]:
        """A setup exchange: silence is a fault (latched, arm stopped) naming the joints."""
        ex = self.transport.post(requests, retries)
        try:
            return self.transport.wait(ex)
        except NoReplyError as exc:
            self._absorb(ex.replies)
            self._fail([self._no_reply_fault(self._by_id(mid), exc, what) for mid in exc.missing])

    def _absorb(self, replies: Mapping[int, Reply]) -> None:
        """Decode feedback replies and update positions (unwrapped), feedback and timestamps."""
        for motor_id, reply in replies.items():
            m = self._by_id(motor_id)
            try:
                fb = dm.unpack_feedback(reply.data, m.motor_type)
            except dm.ProtocolError:
                continue
            m.feedback = fb
            m.position = dm.unwrap_position(m.position, fb.position, m.limits.p_max)
            m.received_at = reply.received_at

    def _status_fault(self, m: _Motor, allow_disabled: bool) -> RobotFault | None:
        fb = m.feedback
        if fb is None or fb.status == dm.StatusCode.ENABLED:
            return None
        if allow_disabled and fb.status == dm.StatusCode.DISABLED:
            return None
        return RobotFault(m.name, dm.status_name(fb.status),
                          f"status 0x{fb.status:X}: {dm.status_meaning(fb.status)} (motor id {m.motor_id}, "
                          f"MOSFET {fb.mosfet_temp_c:.0f} C, rotor {fb.rotor_temp_c:.0f} C)")

    def _no_reply_fault(self, m: _Motor, exc: NoReplyError, what: str) -> RobotFault:
        detail = f"; last send error: {exc.send_error}" if exc.send_error else ""
        return RobotFault(m.name, "no_reply",
                          f"motor id {m.motor_id} did not answer the {what} on reply id "
                          f"0x{dm.reply_id(m.motor_id):02X} after {exc.attempts} attempts of "
                          f"{exc.timeout_s * 1e3:.0f} ms{detail}; check its power and CAN wiring")

    def _check_startup_limits(self) -> None:
        tol = self.options.startup_limit_tolerance
        faults = []
        for m in self.motors[:self.gripper_index]:
            lim = self.joint_limits[m.name]
            assert m.position is not None
            angle = m.position - float(self.zero_offsets[m.index])
            if not lim.lower - tol <= angle <= lim.upper + tol:
                faults.append(RobotFault(
                    m.name, "joint_limit_violation",
                    f"reads {angle:.3f} rad, more than {tol} rad outside [{lim.lower}, {lim.upper}]: the "
                    f"motor's zero offset is probably wrong; measure it at the all-zero pose (`python -m calibration "
                    f"joints`) before enabling"))
        if faults:
            self._fail(faults)

    def _refuse_if_faulted(self, what: str) -> None:
        if self.faults:
            first = self.faults[0]
            raise FaultsLatched(first.joint, first.code,
                                f"{what} refused: fault latched ({first.message}); call clear_faults() and then "
                                f"enable()")

    def _fail(self, faults: Sequence[RobotFault]) -> NoReturn:
        """Latch `faults`, stop the arm in a controlled way and raise the first one."""
        for f in faults:
            self.faults.append(FaultRecord(f.joint, f.code, f.detail))
        for extra in self.safe_stop({f.joint for f in faults}):
            self.faults.append(FaultRecord(extra.joint, extra.code, extra.detail))
        raise faults[0]
