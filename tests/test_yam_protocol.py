"""Damiao MIT codec: byte layouts, scaling round trips (within one LSB), special/register frames, unwrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_client.yam import protocol as dm

TYPES = sorted(dm.MOTOR_LIMITS)


def _finite(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


@st.composite
def mit_values(draw: st.DrawFn) -> tuple[str, float, float, float, float, float]:
    mtype = draw(st.sampled_from(TYPES))
    lim = dm.MOTOR_LIMITS[mtype]
    return (mtype, draw(_finite(-lim.p_max, lim.p_max)), draw(_finite(-lim.v_max, lim.v_max)),
            draw(_finite(0.0, lim.kp_max)), draw(_finite(0.0, lim.kd_max)), draw(_finite(-lim.t_max, lim.t_max)))


@settings(max_examples=300, deadline=None)
@given(mit_values())
def test_mit_command_round_trip_within_one_lsb(values: tuple[str, float, float, float, float, float]) -> None:
    mtype, p, v, kp, kd, t = values
    lim = dm.MOTOR_LIMITS[mtype]
    data = dm.pack_mit_command(mtype, p, v, kp, kd, t)
    assert len(data) == 8
    cmd = dm.unpack_mit_command(mtype, data)
    assert abs(cmd.position - p) <= dm.lsb(-lim.p_max, lim.p_max, 16)
    assert abs(cmd.velocity - v) <= dm.lsb(-lim.v_max, lim.v_max, 12)
    assert abs(cmd.kp - kp) <= dm.lsb(0, lim.kp_max, 12)
    assert abs(cmd.kd - kd) <= dm.lsb(0, lim.kd_max, 12)
    assert abs(cmd.torque - t) <= dm.lsb(-lim.t_max, lim.t_max, 12)
    # Decoded values are code points: re-encoding them is exact.
    assert dm.pack_mit_command(mtype, cmd.position, cmd.velocity, cmd.kp, cmd.kd, cmd.torque) == data


@settings(max_examples=300, deadline=None)
@given(mit_values(), st.integers(0, 15), st.integers(1, 15), _finite(0, 255), _finite(0, 255))
def test_feedback_round_trip_within_one_lsb(values: tuple[str, float, float, float, float, float], status: int,
                                            motor_id: int, mosfet: float, rotor: float) -> None:
    mtype, p, v, _, _, t = values
    lim = dm.MOTOR_LIMITS[mtype]
    fb = dm.unpack_feedback(dm.pack_feedback(mtype, status, motor_id, p, v, t, mosfet, rotor), mtype)
    assert fb.status == status and fb.motor_id_bits == motor_id
    assert abs(fb.position - p) <= dm.lsb(-lim.p_max, lim.p_max, 16)
    assert abs(fb.velocity - v) <= dm.lsb(-lim.v_max, lim.v_max, 12)
    assert abs(fb.torque - t) <= dm.lsb(-lim.t_max, lim.t_max, 12)
    assert abs(fb.mosfet_temp_c - mosfet) <= 0.5 and abs(fb.rotor_temp_c - rotor) <= 0.5


@given(st.integers(0, 0xFFFF))
def test_uint_codes_are_fixed_points(u: int) -> None:
    x = dm.uint_to_float(u, -12.5, 12.5, 16)
    assert dm.float_to_uint(x, -12.5, 12.5, 16) == u


def test_mit_bit_layout() -> None:
    # p = max (0xFFFF), v = min (0x000), kp = max (0xFFF), kd = min (0x000), t = max (0xFFF).
    data = dm.pack_mit_command("DM4340", 12.5, -10.0, 500.0, 0.0, 28.0)
    assert data == bytes([0xFF, 0xFF, 0x00, 0x0F, 0xFF, 0x00, 0x0F, 0xFF])
    data = dm.pack_mit_command("DM4310", -12.5, 30.0, 0.0, 5.0, -10.0)
    assert data == bytes([0x00, 0x00, 0xFF, 0xF0, 0x00, 0xFF, 0xF0, 0x00])


def test_feedback_bit_layout() -> None:
    data = bytes([0x13, 0x80, 0x00, 0x7F, 0xF8, 0x00, 40, 55])
    fb = dm.unpack_feedback(data, "DM4340")
    assert fb.status == dm.StatusCode.ENABLED and fb.motor_id_bits == 3
    assert fb.position == pytest.approx(12.5 * (0x8000 * 2 / 0xFFFF - 1))
    assert fb.velocity == pytest.approx(0.0, abs=dm.lsb(-10, 10, 12))
    assert fb.torque == pytest.approx(-28 + 0x800 * 56 / 0xFFF)
    assert (fb.mosfet_temp_c, fb.rotor_temp_c) == (40.0, 55.0)
    assert fb.status_name == "enabled"


def test_out_of_range_values_clamp_and_non_finite_refused() -> None:
    cmd = dm.unpack_mit_command("DM4310", dm.pack_mit_command("DM4310", 99.0, -99.0, 900.0, -1.0, 50.0))
    assert (cmd.position, cmd.velocity, cmd.kp, cmd.kd, cmd.torque) == (12.5, -30.0, 500.0, 0.0, 10.0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(dm.ProtocolError, match="non-finite"):
            dm.pack_mit_command("DM4310", bad, 0, 0, 0, 0)
    with pytest.raises(dm.ProtocolError, match="unknown motor type"):
        dm.pack_mit_command("DM9999", 0, 0, 0, 0, 0)
    with pytest.raises(dm.ProtocolError, match="8 data bytes"):
        dm.unpack_feedback(b"\x01\x02", "DM4310")


def test_status_codes_names_and_meanings() -> None:
    expected = {0x0: "disabled", 0x1: "enabled", 0x8: "over_voltage", 0x9: "under_voltage", 0xA: "over_current",
                0xB: "mosfet_overtemperature", 0xC: "motor_overtemperature", 0xD: "lost_communication",
                0xE: "overload"}
    for code, name in expected.items():
        assert dm.status_name(code) == name
        assert dm.status_meaning(code)
        assert dm.is_error_status(code) == (code >= 0x8)
    assert dm.status_name(0x5) == "unknown_status" and dm.is_error_status(0x5)
    assert "0x5" in dm.status_meaning(0x5)


def test_special_commands_and_ids() -> None:
    assert dm.special_command_frame(dm.SpecialCommand.ENABLE) == b"\xff" * 7 + b"\xfc"
    assert dm.special_command_frame(dm.SpecialCommand.DISABLE)[-1] == 0xFD
    assert dm.special_command_frame(dm.SpecialCommand.SAVE_ZERO)[-1] == 0xFE
    assert dm.special_command_frame(dm.SpecialCommand.CLEAR_ERROR)[-1] == 0xFB
    for cmd in dm.SpecialCommand:
        assert dm.parse_special_command(dm.special_command_frame(cmd)) == cmd
    assert dm.parse_special_command(dm.pack_mit_command("DM4310", 0, 0, 0, 0, 0)) is None
    assert dm.command_id(3) == 0x003 and dm.reply_id(3) == 0x13
    with pytest.raises(dm.ProtocolError):
        dm.reply_id(0x10)


def test_register_frames() -> None:
    data = dm.pack_register_write(7, dm.WATCHDOG_REGISTER, 2000)
    assert data == bytes([7, 0, 0x55, 9]) + (2000).to_bytes(4, "little")
    frame = dm.unpack_register(data)
    assert (frame.motor_id, frame.op, frame.register, frame.as_uint()) == (7, dm.RegisterOp.WRITE, 9, 2000)
    assert dm.pack_register_read(2, 21) == bytes([2, 0, 0x33, 21, 0, 0, 0, 0])
    assert dm.pack_register_save(2)[2] == 0xAA
    assert dm.unpack_register(dm.pack_register_write(1, 21, 12.5)).as_float() == 12.5
    assert dm.watchdog_register_value(400) == 8000 and dm.watchdog_register_value(100) == 2000
    assert dm.watchdog_register_value(0) == 0
    with pytest.raises(dm.ProtocolError):
        dm.watchdog_register_value(-1)


@settings(max_examples=300, deadline=None)
@given(_finite(-200.0, 200.0), _finite(-12.0, 12.0))
def test_unwrap_follows_motion_across_the_encoding_boundary(start: float, step: float) -> None:
    def wrap(x: float) -> float:
        return (x + 12.5) % 25.0 - 12.5

    assert dm.unwrap_position(start, wrap(start + step), 12.5) == pytest.approx(start + step, abs=1e-9)


def test_unwrap_first_reading_is_taken_as_is() -> None:
    assert dm.unwrap_position(None, 3.0, 12.5) == 3.0
    assert dm.unwrap_position(12.4, -12.4, 12.5) == pytest.approx(12.6)


def _i2rt_float_to_uint(x: float, lo: float, hi: float, bits: int) -> int:
    """The maker's encoding (i2rt v1.2.4 `motor_drivers/utils.py`): clamp, scale, truncate with int()."""
    return int((min(max(x, lo), hi) - lo) * ((1 << bits) - 1) / (hi - lo))


