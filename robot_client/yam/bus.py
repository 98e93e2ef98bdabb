"""Open the python-can bus of one arm, failing with a message that says how to fix the link.

Interfaces:
- socketcan: `can_channel` is the network interface (e.g. `can_left`). Its bitrate is set by the operating
  system when the link is brought up, not from Python, so a down or missing link is reported with the command
  that brings it up.
- slcan: `can_channel` is the serial port of the adapter; the CAN bitrate is sent to the adapter at open.
- virtual: in-process bus for tests and the emulator (buses on the same channel name see each other).
- unix_link: a point-to-point link to another process of this host over a Unix datagram socket pair
  (`robot_client.yam.unix_link`), `can_channel` its name: the driver at the host end, the emulated motors in a
  process of their own at the device end (the servo process benchmarks and tests).
- udp_multicast: python-can's bus over UDP multicast, `can_channel` the group address and optionally the port
  (`239.74.163.2` or `239.74.163.2:43114`; python-can's port 43113 when none is given): the emulated motors in
  another process than the driver (benchmarks of the servo process). Give every arm its own port as well as its
  own group: a Linux socket bound to a port receives the datagrams of every group joined on the host at that
  port, so two arms sharing a port each hear both arms' traffic (measured: 4x the frames to decode). On one host a
  bus also hears its own frames (multicast loopback): the transaction layer matches replies by id anyway.
"""

from __future__ import annotations

from pathlib import Path

import can

from robot_client.config import ArmConfig
from robot_client.robot import RobotError
from robot_client.yam.unix_link import End, UnixLinkBus

_NET_CLASS = Path("/sys/class/net")


class CanBusUnavailable(RobotError):
    """The arm's CAN interface cannot be opened; the message says how to bring it up."""


def bring_up_hint(channel: str, bitrate: int) -> str:
    return f"sudo ip link set {channel} up type can bitrate {bitrate}"


def socketcan_link_state(channel: str, net_class: Path = _NET_CLASS) -> str | None:
    """Operational state of a network interface ('up', 'down', 'unknown'), or None when it does not exist.

    Returns 'unknown' too when the state cannot be read (non-Linux hosts): the open attempt then decides.
    """
    if not net_class.is_dir():
        return "unknown"
    path = net_class / channel
    if not path.exists():
        return None
    try:
        return (path / "operstate").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def open_bus(arm: ArmConfig, *, net_class: Path = _NET_CLASS) -> can.BusABC:
    """Open `arm`'s bus; raises CanBusUnavailable with the fix when it cannot.

    `net_class` is where network interfaces are listed (sysfs); only tests point it elsewhere.
    """
    if arm.can_interface == "virtual":
        return can.Bus(interface="virtual", channel=arm.can_channel or f"yam_{arm.name}")
    if arm.can_interface in LOCAL_INTERFACES:
        return open_local_bus(arm.can_interface, arm.can_channel, "host", f"arm '{arm.name}'")
    if not arm.can_channel:
        raise CanBusUnavailable(f"arm '{arm.name}': can_channel is empty (interface {arm.can_interface})")
    if arm.can_interface == "socketcan":
        return _open_socketcan(arm, net_class)
    if arm.can_interface == "slcan":
        return _open_slcan(arm)
    raise CanBusUnavailable(f"arm '{arm.name}': unsupported can_interface {arm.can_interface!r}")


# Buses to another process of this host (emulated motors): the driver opens the "host" end, the emulator the
# "device" end (the end matters to unix_link only).
LOCAL_INTERFACES = ("unix_link", "udp_multicast")


def open_local_bus(interface: str, channel: str, end: End, who: str) -> can.BusABC:
    """A unix_link or udp_multicast bus on `channel`, from `end`; CanBusUnavailable naming `who` when it cannot
    be opened."""
    if interface == "unix_link":
        try:
            return UnixLinkBus(channel, end)
        except (ValueError, can.CanInitializationError) as exc:
            raise CanBusUnavailable(f"{who}: {exc}") from exc
    if interface != "udp_multicast":
        raise CanBusUnavailable(f"{who}: {interface!r} is not a bus to another process ({list(LOCAL_INTERFACES)})")
    if not channel:
        raise CanBusUnavailable(f"{who}: udp_multicast needs can_channel = a multicast group address")
    group, port = udp_address(channel, who)
    return can.Bus(interface="udp_multicast", channel=group, port=port)


UDP_DEFAULT_PORT = 43113  # python-can's


def udp_address(channel: str, who: str) -> tuple[str, int]:
    """(group, port) of a udp_multicast channel written `group` or `group:port` (IPv4; an IPv6 group takes
    python-can's port). `who` names the owner in the error."""
    group, sep, port_text = channel.rpartition(":")
    if not sep or "." not in group:
        return channel, UDP_DEFAULT_PORT
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise CanBusUnavailable(f"{who}: udp_multicast channel {channel!r}: the port after ':' must be an integer "
                                f"in [1, 65535]")
    return group, port


def _open_socketcan(arm: ArmConfig, net_class: Path) -> can.BusABC:
    channel = arm.can_channel
    hint = bring_up_hint(channel, arm.can_bitrate)
    state = socketcan_link_state(channel, net_class)
    if state is None:
        raise CanBusUnavailable(
            f"arm '{arm.name}': no CAN interface named '{channel}'. Plug in the adapter and check its udev name "
            f"(`ip -br link`), then bring it up: {hint}")
    if state == "down":
        raise CanBusUnavailable(f"arm '{arm.name}': CAN interface '{channel}' is down. Bring it up: {hint}")
    try:
        return can.Bus(interface="socketcan", channel=channel)
    except (OSError, can.CanError, ImportError) as exc:
        raise CanBusUnavailable(
            f"arm '{arm.name}': cannot open socketcan '{channel}' ({type(exc).__name__}: {exc}). SocketCAN needs "
            f"Linux with the can modules (not available in most containers). Bring the link up: {hint}") from exc


def _open_slcan(arm: ArmConfig) -> can.BusABC:
    port = arm.can_channel
    try:
        return can.Bus(interface="slcan", channel=port, bitrate=arm.can_bitrate)
    except (OSError, ValueError, can.CanError, ImportError) as exc:
        raise CanBusUnavailable(
            f"arm '{arm.name}': cannot open slcan adapter on serial port '{port}' ({type(exc).__name__}: {exc}). "
            f"Check that the adapter is plugged in and the port path is right (`ls /dev/serial/by-id/`), and that "
            f"this user may open it (dialout group)") from exc
