"""The motor emulator speaks the Damiao protocol on a virtual bus: raw frames in, replies out."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import can
import pytest

from robot_client.yam import protocol as dm
from robot_client.yam.emulator import EmulatorConfig, ManualClock, MotorEmulator, MotorSpec
from robot_client.yam.motor_model import OutputMode

_channels = itertools.count()
TIMEOUT = 2.0


class Host:
    """Minimal host side for these tests: send one frame, wait for the reply on the motor's reply id."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)

    def ask(self, motor_id: int, data: bytes, arbitration_id: int | None = None) -> bytes | None:
        arb = dm.command_id(motor_id) if arbitration_id is None else arbitration_id
        self.bus.send(can.Message(arbitration_id=arb, data=data, is_extended_id=False))
        msg = self.bus.recv(timeout=TIMEOUT)
        if msg is None:
            return None
        assert msg.arbitration_id == dm.reply_id(motor_id)
        return bytes(msg.data)

    def special(self, motor_id: int, cmd: dm.SpecialCommand, motor_type: str = "DM4310") -> dm.Feedback:
        reply = self.ask(motor_id, dm.special_command_frame(cmd))
        assert reply is not None
        return dm.unpack_feedback(reply, motor_type)

    def mit(self, motor_id: int, p: float, kp: float, kd: float, t: float = 0.0,
            motor_type: str = "DM4310") -> dm.Feedback:
        reply = self.ask(motor_id, dm.pack_mit_command(motor_type, p, 0.0, kp, kd, t))
        assert reply is not None
        return dm.unpack_feedback(reply, motor_type)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rig(clock: ManualClock) -> Iterator[tuple[MotorEmulator, Host]]:
    channel = f"emu-test-{next(_channels)}"
    specs = [MotorSpec(1, "DM4340"), MotorSpec(2, "DM4310", position=0.5)]
    with MotorEmulator(channel, specs, clock=clock) as emu:
        host = Host(channel)
        try:
            yield emu, host
        finally:
            host.bus.shutdown()


def test_enable_disable_and_feedback(rig: tuple[MotorEmulator, Host]) -> None:
    emu, host = rig
    fb = host.special(2, dm.SpecialCommand.CLEAR_ERROR)
    assert fb.status == dm.StatusCode.DISABLED and fb.motor_id_bits == 2
    assert fb.position == pytest.approx(0.5, abs=1e-3)
    assert host.special(2, dm.SpecialCommand.ENABLE).status == dm.StatusCode.ENABLED
    assert emu.snapshot(2).mode == OutputMode.LIMP  # enabled, but no command yet: nothing stale is applied
    host.mit(2, 0.5, 10, 1.5)
    assert emu.snapshot(2).mode == OutputMode.MIT
    assert host.special(2, dm.SpecialCommand.DISABLE).status == dm.StatusCode.DISABLED
    assert [e.kind for e in emu.frame_log(2)] == ["clear_error", "enable", "mit", "disable"]


def test_mit_command_moves_toward_target_deterministically(rig: tuple[MotorEmulator, Host]) -> None:
    emu, host = rig
    host.special(1, dm.SpecialCommand.ENABLE, "DM4340")
    trajectory = [host.mit(1, 1.0, 80, 5, motor_type="DM4340").position for _ in range(150)]
    assert trajectory[-1] == pytest.approx(1.0, abs=0.01)
    assert all(b >= a - 1e-3 for a, b in itertools.pairwise(trajectory))  # no overshoot with these gains
    snap = emu.snapshot(1)
    assert snap.command is not None and snap.command.kp == pytest.approx(80, abs=0.2)


def test_disabled_motor_ignores_commands(rig: tuple[MotorEmulator, Host]) -> None:
    emu, host = rig
    for _ in range(20):
        fb = host.mit(1, 2.0, 80, 5, motor_type="DM4340")
    assert fb.status == dm.StatusCode.DISABLED and fb.position == pytest.approx(0.0, abs=1e-3)


def test_error_latches_until_cleared(rig: tuple[MotorEmulator, Host]) -> None:
    emu, host = rig
    host.special(2, dm.SpecialCommand.ENABLE)
    emu.set_error(2, dm.StatusCode.OVER_CURRENT)
    assert host.special(2, dm.SpecialCommand.ENABLE).status == dm.StatusCode.OVER_CURRENT
    assert host.special(2, dm.SpecialCommand.CLEAR_ERROR).status == dm.StatusCode.DISABLED
    assert host.special(2, dm.SpecialCommand.ENABLE).status == dm.StatusCode.ENABLED
    with pytest.raises(ValueError):
        emu.set_error(2, dm.StatusCode.ENABLED)


def test_overtemperature_relatches_while_hot(rig: tuple[MotorEmulator, Host]) -> None:
    emu, host = rig
    emu.set_temperature(2, rotor_c=130)
    fb = host.special(2, dm.SpecialCommand.CLEAR_ERROR)
    assert fb.status == dm.StatusCode.MOTOR_OVERTEMPERATURE and fb.rotor_temp_c == 130
    emu.set_temperature(2, rotor_c=40, mosfet_c=125)
    assert host.special(2, dm.SpecialCommand.CLEAR_ERROR).status == dm.StatusCode.MOSFET_OVERTEMPERATURE
    emu.set_temperature(2, mosfet_c=40)
    assert host.special(2, dm.SpecialCommand.CLEAR_ERROR).status == dm.StatusCode.DISABLED


