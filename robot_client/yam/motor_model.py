"""One emulated Damiao motor: protocol state machine plus a simple dynamic model. No I/O, no threads.

Behaviour modelled (what the driver relies on):
- Every frame is answered with a feedback frame (status, position wrapped to +-p_max, velocity, torque,
  temperatures). Register frames are answered with the register layout.
- Enable / disable / clear error / save zero. Enabling forgets the previous MIT command, so the motor stays limp
  until a fresh command arrives (the driver must command the measured position right after enabling).
- Errors latch and switch the output off until a clear-error frame; over-temperature re-latches immediately
  while the temperature is still at or above its limit.
- Watchdog (register 9, 50 us units): an enabled motor that receives no frame for longer than the timeout latches
  "lost communication" (0xD) and goes to damping mode (tau = -kd_damping * velocity).
- Dynamics: tau = kp (p_des - p) + kd (v_des - v) + t_ff, clipped to the type's torque range, driving an inertia
  with viscous damping, integrated with implicit Euler (unconditionally stable for any gains) in sub-steps.
  Mechanical stops (physical position limits) stall the motor: the position is held at the stop, the motor
  keeps pushing (its torque stays visible), which is what stop detection during calibration looks for.
- An obstacle is a one-sided stiff wall (an object between the gripper's jaws): motion past it in one direction
  is blocked. At a stop or an obstacle the reported torque is the MIT law at the blocked state,
  kp (p_des - p) + kd (v_des - 0) + t_ff clipped to the type's range, as a stalled real motor reports it.
- A static load torque (`load_nm`, e.g. gravity on an arm joint) is what the motor must produce to hold still:
  holding with kp, the motor sags until kp x error + t_ff = load, and reports that torque.
- A position offset shifts what the motor reports relative to the physical angle (a wrong zero); save-zero sets
  it so the current physical angle reads 0.

No heating model: temperatures change only when set, which keeps the model deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

from robot_client.yam import protocol as dm

DEFAULT_INERTIA = {"DM4340": 0.05, "DM4310": 0.01, "DM3507": 0.005, "DM6248": 0.2}
FACTORY_WATCHDOG = 8000  # register 9 value: 400 ms


@dataclass(frozen=True)
class MotorPhysics:
    inertia: float  # kg m^2 seen at the output
    viscous_damping: float = 0.02  # N m s / rad
    damping_mode_kd: float = 1.0  # N m s / rad applied in watchdog damping mode
    mosfet_limit_c: float = 120.0
    rotor_limit_c: float = 120.0
    ambient_c: float = 30.0
    max_substep_s: float = 0.001

    @classmethod
    def for_type(cls, motor_type: str) -> MotorPhysics:
        dm.motor_limits(motor_type)
        return cls(inertia=DEFAULT_INERTIA[motor_type])


class OutputMode(Enum):
    LIMP = "limp"  # no torque (disabled, error, or enabled without a command yet)
    MIT = "mit"  # following the MIT command
    DAMPING = "damping"  # watchdog tripped


@dataclass(frozen=True)
class MotorSnapshot:
    """Everything a test may want to assert about one emulated motor."""

    motor_id: int
    motor_type: str
    status: int
    enabled: bool
    mode: OutputMode
    position: float  # what the motor believes (physical + offset), not wrapped
    physical_position: float
    velocity: float
    torque: float
    command: dm.MitCommand | None
    mosfet_temp_c: float
    rotor_temp_c: float
    watchdog_s: float
    offset: float


@dataclass
class EmulatedMotor:
    motor_id: int
    motor_type: str
    physics: MotorPhysics
    q: float = 0.0  # physical position
    v: float = 0.0
    tau: float = 0.0
    offset: float = 0.0
    stops: tuple[float, float] | None = None
    # One-sided wall: (physical position, side); side +1 blocks motion above it, -1 below it.
    obstacle: tuple[float, int] | None = None
    # External torque the motor must produce to hold still (N m, e.g. gravity); pulls the motor by -load_nm.
    load_nm: float = 0.0
    enabled: bool = False
    error: dm.StatusCode | None = None
    command: dm.MitCommand | None = None
    mosfet_c: float = 30.0
    rotor_c: float = 30.0
    last_frame_at: float = 0.0
    registers: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.limits = dm.motor_limits(self.motor_type)
        self.mosfet_c = self.rotor_c = self.physics.ambient_c
        self.registers.setdefault(dm.WATCHDOG_REGISTER, dm.encode_register_value(FACTORY_WATCHDOG))

    # -- derived -------------------------------------------------------------------------------------------------
    @property
    def status(self) -> int:
        if self.error is not None:
            return int(self.error)
        return int(dm.StatusCode.ENABLED if self.enabled else dm.StatusCode.DISABLED)

    @property
    def mode(self) -> OutputMode:
        if self.error == dm.StatusCode.LOST_COMMUNICATION:
            return OutputMode.DAMPING
        if self.error is not None or not self.enabled or self.command is None:
            return OutputMode.LIMP
        return OutputMode.MIT

    @property
    def watchdog_s(self) -> float:
        raw = self.registers[dm.WATCHDOG_REGISTER]
        return dm.RegisterFrame(self.motor_id, dm.RegisterOp.READ, dm.WATCHDOG_REGISTER, raw).as_uint() \
            * dm.WATCHDOG_UNIT_S

    def snapshot(self) -> MotorSnapshot:
        return MotorSnapshot(
            motor_id=self.motor_id, motor_type=self.motor_type, status=self.status, enabled=self.enabled,
            mode=self.mode, position=self.q + self.offset, physical_position=self.q, velocity=self.v,
            torque=self.tau, command=self.command, mosfet_temp_c=self.mosfet_c, rotor_temp_c=self.rotor_c,
            watchdog_s=self.watchdog_s, offset=self.offset)

    def feedback(self) -> bytes:
        p_max = self.limits.p_max
        wrapped = (self.q + self.offset + p_max) % (2 * p_max) - p_max
        return dm.pack_feedback(self.motor_type, self.status, self.motor_id, wrapped, self.v, self.tau,
                                self.mosfet_c, self.rotor_c)

    # -- protocol ------------------------------------------------------------------------------------------------
    def on_mit(self, data: bytes, now: float, dt: float) -> bytes:
        self.check_watchdog(now)
        self.last_frame_at = now
        cmd = dm.unpack_mit_command(self.motor_type, data)
        if self.enabled and self.error is None:
            self.command = cmd
        self.step(dt)
        return self.feedback()

    def on_special(self, command: dm.SpecialCommand, now: float) -> bytes:
        self.check_watchdog(now)
        self.last_frame_at = now
        if command == dm.SpecialCommand.ENABLE:
            if self.error is None:
                self.enabled = True
                self.command = None
        elif command == dm.SpecialCommand.DISABLE:
            self.enabled = False
            self.command = None
        elif command == dm.SpecialCommand.CLEAR_ERROR:
            if self.error is not None:
                self.error = None
                self.enabled = False
                self.command = None
            self.check_temperature()
        elif command == dm.SpecialCommand.SAVE_ZERO:
            self.offset = -self.q
        return self.feedback()

    def on_register(self, frame: dm.RegisterFrame) -> bytes:
        if frame.op == dm.RegisterOp.WRITE:
            self.registers[frame.register] = frame.value
        value = self.registers.get(frame.register, b"\x00\x00\x00\x00")
        if frame.op == dm.RegisterOp.SAVE:
            value = frame.value
        return dm.pack_register(replace(frame, value=value))

    def check_watchdog(self, now: float) -> None:
        timeout = self.watchdog_s
        if self.enabled and self.error is None and timeout > 0 and now - self.last_frame_at > timeout:
            self.latch(dm.StatusCode.LOST_COMMUNICATION)

    def check_temperature(self) -> None:
        if self.rotor_c >= self.physics.rotor_limit_c:
            self.latch(dm.StatusCode.MOTOR_OVERTEMPERATURE)
        elif self.mosfet_c >= self.physics.mosfet_limit_c:
            self.latch(dm.StatusCode.MOSFET_OVERTEMPERATURE)

    def latch(self, code: dm.StatusCode) -> None:
        """Enter an error state: output off (damping for lost communication) until cleared."""
        if self.error is None:
            self.error = code
            self.enabled = False

    # -- dynamics ------------------------------------------------------------------------------------------------
    def _law(self) -> tuple[float, float, float, float, float]:
        """(kp, kd, p_des, v_des, t_ff) of the current output mode."""
        mode = self.mode
        if mode == OutputMode.MIT and self.command is not None:
            c = self.command
            return c.kp, c.kd, c.position, c.velocity, c.torque
        if mode == OutputMode.DAMPING:
            return 0.0, self.physics.damping_mode_kd, 0.0, 0.0, 0.0
        return 0.0, 0.0, 0.0, 0.0, 0.0

    def step(self, dt: float) -> None:
        if dt <= 0:
            return
        n = max(1, math.ceil(dt / self.physics.max_substep_s))
        h = dt / n
        for _ in range(n):
            self._substep(h)

    def _substep(self, h: float) -> None:
        kp, kd, p_des, v_des, t_ff = self._law()
        inertia, b, t_max = self.physics.inertia, self.physics.viscous_damping, self.limits.t_max
        p = self.q + self.offset
        load = self.load_nm
        # Implicit Euler: stiffness and damping evaluated at the new velocity.
        v_new = (inertia * self.v / h + kp * (p_des - p) + kd * v_des + t_ff - load) / (inertia / h + kp * h + kd + b)
        tau = kp * (p_des - (p + h * v_new)) + kd * (v_des - v_new) + t_ff
        if abs(tau) > t_max:
            tau = math.copysign(t_max, tau)
            v_new = (inertia * self.v / h + tau - load) / (inertia / h + b)
        q_new = self.q + h * v_new
        blocked = False
        if self.stops is not None:
            lower, upper = self.stops
            if q_new <= lower:
                q_new, v_new, blocked = lower, max(0.0, v_new), True
            elif q_new >= upper:
                q_new, v_new, blocked = upper, min(0.0, v_new), True
        if self.obstacle is not None:
            wall, side = self.obstacle
            if (q_new - wall) * side >= 0:
                q_new, blocked = wall, True
                v_new = min(0.0, v_new) if side > 0 else max(0.0, v_new)
        if blocked:
            # Stalled: the law at the blocked state (what the real motor's current says it pushes).
            tau = kp * (p_des - (q_new + self.offset)) + kd * (v_des - v_new) + t_ff
            tau = max(-t_max, min(t_max, tau))
        self.q, self.v, self.tau = q_new, v_new, tau
