"""Opening an arm's CAN bus: virtual works in-process; unavailable links fail with the command that fixes them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import can
import pytest

from robot_client.config import ArmConfig, load_robot_config
from robot_client.yam.bus import CanBusUnavailable, open_bus, socketcan_link_state


def _arm(**changes: object) -> ArmConfig:
    return replace(load_robot_config("bimanual_yam").arms[0], **changes)  # type: ignore[arg-type]


def test_virtual_buses_on_one_channel_see_each_other() -> None:
    arm = _arm(can_interface="virtual", can_channel="yam-bus-test")
    a, b = open_bus(arm), open_bus(arm)
    try:
        a.send(can.Message(arbitration_id=0x01, data=b"\x00" * 8, is_extended_id=False))
        msg = b.recv(timeout=1.0)
        assert msg is not None and msg.arbitration_id == 0x01
    finally:
        a.shutdown()
        b.shutdown()


def _net(tmp_path: Path, name: str, state: str | None) -> Path:
    (tmp_path / "lo").mkdir(exist_ok=True)
    if state is not None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "operstate").write_text(state + "\n")
    return tmp_path


def test_missing_socketcan_interface_says_how_to_bring_it_up(tmp_path: Path) -> None:
    net = _net(tmp_path, "can_left", None)
    assert socketcan_link_state("can_left", net) is None
    with pytest.raises(CanBusUnavailable, match=r"no CAN interface named 'can_left'.*"
                                                r"sudo ip link set can_left up type can bitrate 1000000"):
        open_bus(_arm(), net_class=net)


def test_down_socketcan_link_says_how_to_bring_it_up(tmp_path: Path) -> None:
    net = _net(tmp_path, "can_left", "down")
    assert socketcan_link_state("can_left", net) == "down"
    with pytest.raises(CanBusUnavailable, match=r"'can_left' is down.*ip link set can_left up type can bitrate"):
        open_bus(_arm(), net_class=net)


def test_unopenable_socketcan_names_the_fix(tmp_path: Path) -> None:
    # The link "exists and is up" but this machine cannot open socketcan (containers): still an actionable error.
    net = _net(tmp_path, "can_yam_missing0", "up")
    with pytest.raises(CanBusUnavailable, match="ip link set can_yam_missing0 up type can bitrate 1000000"):
        open_bus(_arm(can_channel="can_yam_missing0"), net_class=net)


def test_slcan_with_a_missing_serial_port_names_the_port(tmp_path: Path) -> None:
    port = str(tmp_path / "no-such-tty")
    with pytest.raises(CanBusUnavailable, match=r"slcan adapter on serial port '.*no-such-tty'"):
        open_bus(_arm(can_interface="slcan", can_channel=port))


def test_empty_channel_is_refused() -> None:
    with pytest.raises(CanBusUnavailable, match="can_channel is empty"):
        open_bus(_arm(can_channel=""))
    with pytest.raises(CanBusUnavailable, match="udp_multicast needs can_channel = a multicast group address"):
        open_bus(_arm(can_interface="udp_multicast", can_channel=""))


def test_a_udp_multicast_bus_reaches_another_process() -> None:
    """What lets the emulated motors run in a process of their own (bench/servo.py): a frame sent on the group
    from a child process arrives here (beside this bus's own frames, which multicast loopback returns)."""
    import subprocess
    import sys

    arm = _arm(can_interface="udp_multicast", can_channel="239.74.163.99")
    bus = open_bus(arm)
    try:
        bus.send(can.Message(arbitration_id=0x02, data=b"\x01" * 8, is_extended_id=False))
        sender = ("import can, time\n"
                  "bus = can.Bus(interface='udp_multicast', channel='239.74.163.99')\n"
                  "for _ in range(20):\n"
                  "    bus.send(can.Message(arbitration_id=0x11, data=bytes(range(8)), is_extended_id=False))\n"
                  "    time.sleep(0.05)\n"
                  "bus.shutdown()\n")
        child = subprocess.Popen([sys.executable, "-c", sender])
        try:
            received = [m for _ in range(40) if (m := bus.recv(timeout=0.25)) is not None]
        finally:
            child.wait(timeout=30)
        assert [bytes(m.data) for m in received if m.arbitration_id == 0x11][:1] == [bytes(range(8))], received
    finally:
        bus.shutdown()
