"""One YAM arm: six joint motors and a gripper motor on one CAN bus, driven in MIT mode.

Safety decisions, and why:
- Every reply's status is decoded. Anything but "enabled" while we drive the arm is a fault that names the joint
  and the code; the arm then stops in a controlled way: the healthy motors hold their measured position (an MIT
  command there with the configured gains, so nothing drops), the faulted motors are disabled. The fault is
  latched: commands are refused until `clear_faults()` and `enable()` are called on purpose. There is no
  automatic recovery: an arm re-enabled on its own has swung violently on other stacks.
- Enabling never jumps: clear errors, read the positions, refuse when a joint reads far outside its limits (a
  wrong zero offset), then per motor enable and immediately command the position just measured.
- Setup frames are as tolerant as the maker's driver (i2rt): clear-error is sent `clear_error_repeats` (3) times
  without requiring an answer (some firmware never answers it; positions and statuses then come from a frame
  that changes nothing: disable to a disabled motor, its hold to a holding one); enable is retried, with blind
  clears in between, while its reply shows an error; save-zero tolerates silence and is judged by reading the
  position back (|reading| < 0.01 rad). A motor that keeps an error is still a fault naming the code.
- The gripper is driven only with calibrated limits; targets are clipped to the stroke in normalized space.
- The motor-side watchdog (register 9) is programmed at connect, so a dead host puts the motors in damping mode
  instead of leaving them on their last command. The default is the factory 400 ms that the maker's driver keeps:
  frames go out from `YamRobot`'s background sender at 250 Hz whatever the servo loop does, so the watchdog only
  has to catch a dead process, and 400 ms survives any pause of a live one (a long GC, a swapped-out page);
  100 ms did not (a busy machine tripped it with the host alive).
- Silence: a cycle's frame is resent `retries` times; a motor is a `no_reply` fault once it has answered nothing
  for `silence_timeout_s` (0.1 s, 25 cycles), not at its first unanswered cycle, so a host that was not scheduled
  for a few tens of ms does not read as a dead motor. Replies queued while the host was late still count.
- Limit watch: every cycle (the sender's, or `command_motors`) a measured joint more than `limit_watch_margin`
  (0.1 rad, the maker's) beyond its limit is a `joint_limit_violation` fault naming the joint, the reading and the
  limit. Every motor then holds where it is: the motor is healthy, and letting it go limp would let gravity take
  the joint further out.

Two position spaces: *motor* positions are what the motors report and what MIT frames carry; *joint* angles are
what the robot interface speaks. They differ by the measured zero offsets (`zero_offsets`, from the rig
calibration file): joint angle = motor reading - offset, motor target = joint target + offset. The gripper has no
offset (its closed/open motor positions already say where its stroke is). Everything that talks to the motors
(holding, safe stops, the calibration procedures' `command_motors`) stays in motor space, so a stop never mixes
the two.

Every MIT frame built for a command or a hold (`_mit_requests`) carries two corrections computed at that moment
from the latest feedback, as the maker's driver applies them every cycle:
- the feed-forward torque from the `feedforward` hook: `YamRobot` installs the arm's gravity compensation there
  (`robot_client.yam.gravity_ff.ArmGravity`: the arm model's gravity torque at the measured joint angles, zero
  offsets applied, times the configured or calibrated factors, clipped), so the arm neither drops at enable nor
  tracks low; the |torque| per joint is accumulated for the episode report (`actuation_report`);
- the gripper force limit (`robot_client.gripper_force`): once the gripper stalls on an object, its frames run
  pure torque (kp = kd = 0, the configured force cap as torque toward the object) instead of kp x error up to the
  motor's full torque range. A hold keeps a grasp (the gripper holds its last commanded target, still capped)
  instead of letting go of the object.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import can
import numpy as np
import numpy.typing as npt

from robot_client.config import ArmConfig, JointLimits
from robot_client.gripper_force import GripperForceConfigError, GripperForceLimiter, force_config_for
from robot_client.robot import FaultRecord, GraspReport, RobotCommandError, RobotError, RobotFault
from robot_client.yam import protocol as dm
from robot_client.yam.gripper import GripperMap, gripper_map_for
from robot_client.yam.transport import Exchange, NoReplyError, Reply, Request, Transport, TransportConfig

F64 = npt.NDArray[np.float64]

# (arm name, measured joint angles (zero offsets applied; gripper in motor rad), measured motor velocities)
# -> feed-forward torque per motor (N m).
FeedForward = Callable[[str, F64, F64], F64]

# Fault code of a measured joint beyond its limit (at enable: a wrong zero; while running: the limit watch).
LIMIT_VIOLATION = "joint_limit_violation"
# Who sends the MIT frames (YamOptions.send_mode).
SEND_MODES = ("thread", "tick")
# |reading| (rad) a re-zeroed motor must show afterwards (the maker's set-zero check).
SAVE_ZERO_TOLERANCE = 0.01


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
    # While running, a measured joint this far (rad) beyond a limit stops the arm (the maker's 0.1 rad).
    limit_watch_margin: float = 0.1
    # Clear-error frames per clear, sent without waiting for answers (the maker's driver sends 3).
    clear_error_repeats: int = 3
    # Background sender (`YamRobot`): MIT frames per second to every motor, independent of the servo loop. The
    # maker's bus rate; 7 motors x 2 frames x ~130 bit x 250 Hz = 455 kbit/s, half of a 1 Mbit/s bus.
    send_hz: float = 250.0
    # The servo loop's deadline, enforced by the sender: with the arms enabled and no command() or hold() for this
    # long, the sender holds the measured position and latches `servo_loop_stalled`. 1 s: far above a healthy
    # loop's worst pause (GC, a slow camera read, a policy query: a few hundred ms, which must not stop a run),
    # and short enough that a dead loop is named within a second while the arm holds still.
    command_timeout_s: float = 1.0
    # A motor is `no_reply` once it has not answered for this long (each cycle still resends `retries` times).
    # Not at the first unanswered cycle: a host that was not scheduled for a few tens of ms (a busy deploy machine)
    # must not read as a dead motor. 0.1 s is 25 cycles, well inside the motors' 400 ms watchdog. 0 = the first
    # unanswered cycle faults.
    silence_timeout_s: float = 0.1
    # How long a commanded velocity stays the frames' v_des: four 200 Hz servo periods. Past it the servo loop is
    # late and the sender's repeated frames hold the last target with v_des 0.
    velocity_fresh_s: float = 0.02
    # Who carries the frames to the motors (`YamRobot`). "thread" (the default everywhere): the background sender
    # alone, at `send_hz`, whatever the servo loop does, as the maker's driver does it. "tick" (an option for a
    # loop with a process to itself, `robot_client.servo_process`): command() and hold() send them from the calling
    # thread and the next read_state() takes in the replies that have arrived, without waiting; the background
    # sender then only fills gaps: once nothing has been sent for `keepalive_gap_s` it cycles at `send_hz` again,
    # so the motor watchdog and the servo deadline are kept exactly as in "thread" mode, while in the steady state
    # no second thread competes with the loop for the interpreter lock, and each tick's target reaches the motors
    # at once instead of at the sender's next cycle (up to 4 ms later). Measured under load it did not keep the
    # loop's period better than "thread" (docs/benchmarks.md).
    send_mode: str = "thread"
    # "tick" mode: the loop is late once nothing was sent for this long (2.4 periods of a 200 Hz loop).
    keepalive_gap_s: float = 0.012

    def __post_init__(self) -> None:
        if self.send_mode not in SEND_MODES:
            raise ValueError(f"YamOptions.send_mode must be one of {list(SEND_MODES)}, got {self.send_mode!r}")
        checks = (
            ("reply_timeout_s", self.reply_timeout_s, 0.0005, 1.0),
            ("startup_limit_tolerance", self.startup_limit_tolerance, 0.0, 1.0),
            ("limit_watch_margin", self.limit_watch_margin, 0.0, 1.0),
            ("send_hz", self.send_hz, 10.0, 500.0),
            ("command_timeout_s", self.command_timeout_s, 0.05, 60.0),
            ("silence_timeout_s", self.silence_timeout_s, 0.0, 0.4),
            ("velocity_fresh_s", self.velocity_fresh_s, 0.0, 1.0),
            ("keepalive_gap_s", self.keepalive_gap_s, 0.001, 0.2),
        )
        for name, value, lo, hi in checks:
            if not (np.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"YamOptions.{name} must lie in [{lo:g}, {hi:g}], got {value}")
        for name, count, lo in (("retries", self.retries, 0), ("setup_retries", self.setup_retries, 0),
                                ("send_attempts", self.send_attempts, 1),
                                ("clear_error_repeats", self.clear_error_repeats, 1)):
            if not lo <= count <= 20:
                raise ValueError(f"YamOptions.{name} must be an integer in [{lo}, 20], got {count}")

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
                 zero_offsets: Sequence[float] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`zero_offsets`: per joint (gripper excluded), motor rad; None = the motors' own zeros are right.
        `clock`: the gripper force limiter's time base (seconds, monotonic)."""
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
        # Motor positions a hold keeps: the pose measured at enable, then latched at the first hold after a command
        # (see set_hold). After a safe stop it is the stop pose, which the sender keeps feeding to the motors still
        # enabled.
        self._hold_pose: F64 | None = None
        # Latest commanded motor-space targets (`set_target`); None while holding. The sender sends these.
        self._target: F64 | None = None
        # The servo's planned joint velocities for `_target` (motor rad/s, gripper 0) and when they were set: sent as
        # the MIT v_des while fresh (YamOptions.velocity_fresh_s), 0 after (see `_velocity_feedforward`).
        self._target_velocity: F64 | None = None
        self._target_set_at = 0.0
        self.clock = clock
        self.gripper_limiter: GripperForceLimiter | None = None
        gripper_kp = self.motors[self.gripper_index].kp
        if config.gripper_force_limit and gripper_kp > 0:
            try:
                force = force_config_for(config.gripper_type, config.gripper_max_force_n)
            except GripperForceConfigError as exc:
                raise RobotError(f"arm '{config.name}': {exc} (or set gripper_force_limit = false)") from None
            self.gripper_limiter = GripperForceLimiter(force, gripper_kp, self.motors[self.gripper_index].kd)
        self._gripper_target: float | None = None  # last commanded gripper motor target, before the force limit
        # |feed-forward| per motor over the frames built since reset_actuation_stats(): sum, max, frame count.
        self._ff_sum: F64 = np.zeros(len(self.motors))
        self._ff_max: F64 = np.zeros(len(self.motors))
        self._ff_frames = 0

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

    def enable(self, keep_alive: Callable[[], None] | None = None) -> None:
        """Clear errors, check positions, then enable each motor holding where it is (never a jump).

        `keep_alive` is called between motors: `YamRobot` feeds its other arms there, since they get no frames
        from the sender while this arm has the buses."""
        self._refuse_if_faulted("enable")
        self.gripper_map = gripper_map_for(self.config, self.motors[self.gripper_index].limits.p_max)
        self.enable_holding(keep_alive)

    def enable_holding(self, keep_alive: Callable[[], None] | None = None) -> None:
        """`enable()` without requiring a calibrated gripper: for the gripper calibration, which drives the gripper
        motor itself (`command_motors`) while every joint holds. Same checks, same no-jump enabling.

        After each motor is enabled, every motor enabled so far is sent its hold (the position measured before
        enabling), so none waits unfed for the rest of the arm, however slow the bus or the host."""
        self._refuse_if_faulted("enable")
        self._clear_and_read()
        self._check_startup_limits()
        pose = self._measured_motor_positions()
        for m in self.motors:
            if keep_alive is not None:
                keep_alive()
            self._enable_motor(m)
            m.enabled = True
            ff = self._feedforward()
            held = [h for h in self.motors if h.enabled]
            self._absorb(self._exchange([self._mit_request(h, float(pose[h.index]), float(ff[h.index])) for h in held],
                                        self.options.setup_retries, "hold command"))
            faults = [f for h in held if (f := self._status_fault(h, allow_disabled=False)) is not None]
            if faults:
                self._fail(faults)
        self.enabled = True
        self._hold_pose = pose
        self._target = None
        self._gripper_target = None
        if self.gripper_limiter is not None:
            self.gripper_limiter.reset()

    def disable(self) -> tuple[str, ...]:
        """Disable every motor (limp). Never raises for silent motors: returns their names instead."""
        self.enabled = False
        self._target = self._hold_pose = None
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

        As the maker's driver does, silence after save-zero is tolerated (some firmware does not answer it; one
        resend); what decides is the position read back afterwards with a disable frame: a motor that does not
        read within SAVE_ZERO_TOLERANCE of 0 is a `save_zero_failed` fault naming the joint and its reading.
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
        ex = self.transport.post([self._special_request(m, dm.SpecialCommand.SAVE_ZERO) for m in chosen], 1)
        try:
            self.transport.wait(ex)
        except NoReplyError:
            pass  # tolerated: the read-back below decides
        self._absorb(ex.replies)
        for m in chosen:
            m.position = None  # an answer may predate the new zero; the read-back starts afresh
        self._absorb(self._exchange([self._special_request(m, dm.SpecialCommand.DISABLE) for m in chosen],
                                    self.options.setup_retries, "read-back after save zero"))
        faults = []
        for m in chosen:
            fault = self._status_fault(m, allow_disabled=True)
            if fault is None and m.position is not None and abs(m.position) >= SAVE_ZERO_TOLERANCE:
                fault = RobotFault(m.name, "save_zero_failed",
                                   f"reads {m.position:+.4f} rad after save-zero (expected |reading| < "
                                   f"{SAVE_ZERO_TOLERANCE} rad; motor id {m.motor_id}); the zero was not stored")
            if fault is not None:
                faults.append(fault)
        if faults:
            self._fail(faults)

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
    def prepare(self, positions: F64) -> F64:
        """Motor-space targets for targets in robot units (joints rad, gripper 0..1), checked.

        Validation only (nothing is sent, nothing changes), so a multi-arm command can be refused before any arm
        takes its target (`set_target`). Limits are the caller's job (`Robot.check_command`); this refuses only
        what the motors cannot represent.
        """
        self._refuse_if_faulted("command")
        if not self.enabled:
            raise RobotCommandError(f"arm '{self.config.name}': not enabled (call enable())")
        arr = np.asarray(positions, dtype=np.float64)
        if arr.shape != (len(self.motors),):
            raise RobotCommandError(f"arm '{self.config.name}': expected {len(self.motors)} targets, "
                                    f"got shape {arr.shape}")
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
        return targets

    def prepare_velocities(self, velocities: F64) -> F64:
        """Motor-space v_des for joint velocities in robot units (the servo's plan), checked: finite, of arm size,
        within each motor type's MIT velocity range. The gripper gets 0: its force limiter owns its frames."""
        arr = np.asarray(velocities, dtype=np.float64)
        if arr.shape != (len(self.motors),):
            raise RobotCommandError(f"arm '{self.config.name}': expected {len(self.motors)} velocities, "
                                    f"got shape {arr.shape}")
        out = arr.copy()
        out[self.gripper_index] = 0.0
        for m in self.motors:
            v = float(out[m.index])
            if not math.isfinite(v) or abs(v) > m.limits.v_max:
                raise RobotCommandError(f"{m.name}: velocity {v} rad/s not finite or beyond the +-{m.limits.v_max} "
                                        f"rad/s MIT range")
        return out

    def set_target(self, targets: F64, velocities: F64 | None = None) -> None:
        """Take motor-space `targets` (from `prepare`) as the arm's command, with the planned velocities (from
        `prepare_velocities`) when given; the frames carrying it are built per cycle (`cycle_requests`), with the
        feed-forward and force limit of that moment. Ends any hold."""
        self._refuse_if_faulted("command")
        if not self.enabled:
            raise RobotCommandError(f"arm '{self.config.name}': not enabled (call enable())")
        self._target = np.array(targets, dtype=np.float64)
        self._target_velocity = None if velocities is None else np.array(velocities, dtype=np.float64)
        self._target_set_at = self.clock()
        self._hold_pose = None  # a new target ends any hold: the next hold latches where the arm is then
        self._gripper_target = float(self._target[self.gripper_index])

    def set_hold(self) -> None:
        """Hold every motor where it was when the hold began (stop where the arm is).

        The pose is latched at the first hold after a command (or enable) and reused while holds continue:
        re-targeting the measured position on every frame would let the arm creep, since nothing then resists
        the small velocity the MIT encoding gives a zero velocity target (or gravity, or a push)."""
        self._refuse_if_faulted("hold")
        if not self.enabled:
            raise RobotCommandError(f"arm '{self.config.name}': not enabled (call enable())")
        self._target = None
        self._target_velocity = None
        self._latch_hold_pose()

    def _latch_hold_pose(self) -> F64:
        if self._hold_pose is None:
            self._hold_pose = self._measured_motor_positions()
            if self.gripper_limiter is not None and self.gripper_limiter.grasping and self._gripper_target is not None:
                # Keep the grasp: holding the jaws where they are would press with nothing and drop the object.
                self._hold_pose[self.gripper_index] = self._gripper_target
        return self._hold_pose

    def cycle_requests(self) -> list[Request]:
        """The frames of one cycle of the background sender (`YamRobot`).

        Enabled: every motor toward the latest target, or the latched hold pose while holding. After a stop:
        the stop pose to every motor still enabled, so the healthy motors keep holding (and their watchdogs fed)
        until `disable()`. Nothing once every motor is disabled. May raise RobotError from the feed-forward hook.
        """
        if self.enabled:
            return self._mit_requests(self._target if self._target is not None else self._latch_hold_pose())
        pose = self._hold_pose
        if pose is None:
            return []
        ff = self._feedforward_or_zero()
        return [self._mit_request(m, float(pose[m.index]), float(ff[m.index]))
                for m in self.motors if m.enabled and np.isfinite(pose[m.index])]

    def post(self, requests: Sequence[Request]) -> Exchange:
        return self.transport.post(requests)

    def collect(self, ex: Exchange, wait: bool = True) -> NoReplyError | None:
        """Wait for a cycle's replies (resending to the silent, `retries` times), or with `wait` False take only
        those already in: bus I/O only, no arm state touched (so the sender can run it without holding the
        robot's state lock). Returns the silence, if any, for `settle`."""
        try:
            if wait:
                self.transport.wait(ex)
            else:
                self.transport.take(ex)
        except NoReplyError as exc:
            return exc
        return None

    def settle(self, ex: Exchange, silence: NoReplyError | None) -> None:
        """Take a cycle's replies in: update the state; fault on silence or any non-enabled status (that motor is
        disabled, the others hold) and, while enabled, on a measured joint beyond its limit (all hold)."""
        faults: list[RobotFault] = []
        if silence is not None:
            now = time.monotonic()
            for mid in silence.missing:
                m = self._by_id(mid)
                # Since the motor was last heard at all: a late answer (after the deadline) is not silence.
                silent_s = now - max(m.received_at, self.transport.heard.get(dm.reply_id(m.motor_id), 0.0))
                if silent_s >= self.options.silence_timeout_s:  # shorter silences: the next cycles ask again
                    faults.append(self._no_reply_fault(m, silence, "MIT command", silent_s))
        self._absorb(ex.replies)
        for m in self.motors:
            if m.motor_id in ex.replies:
                fault = self._status_fault(m, allow_disabled=False)
                if fault is not None:
                    faults.append(fault)
        broken = {f.joint for f in faults}
        if self.enabled:
            faults.extend(f for f in self._limit_faults() if f.joint not in broken)
        if faults:
            faults.sort(key=lambda f: self.names.index(f.joint))
            self._fail(faults, disable=broken)

    def finish(self, ex: Exchange) -> None:
        """`collect` then `settle`: one synchronous cycle (the calibration procedures' `command_motors`)."""
        self.settle(ex, self.collect(ex))

    def command(self, positions: F64) -> None:
        """One synchronous command cycle for this arm alone (no background sender; `YamRobot` has one)."""
        targets = self.prepare(positions)
        self.set_target(targets)
        self.finish(self.post(self._mit_requests(targets)))

    # -- stopping ------------------------------------------------------------------------------------------------
    def safe_stop(self, faulted: Collection[str] = ()) -> list[RobotFault]:
        """Controlled stop: healthy enabled motors hold their measured position, `faulted` motors are disabled.

        Best effort and never raises: problems found on the way are returned as further faults (and those
        motors disabled too). The stop pose is kept: `YamRobot`'s sender goes on feeding it to the motors still
        enabled until `disable()`, so they hold instead of dropping into damping when their watchdog expires.
        """
        self.enabled = False
        self._target = None
        self._hold_pose = np.array([np.nan if m.position is None else m.position for m in self.motors])
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
                to_disable.extend(self._by_id(mid) for mid in exc.missing)
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

    def feedforward_stats(self) -> tuple[F64, F64, int]:
        """(mean |tau_ff|, max |tau_ff|) per motor (N m) over the command/hold frames built since the last
        `reset_actuation_stats()`, and how many frames that was."""
        mean = self._ff_sum / self._ff_frames if self._ff_frames else np.zeros(len(self.motors))
        return mean, self._ff_max.copy(), self._ff_frames

    def grasp_report(self) -> GraspReport | None:
        """The gripper force limiter's state and peaks since the last reset (None without a limiter)."""
        lim = self.gripper_limiter
        if lim is None:
            return None
        return GraspReport(self.config.gripper, lim.grasping, lim.grasps, lim.peak_effort_nm,
                           lim.peak_grasp_effort_nm, lim.config.max_torque_nm)

    def reset_actuation_stats(self) -> None:
        """Start a new reporting period (feed-forward sums and the grasp peaks; a grasp in progress stays)."""
        self._ff_sum[:] = 0.0
        self._ff_max[:] = 0.0
        self._ff_frames = 0
        if self.gripper_limiter is not None:
            self.gripper_limiter.peak_effort_nm = 0.0
            self.gripper_limiter.peak_grasp_effort_nm = 0.0
            self.gripper_limiter.grasps = 0

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
                     kd: float | None = None, velocity: float = 0.0) -> Request:
        data = dm.pack_mit_command(m.motor_type, position, velocity, m.kp if kp is None else kp,
                                   m.kd if kd is None else kd, torque)
        return Request(key=m.motor_id, arbitration_id=dm.command_id(m.motor_id), data=data,
                       reply_id=dm.reply_id(m.motor_id))

    def _mit_requests(self, targets: F64) -> list[Request]:
        """The frames of one command/hold cycle for motor-space `targets` (gripper target before the force
        limit): feed-forward and force limit computed now, from the latest feedback."""
        ff = self._feedforward()
        absff = np.abs(ff)
        self._ff_sum += absff
        np.maximum(self._ff_max, absff, out=self._ff_max)
        self._ff_frames += 1
        targets = self._limit_gripper(targets)
        v_des = self._velocity_feedforward()
        law = self.gripper_limiter.law_to_send() if self.gripper_limiter is not None else None
        requests = []
        for m in self.motors:
            if law is not None and m.index == self.gripper_index:
                # The gripper's frame runs the law the limiter chose: its gains, or pure torque while grasping.
                requests.append(self._mit_request(m, float(targets[m.index]), float(ff[m.index]) + law.torque_nm,
                                                  kp=law.kp, kd=law.kd))
            else:
                requests.append(self._mit_request(m, float(targets[m.index]), float(ff[m.index]),
                                                  velocity=float(v_des[m.index])))
        return requests

    def _velocity_feedforward(self) -> F64:
        """v_des per motor for the frames of this cycle: the servo's planned velocity while it is fresh, else 0.

        Why: with v_des = 0 the damping term kd (0 - v) brakes every joint that moves as planned, so a moving arm
        trails its target by about kd v / kp (0.03 rad at 0.5 rad/s with kp 80, kd 5). With the plan's velocity it
        damps only the deviation from the plan (the maker's driver sends a velocity the same way from
        `command_joint_state`; its `command_joint_pos` sends 0). A velocity older than `YamOptions.velocity_fresh_s`
        (the servo loop stalled and the sender repeats its last frame) is dropped to 0, where the maker's driver
        repeats it: a repeated frame holds the last target still, it never keeps pushing the arm along a stale
        motion."""
        v = self._target_velocity
        if v is None or self._target is None or self.clock() - self._target_set_at > self.options.velocity_fresh_s:
            return np.zeros(len(self.motors))
        return v

    def _limit_gripper(self, targets: F64) -> F64:
        """`targets` with the gripper's replaced by the force limiter's (unchanged until a stall is detected)."""
        g = self.gripper_index
        m = self.motors[g]
        lim = self.gripper_limiter
        if lim is None or m.feedback is None or m.position is None:
            return targets
        limited = lim.update(self.clock(), m.position, m.feedback.velocity, m.feedback.torque, float(targets[g]))
        if limited == targets[g]:
            return targets
        out = np.array(targets, dtype=np.float64)
        out[g] = min(m.limits.p_max, max(-m.limits.p_max, limited))
        return out

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

    def _no_reply_fault(self, m: _Motor, exc: NoReplyError, what: str, silent_s: float | None = None) -> RobotFault:
        detail = f"; last send error: {exc.send_error}" if exc.send_error else ""
        since = "" if silent_s is None else f" (no reply for {silent_s:.2f} s)"
        return RobotFault(m.name, "no_reply",
                          f"motor id {m.motor_id} did not answer the {what} on reply id "
                          f"0x{dm.reply_id(m.motor_id):02X} after {exc.attempts} attempts of "
                          f"{exc.timeout_s * 1e3:.0f} ms{since}{detail}; check its power and CAN wiring")

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

    def _fail(self, faults: Sequence[RobotFault], disable: Collection[str] | None = None) -> NoReturn:
        """Latch `faults`, stop the arm in a controlled way (`latch_and_stop`) and raise the first one."""
        self.latch_and_stop(faults, disable)
        raise faults[0]

    def latch_and_stop(self, faults: Sequence[RobotFault], disable: Collection[str] | None = None) -> None:
        """Latch `faults` and stop: the motors named in `disable` (default: the faulted joints) are disabled,
        every other enabled motor holds its measured position (`safe_stop`)."""
        for f in faults:
            self.faults.append(FaultRecord(f.joint, f.code, f.detail))
        for extra in self.safe_stop({f.joint for f in faults} if disable is None else disable):
            self.faults.append(FaultRecord(extra.joint, extra.code, extra.detail))

    def _limit_faults(self) -> list[RobotFault]:
        """The limit watch: joints measured more than `limit_watch_margin` beyond a limit (gripper excluded: its
        targets are clipped to the calibrated stroke, and the stroke is not a joint limit)."""
        margin = self.options.limit_watch_margin
        faults = []
        for m in self.motors[:self.gripper_index]:
            if m.position is None:
                continue
            lim = self.joint_limits[m.name]
            angle = m.position - float(self.zero_offsets[m.index])
            if angle < lim.lower - margin:
                side, bound = "lower", lim.lower
            elif angle > lim.upper + margin:
                side, bound = "upper", lim.upper
            else:
                continue
            faults.append(RobotFault(
                m.name, LIMIT_VIOLATION,
                f"measured {angle:+.3f} rad, {abs(angle - bound):.3f} rad beyond its {side} limit {bound:+.5f} "
                f"(limits [{lim.lower}, {lim.upper}], watch margin {margin} rad; motor id {m.motor_id}); every "
                f"motor holds where it is"))
        return faults

    def _feedforward_or_zero(self) -> F64:
        """The feed-forward, or zeros when the hook fails: a broken hook must not prevent holding a stop."""
        try:
            return self._feedforward()
        except RobotError:
            return np.zeros(len(self.motors))

    # -- tolerant setup frames -----------------------------------------------------------------------------------
    def _clear_errors(self, motors: Sequence[_Motor]) -> set[int]:
        """Clear-error to `motors`, `clear_error_repeats` times, no answer required (the maker's way). Absorbs the
        answers that came; returns the ids of the motors heard from."""
        replies = self.transport.send_unacknowledged(
            [self._special_request(m, dm.SpecialCommand.CLEAR_ERROR) for m in motors],
            self.options.clear_error_repeats)
        self._absorb(replies)
        return set(replies)

    def _probe_request(self, m: _Motor) -> Request:
        """A frame that changes nothing, answered with feedback: disable to a disabled motor, its current hold
        (configured gains, feed-forward) to one that is enabled and holding."""
        pose = self._hold_pose
        if m.enabled and pose is not None and np.isfinite(pose[m.index]):
            return self._mit_request(m, float(pose[m.index]), float(self._feedforward_or_zero()[m.index]))
        if m.enabled and m.position is not None:
            return self._mit_request(m, m.position, float(self._feedforward_or_zero()[m.index]))
        return self._special_request(m, dm.SpecialCommand.DISABLE)

    def _clear_and_read(self) -> None:
        """Before enabling: clear errors blind, then know every motor's position and status.

        Motors whose firmware did not answer the clear are read with `_probe_request`. A motor still showing an
        error is cleared and read again, up to `setup_retries` times; one that keeps it is a fault naming the code
        (raised before any motor is enabled). Silence to the read is a `no_reply` fault.
        """
        pending = list(self.motors)
        for _ in range(self.options.setup_retries + 1):
            heard = self._clear_errors(pending)
            silent = [m for m in pending if m.motor_id not in heard]
            if silent:
                self._absorb(self._exchange([self._probe_request(m) for m in silent], self.options.setup_retries,
                                            "status read after clear error"))
            pending = [m for m in pending if self._status_fault(m, allow_disabled=True) is not None]
            if not pending:
                return
        self._fail([f for m in pending if (f := self._status_fault(m, allow_disabled=True)) is not None])

    def _enable_motor(self, m: _Motor) -> None:
        """Enable one motor as the maker's driver does: while the reply to enable shows an error (or the motor
        stays disabled), clear blind and enable again, up to `setup_retries` times; then a fault naming the
        status code the motor keeps reporting."""
        for attempt in range(self.options.setup_retries + 1):
            self._absorb(self._exchange([self._special_request(m, dm.SpecialCommand.ENABLE)],
                                        self.options.setup_retries, "enable"))
            if m.feedback is not None and m.feedback.status == dm.StatusCode.ENABLED:
                return
            if attempt < self.options.setup_retries:
                self._clear_errors([m])
        fault = self._status_fault(m, allow_disabled=False) or RobotFault(
            m.name, "enable_failed", f"motor id {m.motor_id} did not report enabled after "
                                     f"{self.options.setup_retries + 1} enable attempts (unreadable replies)")
        self._fail([fault])
