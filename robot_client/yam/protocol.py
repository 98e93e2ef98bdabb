"""Damiao (DM) motor protocol in MIT mode, as pure functions: frames in, numbers out.

Kept free of I/O so the driver and the emulator share one definition of every byte, and so the codec can be
property-tested on its own.

Frames are classic CAN 2.0A (11-bit id, 8 data bytes, 1 Mbit/s):
- MIT command, host -> motor, id = motor id: 16-bit position, 12-bit velocity, kp, kd and torque, big-endian bit
  packing. Values are scaled linearly over the motor type's range (`MOTOR_LIMITS`) and clamped to it.
- Feedback, motor -> host, id = motor id + 0x10: status nibble, motor id bits, 16-bit position, 12-bit velocity
  and torque, MOSFET and rotor temperatures in degrees C.
- Special commands (enable, disable, save zero, clear error): `FF x7` then the command byte, to the command id.
- Register access on id 0x7FF: [motor id low, motor id high, op, register, 4-byte little-endian value]; the
  motor answers on its reply id with the same layout.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import IntEnum

MIT_ID_OFFSET = 0x000
REPLY_ID_OFFSET = 0x10
REGISTER_ID = 0x7FF
FRAME_LENGTH = 8

POSITION_BITS = 16
VELOCITY_BITS = 12
GAIN_BITS = 12
TORQUE_BITS = 12

# Register 9 counts in units of 50 microseconds (the vendor tool writes 8000 for the factory 400 ms).
WATCHDOG_REGISTER = 9
WATCHDOG_UNIT_S = 50e-6


class ProtocolError(ValueError):
    """A frame or value that the protocol cannot represent (wrong length, non-finite number, unknown type)."""


@dataclass(frozen=True)
class MotorLimits:
    """Encoding ranges of one motor type; every MIT quantity is scaled over [-max, max] (gains over [0, max])."""

    p_max: float
    v_max: float
    t_max: float
    kp_max: float = 500.0
    kd_max: float = 5.0


MOTOR_LIMITS: dict[str, MotorLimits] = {
    "DM4340": MotorLimits(p_max=12.5, v_max=10.0, t_max=28.0),
    "DM4310": MotorLimits(p_max=12.5, v_max=30.0, t_max=10.0),
    "DM3507": MotorLimits(p_max=12.5, v_max=50.0, t_max=5.0),
    "DM6248": MotorLimits(p_max=12.5, v_max=20.0, t_max=120.0),
}


def motor_limits(motor_type: str) -> MotorLimits:
    """Encoding ranges of `motor_type`; unknown types are refused rather than guessed."""
    try:
        return MOTOR_LIMITS[motor_type]
    except KeyError:
        raise ProtocolError(f"unknown motor type {motor_type!r}; known {sorted(MOTOR_LIMITS)}") from None


class StatusCode(IntEnum):
    """Status nibble of a feedback frame. Only ENABLED means the motor is following our commands."""

    DISABLED = 0x0
    ENABLED = 0x1
    OVER_VOLTAGE = 0x8
    UNDER_VOLTAGE = 0x9
    OVER_CURRENT = 0xA
    MOSFET_OVERTEMPERATURE = 0xB
    MOTOR_OVERTEMPERATURE = 0xC
    LOST_COMMUNICATION = 0xD
    OVERLOAD = 0xE


STATUS_MEANINGS: dict[StatusCode, str] = {
    StatusCode.DISABLED: "motor disabled (output off)",
    StatusCode.ENABLED: "motor enabled, following commands",
    StatusCode.OVER_VOLTAGE: "supply over-voltage; check the power supply",
    StatusCode.UNDER_VOLTAGE: "supply under-voltage; check the power supply and cabling",
    StatusCode.OVER_CURRENT: "over-current; the motor was driven too hard or is blocked",
    StatusCode.MOSFET_OVERTEMPERATURE: "driver MOSFET over-temperature; let the motor cool down",
    StatusCode.MOTOR_OVERTEMPERATURE: "motor (rotor) over-temperature; let the motor cool down",
    StatusCode.LOST_COMMUNICATION: "no command within the motor watchdog timeout (or CAN lost); "
                                   "the motor is in damping mode",
    StatusCode.OVERLOAD: "overload; sustained torque beyond the motor rating",
}


def status_name(code: int) -> str:
    """Lower-case name of a status code, e.g. `motor_overtemperature`; unknown codes get `unknown_status`."""
    try:
        return StatusCode(code).name.lower()
    except ValueError:
        return "unknown_status"


def status_meaning(code: int) -> str:
    """Human explanation of a status code (what happened and what to do)."""
    try:
        return STATUS_MEANINGS[StatusCode(code)]
    except ValueError:
        return f"status code {code:#x} is not documented for Damiao motors"


def is_error_status(code: int) -> bool:
    """True for any status other than enabled/disabled (documented error codes and undocumented values)."""
    return code not in (StatusCode.DISABLED, StatusCode.ENABLED)


class SpecialCommand(IntEnum):
    """Last byte of a special-command frame."""

    CLEAR_ERROR = 0xFB
    ENABLE = 0xFC
    DISABLE = 0xFD
    SAVE_ZERO = 0xFE


class RegisterOp(IntEnum):
    READ = 0x33
    WRITE = 0x55
    SAVE = 0xAA


# -- ids ---------------------------------------------------------------------------------------------------------
def _check_motor_id(motor_id: int) -> None:
    if not 0 < motor_id < REPLY_ID_OFFSET:
        raise ProtocolError(f"motor id must be in 1..15, got {motor_id}")


def command_id(motor_id: int) -> int:
    """Arbitration id of MIT and special-command frames for `motor_id`."""
    _check_motor_id(motor_id)
    return MIT_ID_OFFSET + motor_id


def reply_id(motor_id: int) -> int:
    """Arbitration id the motor answers on (feedback and register replies)."""
    _check_motor_id(motor_id)
    return motor_id + REPLY_ID_OFFSET


# -- scaling -----------------------------------------------------------------------------------------------------
def float_to_uint(x: float, lo: float, hi: float, bits: int) -> int:
    """Clamp `x` into [lo, hi] and scale it to an unsigned `bits`-wide integer (rounded: error <= half an LSB).

    Rounded on purpose where the maker's driver (i2rt `float_to_uint`) truncates with `int(...)`: truncation is
    up to one step low, half a step low on average, so every target, gain and feed-forward it sends is biased toward
    the bottom of its range (e.g. a DM4340 position 1.9e-4 rad low, a torque 0.007 N m low on average); rounding is
    unbiased and at most half a step off. The two never differ by more than one code
    (`tests/test_yam_protocol.py::test_command_codes_are_rounded_where_the_maker_truncates`), below any effect a
    motor could show. Non-finite values are refused: clamping NaN would silently send an arbitrary target.
    """
    if not math.isfinite(x):
        raise ProtocolError(f"cannot encode non-finite value {x}")
    span = hi - lo
    top = (1 << bits) - 1
    clamped = min(max(x, lo), hi)
    return min(top, max(0, int(round((clamped - lo) * top / span))))


def uint_to_float(u: int, lo: float, hi: float, bits: int) -> float:
    """Inverse of `float_to_uint` (exact at the code points)."""
    top = (1 << bits) - 1
    if not 0 <= u <= top:
        raise ProtocolError(f"{u} does not fit in {bits} bits")
    return u * (hi - lo) / top + lo


def lsb(lo: float, hi: float, bits: int) -> float:
    """Size of one quantization step."""
    return (hi - lo) / ((1 << bits) - 1)


# -- MIT command -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MitCommand:
    """Decoded MIT command: the motor applies tau = kp (position - p) + kd (velocity - v) + torque."""

    position: float
    velocity: float
    kp: float
    kd: float
    torque: float


def pack_mit_command(motor_type: str, p: float, v: float, kp: float, kd: float, t: float) -> bytes:
    """Encode one MIT command. Values beyond the type's range are clamped to it (the protocol cannot say more)."""
    lim = motor_limits(motor_type)
    p_u = float_to_uint(p, -lim.p_max, lim.p_max, POSITION_BITS)
    v_u = float_to_uint(v, -lim.v_max, lim.v_max, VELOCITY_BITS)
    kp_u = float_to_uint(kp, 0.0, lim.kp_max, GAIN_BITS)
    kd_u = float_to_uint(kd, 0.0, lim.kd_max, GAIN_BITS)
    t_u = float_to_uint(t, -lim.t_max, lim.t_max, TORQUE_BITS)
    return bytes((
        p_u >> 8, p_u & 0xFF,
        v_u >> 4, ((v_u & 0xF) << 4) | (kp_u >> 8),
        kp_u & 0xFF,
        kd_u >> 4, ((kd_u & 0xF) << 4) | (t_u >> 8),
        t_u & 0xFF,
    ))


