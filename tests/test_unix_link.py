"""The unix_link CAN bus (robot_client.yam.unix_link): real sockets, frames across real processes, and the YAM
driver against emulated motors at the other end."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import can
import numpy as np
import pytest

from robot_client.config import load_robot_config
from robot_client.yam import protocol as dm
from robot_client.yam.arm import YamOptions
from robot_client.yam.bus import CanBusUnavailable, open_bus, udp_address
from robot_client.yam.driver import YamRobot
from robot_client.yam.emulator import MotorEmulator
from robot_client.yam.unix_link import UnixLinkBus

REPO = Path(__file__).resolve().parents[1]
_names = itertools.count()


def _channel() -> str:
    return f"test-{os.getpid()}-{next(_names)}"


def test_frames_cross_in_both_directions_with_flags_and_timestamps() -> None:
    name = _channel()
    host, device = UnixLinkBus(name, "host"), UnixLinkBus(name, "device")
    try:
        sent = [can.Message(arbitration_id=0x01, data=bytes(range(8)), is_extended_id=False),
                can.Message(arbitration_id=0x1ABCDE, data=b"\x07", is_extended_id=True),
                can.Message(arbitration_id=0x12, is_remote_frame=True, dlc=0, is_extended_id=False)]
        before = time.time()
        for msg in sent:
            host.send(msg)
        got = [device.recv(timeout=1.0) for _ in sent]
        for want, msg in zip(sent, got, strict=True):
            assert msg is not None
            assert (msg.arbitration_id, msg.is_extended_id, msg.is_remote_frame, bytes(msg.data)) == \
                (want.arbitration_id, want.is_extended_id, want.is_remote_frame, bytes(want.data))
            assert before <= msg.timestamp <= time.time()  # the sending time travels with the frame
        device.send(can.Message(arbitration_id=0x11, data=b"\xaa" * 8, is_extended_id=False))
        back = host.recv(timeout=1.0)
        assert back is not None and back.arbitration_id == 0x11
        assert host.recv(timeout=0.0) is None  # a node does not hear its own frames
        assert device.recv(timeout=0.0) is None
    finally:
        host.shutdown()
        device.shutdown()


def test_recv_times_out_and_a_missing_peer_is_a_send_error() -> None:
    host = UnixLinkBus(_channel(), "host")
    try:
        start = time.monotonic()
        assert host.recv(timeout=0.05) is None
        assert 0.04 <= time.monotonic() - start < 1.0
        with pytest.raises(can.CanOperationError, match=r"no node at the other end"):
            host.send(can.Message(arbitration_id=1, data=b"\x00", is_extended_id=False))
        with pytest.raises(can.CanOperationError, match="classic CAN frames"):
            host.send(can.Message(arbitration_id=1, data=bytes(12), is_fd=True, is_extended_id=False))
    finally:
        host.shutdown()


def test_a_peer_that_does_not_read_drops_frames_with_a_named_error_instead_of_blocking() -> None:
    name = _channel()
    host, device = UnixLinkBus(name, "host"), UnixLinkBus(name, "device")
    try:
        msg = can.Message(arbitration_id=1, data=b"\x01", is_extended_id=False)
        start = time.monotonic()
        with pytest.raises(can.CanOperationError, match=r"receive queue stayed full for 5 ms .*frame dropped"):
            for _ in range(10_000):
                host.send(msg)
        assert time.monotonic() - start < 2.0  # bounded: a send never blocks for long
        assert device.recv(timeout=0.1) is not None  # what fitted in the queue arrives
        host.send(msg)  # room again
    finally:
        host.shutdown()
        device.shutdown()


def test_an_end_already_open_or_a_bad_name_is_refused_with_the_arm_named() -> None:
    arm = replace(load_robot_config("bimanual_yam").arms[0], can_interface="unix_link", can_channel=_channel())
    first = open_bus(arm)
    try:
        with pytest.raises(CanBusUnavailable, match=r"arm 'left': unix_link .*host end.*another process holding"):
            open_bus(arm)
    finally:
        first.shutdown()
    for bad in ("", "a/b"):
        with pytest.raises(CanBusUnavailable, match=r"arm 'left': unix_link channel must be a non-empty name"):
            open_bus(replace(arm, can_channel=bad))


def test_udp_multicast_channels_take_an_optional_port() -> None:
    assert udp_address("239.74.163.11", "arm") == ("239.74.163.11", 43113)
    assert udp_address("239.74.163.11:43121", "arm") == ("239.74.163.11", 43121)
    assert udp_address("ff15::1", "arm") == ("ff15::1", 43113)  # IPv6: python-can's port
    with pytest.raises(CanBusUnavailable, match=r"arm 'x': udp_multicast channel '239.1.1.1:99999'.*\[1, 65535\]"):
        udp_address("239.1.1.1:99999", "arm 'x'")


def test_the_yam_driver_drives_emulated_motors_in_another_process() -> None:
    """The servo benchmark's arrangement: emulated motors in a child process at the device end of each arm's
    link, the real driver here (tick mode, as in the servo process): enable, track a target, read it back."""
    base = load_robot_config("bimanual_yam")
    prefix = _channel()
    arms = tuple(replace(a, can_interface="unix_link", can_channel=f"{prefix}-{a.name}", gripper_limits=(0.0, -6.57),
                         gravity_compensation=False) for a in base.arms)
    config = replace(base, arms=arms)
    channels = [a.can_channel for a in arms]
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from dataclasses import replace
        from robot_client.config import load_robot_config
        from robot_client.yam.emulator import MotorEmulator
        base = load_robot_config("bimanual_yam")
        emus = [MotorEmulator.for_arm(replace(a, can_interface="unix_link", can_channel=c)).start()
                for a, c in zip(base.arms, {channels!r})]
        print("ready", flush=True)
        sys.stdin.read()
        for e in emus:
            e.stop()
    """)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        robot = YamRobot(config, options=YamOptions(send_mode="tick", reply_timeout_s=0.05))
        with robot:
            robot.enable()
            start = robot.read_state().positions.copy()
            target = start.copy()
            target[[6, 13]] = target[[6, 13]].clip(0.0, 1.0)  # closed grippers may read a hair below 0
            target[0] += 0.2
            for _ in range(200):
                robot.command(target)
                time.sleep(0.005)
            reached = robot.read_state().positions
            assert reached[0] == pytest.approx(target[0], abs=0.02)
            np.testing.assert_allclose(reached[1:6], start[1:6], atol=0.02)
            assert robot.caller_cycles == 200 and robot.status().ok
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert child.returncode == 0