def test_watchdog_register_and_damping(rig: tuple[MotorEmulator, Host], clock: ManualClock) -> None:
    emu, host = rig
    reply = host.ask(2, dm.pack_register_write(2, dm.WATCHDOG_REGISTER, 2000), dm.REGISTER_ID)
    assert reply is not None and dm.unpack_register(reply).as_uint() == 2000
    reply = host.ask(2, dm.pack_register_read(2, dm.WATCHDOG_REGISTER), dm.REGISTER_ID)
    assert reply is not None and dm.unpack_register(reply) == dm.RegisterFrame(2, dm.RegisterOp.READ, 9,
                                                                               (2000).to_bytes(4, "little"))
    assert emu.snapshot(2).watchdog_s == pytest.approx(0.1)
    host.special(2, dm.SpecialCommand.ENABLE)
    host.mit(2, 0.5, 10, 1.5)
    clock.advance(0.05)
    assert host.mit(2, 0.5, 10, 1.5).status == dm.StatusCode.ENABLED
    clock.advance(0.15)
    fb = host.mit(2, 0.5, 10, 1.5)
    assert fb.status == dm.StatusCode.LOST_COMMUNICATION
    assert emu.snapshot(2).mode == OutputMode.DAMPING
    assert emu.snapshot(1).status == dm.StatusCode.DISABLED  # a disabled motor has no watchdog to trip


def test_mechanical_stop_stalls_with_torque(rig: tuple[MotorEmulator, Host]) -> None:
    emu, host = rig
    emu.set_mechanical_stops(2, -1.0, 0.8)
    host.special(2, dm.SpecialCommand.ENABLE)
    for _ in range(200):
        fb = host.mit(2, 0.0, 0.0, 0.0, t=0.5)
    assert fb.position == pytest.approx(0.8, abs=1e-3)
    assert fb.velocity == pytest.approx(0.0, abs=0.02) and fb.torque == pytest.approx(0.5, abs=0.01)
    for _ in range(300):
        fb = host.mit(2, 0.0, 0.0, 0.0, t=-0.5)
    assert fb.position == pytest.approx(-1.0, abs=1e-3)


def test_offset_wrap_and_save_zero(rig: tuple[MotorEmulator, Host]) -> None:
    emu, host = rig
    emu.set_position_offset(2, 12.3)  # reads 12.8 -> wraps to -12.2
    assert host.special(2, dm.SpecialCommand.CLEAR_ERROR).position == pytest.approx(-12.2, abs=1e-3)
    assert host.special(2, dm.SpecialCommand.SAVE_ZERO).position == pytest.approx(0.0, abs=1e-3)
    assert emu.snapshot(2).physical_position == pytest.approx(0.5)


def test_drop_and_delay_injection(rig: tuple[MotorEmulator, Host]) -> None:
    emu, host = rig
    emu.drop_replies(2, count=2)
    frame = dm.special_command_frame(dm.SpecialCommand.CLEAR_ERROR)
    host.bus.send(can.Message(arbitration_id=2, data=frame, is_extended_id=False))
    host.bus.send(can.Message(arbitration_id=2, data=frame, is_extended_id=False))
    assert host.bus.recv(timeout=0.2) is None
    assert host.ask(2, frame) is not None
    emu.delay_replies(2, 0.3, count=1)
    host.bus.send(can.Message(arbitration_id=2, data=frame, is_extended_id=False))
    assert host.bus.recv(timeout=0.05) is None
    assert host.bus.recv(timeout=TIMEOUT) is not None
    assert emu.frame_count(2) == 4


def test_random_drops_are_deterministic_under_a_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        channel = f"emu-test-{next(_channels)}"
        specs = [MotorSpec(1, "DM4310"), MotorSpec(2, "DM4310")]
        with MotorEmulator(channel, specs, config=EmulatorConfig(seed=seed)) as emu:
            host = Host(channel)
            emu.drop_replies(1, probability=0.5)
            frame = dm.special_command_frame(dm.SpecialCommand.CLEAR_ERROR)
            got = []
            for _ in range(24):
                # Motor 2 never drops and frames are handled in order: once its reply is in, motor 1's (if
                # any) is too, so the pattern does not depend on timing.
                host.bus.send(can.Message(arbitration_id=1, data=frame, is_extended_id=False))
                host.bus.send(can.Message(arbitration_id=2, data=frame, is_extended_id=False))
                ids = []
                while dm.reply_id(2) not in ids:
                    msg = host.bus.recv(timeout=TIMEOUT)
                    assert msg is not None
                    ids.append(msg.arbitration_id)
                got.append(dm.reply_id(1) in ids)
            host.bus.shutdown()
            return got

    first = pattern(7)
    assert first == pattern(7)
    assert 0 < sum(first) < 24