def _check_length(data: bytes, what: str) -> None:
    if len(data) != FRAME_LENGTH:
        raise ProtocolError(f"{what}: expected {FRAME_LENGTH} data bytes, got {len(data)}")


def unpack_mit_command(motor_type: str, data: bytes) -> MitCommand:
    """Decode an MIT command frame (what the motor, or the emulator, sees)."""
    _check_length(data, "MIT command")
    lim = motor_limits(motor_type)
    p_u = (data[0] << 8) | data[1]
    v_u = (data[2] << 4) | (data[3] >> 4)
    kp_u = ((data[3] & 0xF) << 8) | data[4]
    kd_u = (data[5] << 4) | (data[6] >> 4)
    t_u = ((data[6] & 0xF) << 8) | data[7]
    return MitCommand(
        position=uint_to_float(p_u, -lim.p_max, lim.p_max, POSITION_BITS),
        velocity=uint_to_float(v_u, -lim.v_max, lim.v_max, VELOCITY_BITS),
        kp=uint_to_float(kp_u, 0.0, lim.kp_max, GAIN_BITS),
        kd=uint_to_float(kd_u, 0.0, lim.kd_max, GAIN_BITS),
        torque=uint_to_float(t_u, -lim.t_max, lim.t_max, TORQUE_BITS),
    )