def test_a_reply_nobody_takes_is_lost_not_an_emulator_error() -> None:
    """A motor's answer to a host that has gone (its link end closed) is lost, as on a bus with no node to take
    it: counted, and the emulator stops cleanly (stop() re-raises any error its thread met)."""
    arm = replace(load_robot_config("bimanual_yam").arms[0], can_interface="unix_link", can_channel=_channel())
    emulator = MotorEmulator.for_arm(arm).start()
    try:
        emulator.delay_replies(1, 0.1, count=1)
        bus = open_bus(arm)
        disable = dm.special_command_frame(dm.SpecialCommand.DISABLE)
        bus.send(can.Message(arbitration_id=dm.command_id(1), data=disable, is_extended_id=False))
        bus.shutdown()  # gone before the delayed answer
        deadline = time.monotonic() + 5.0
        while emulator.replies_lost == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emulator.replies_lost == 1
    finally:
        emulator.stop()


def test_a_motor_emulator_serves_the_device_end() -> None:
    """In one process too (the emulator's thread at the device end): what the emulator answers comes back."""
    arm = replace(load_robot_config("bimanual_yam").arms[0], can_interface="unix_link", can_channel=_channel())
    with MotorEmulator.for_arm(arm):
        bus = open_bus(arm)
        try:
            disable = dm.special_command_frame(dm.SpecialCommand.DISABLE)
            bus.send(can.Message(arbitration_id=dm.command_id(1), data=disable, is_extended_id=False))
            reply = bus.recv(timeout=1.0)
            assert reply is not None and reply.arbitration_id == dm.reply_id(1)
        finally:
            bus.shutdown()