@pytest.mark.parametrize("mtype", sorted(dm.MOTOR_LIMITS))
def test_command_codes_are_rounded_where_the_maker_truncates(mtype: str) -> None:
    """The deliberate difference to i2rt: never more than one code apart; ours unbiased within half a step, the
    maker's up to a step low and half a step low on average."""
    lim = dm.MOTOR_LIMITS[mtype]
    rng = np.random.default_rng(7)
    for lo, hi, bits in ((-lim.p_max, lim.p_max, 16), (-lim.v_max, lim.v_max, 12), (0.0, lim.kp_max, 12),
                         (0.0, lim.kd_max, 12), (-lim.t_max, lim.t_max, 12)):
        step = dm.lsb(lo, hi, bits)
        xs = rng.uniform(lo, hi, 4000)
        ours = np.array([dm.float_to_uint(float(x), lo, hi, bits) for x in xs])
        theirs = np.array([_i2rt_float_to_uint(float(x), lo, hi, bits) for x in xs])
        assert set(np.unique(ours - theirs)) <= {0, 1}
        err_ours = np.array([dm.uint_to_float(int(u), lo, hi, bits) for u in ours]) - xs
        err_theirs = np.array([dm.uint_to_float(int(u), lo, hi, bits) for u in theirs]) - xs
        assert np.abs(err_ours).max() <= 0.5 * step * (1 + 1e-9)
        assert np.abs(err_theirs).max() > 0.9 * step and err_theirs.max() <= 1e-12
        assert abs(err_ours.mean()) < 0.05 * step and abs(err_theirs.mean() + 0.5 * step) < 0.05 * step
    # The configured gains land on the same code either way (kp 80 -> 655 of 4095 on [0, 500]).
    assert dm.float_to_uint(80.0, 0.0, 500.0, 12) == _i2rt_float_to_uint(80.0, 0.0, 500.0, 12) == 655