# -- feedback ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Feedback:
    """Decoded feedback frame. `position` is the raw +-p_max reading (see `unwrap_position`)."""

    status: int
    motor_id_bits: int
    position: float
    velocity: float
    torque: float
    mosfet_temp_c: float
    rotor_temp_c: float

    @property
    def status_name(self) -> str:
        return status_name(self.status)


def pack_feedback(motor_type: str, status: int, motor_id: int, position: float, velocity: float, torque: float,
                  mosfet_temp_c: float, rotor_temp_c: float) -> bytes:
    """Encode a feedback frame (the motor side; used by the emulator)."""
    if not 0 <= status <= 0xF:
        raise ProtocolError(f"status must fit in 4 bits, got {status}")
    lim = motor_limits(motor_type)
    p_u = float_to_uint(position, -lim.p_max, lim.p_max, POSITION_BITS)
    v_u = float_to_uint(velocity, -lim.v_max, lim.v_max, VELOCITY_BITS)
    t_u = float_to_uint(torque, -lim.t_max, lim.t_max, TORQUE_BITS)
    return bytes((
        (status << 4) | (motor_id & 0xF),
        p_u >> 8, p_u & 0xFF,
        v_u >> 4, ((v_u & 0xF) << 4) | (t_u >> 8),
        t_u & 0xFF,
        _temperature_byte(mosfet_temp_c), _temperature_byte(rotor_temp_c),
    ))


def _temperature_byte(celsius: float) -> int:
    if not math.isfinite(celsius):
        raise ProtocolError(f"cannot encode temperature {celsius}")
    return min(255, max(0, int(round(celsius))))


def unpack_feedback(data: bytes, motor_type: str) -> Feedback:
    """Decode a feedback frame. The motor type is needed because velocity and torque scale with it."""
    _check_length(data, "feedback")
    lim = motor_limits(motor_type)
    p_u = (data[1] << 8) | data[2]
    v_u = (data[3] << 4) | (data[4] >> 4)
    t_u = ((data[4] & 0xF) << 8) | data[5]
    return Feedback(
        status=data[0] >> 4,
        motor_id_bits=data[0] & 0xF,
        position=uint_to_float(p_u, -lim.p_max, lim.p_max, POSITION_BITS),
        velocity=uint_to_float(v_u, -lim.v_max, lim.v_max, VELOCITY_BITS),
        torque=uint_to_float(t_u, -lim.t_max, lim.t_max, TORQUE_BITS),
        mosfet_temp_c=float(data[6]),
        rotor_temp_c=float(data[7]),
    )


# -- special commands --------------------------------------------------------------------------------------------
def special_command_frame(command: SpecialCommand) -> bytes:
    """Data of a special-command frame (sent on `command_id(motor_id)`)."""
    return bytes((0xFF,) * 7 + (int(command),))


def parse_special_command(data: bytes) -> SpecialCommand | None:
    """The special command in `data`, or None when it is not one (i.e. it is an MIT command)."""
    if len(data) == FRAME_LENGTH and data[:7] == b"\xff" * 7:
        try:
            return SpecialCommand(data[7])
        except ValueError:
            return None
    return None


# -- registers ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegisterFrame:
    """A register request or reply. `value` holds the 4 raw little-endian bytes."""

    motor_id: int
    op: RegisterOp
    register: int
    value: bytes = b"\x00\x00\x00\x00"

    def as_uint(self) -> int:
        return int(struct.unpack("<I", self.value)[0])

    def as_float(self) -> float:
        return float(struct.unpack("<f", self.value)[0])


def encode_register_value(value: int | float) -> bytes:
    """Ints are written as uint32 (ids, timeout, modes), floats as float32 (ranges such as PMAX)."""
    if isinstance(value, int):
        if not 0 <= value <= 0xFFFFFFFF:
            raise ProtocolError(f"register value {value} does not fit in uint32")
        return struct.pack("<I", value)
    if not math.isfinite(value):
        raise ProtocolError(f"cannot write non-finite register value {value}")
    return struct.pack("<f", value)


def pack_register(frame: RegisterFrame) -> bytes:
    _check_motor_id(frame.motor_id)
    if not 0 <= frame.register <= 0xFF or len(frame.value) != 4:
        raise ProtocolError(f"bad register frame {frame}")
    return bytes((frame.motor_id & 0xFF, frame.motor_id >> 8, int(frame.op), frame.register)) + frame.value


def pack_register_read(motor_id: int, register: int) -> bytes:
    return pack_register(RegisterFrame(motor_id, RegisterOp.READ, register))


def pack_register_write(motor_id: int, register: int, value: int | float) -> bytes:
    return pack_register(RegisterFrame(motor_id, RegisterOp.WRITE, register, encode_register_value(value)))


def pack_register_save(motor_id: int) -> bytes:
    """Persist the registers to flash. Flash wears: only for one-off configuration, never at every start."""
    return pack_register(RegisterFrame(motor_id, RegisterOp.SAVE, 0))


def unpack_register(data: bytes) -> RegisterFrame:
    _check_length(data, "register frame")
    try:
        op = RegisterOp(data[2])
    except ValueError:
        raise ProtocolError(f"register frame: unknown op {data[2]:#x}") from None
    return RegisterFrame(motor_id=data[0] | (data[1] << 8), op=op, register=data[3], value=bytes(data[4:8]))


def watchdog_register_value(timeout_ms: float) -> int:
    """Register-9 value for a watchdog of `timeout_ms` (0 turns the watchdog off)."""
    if not (math.isfinite(timeout_ms) and timeout_ms >= 0):
        raise ProtocolError(f"watchdog timeout must be >= 0 ms, got {timeout_ms}")
    return int(round(timeout_ms * 1e-3 / WATCHDOG_UNIT_S))


# -- position unwrap ---------------------------------------------------------------------------------------------
def unwrap_position(previous: float | None, raw: float, p_max: float) -> float:
    """Continuous position from a raw reading that wraps over [-p_max, p_max].

    Picks the representative of `raw` (modulo the 2 p_max span) closest to the previous unwrapped position, so a
    motor crossing the encoding boundary keeps counting instead of jumping by 25 rad. Correct as long as the
    motor moves less than p_max between two readings (it cannot: 12.5 rad in one cycle).
    """
    if previous is None:
        return raw
    span = 2.0 * p_max
    return raw + span * round((previous - raw) / span)
