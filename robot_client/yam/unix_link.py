"""A CAN link between two processes of one Linux host: a python-can bus over a Unix datagram socket pair.

Why it exists: to run the emulated Damiao motors in a process of their own (they stand in for hardware, whose
controllers never take the host's CPU or interpreter lock) while the real driver runs in the servo process, the
two need a bus that crosses processes. python-can's `virtual` bus stays inside one process, a `vcan` interface
needs a kernel module most VMs and containers lack, and `udp_multicast` goes through the IP stack: every frame
is msgpack-encoded, heard by its own sender too, and delivered through the network softirq, which on a busy
2-core VM held replies back for 10-15 ms several times a second (measured: 14 frames there and back, two
CPU-burning processes beside it, p99 1.5 ms and max 11.4 ms; over a Unix datagram pair p99 0.32 ms and max 2.7 ms).
A Unix datagram is handed straight to the peer's receive queue: no IP stack, no softirq, no loopback of one's
own frames, and record boundaries kept (one datagram = one frame).

Topology: a point-to-point link with two ends, "host" (the driver) and "device" (the motors), named by the
channel in Linux's abstract socket namespace (nothing on the filesystem to clean up, gone with the process). A
frame sent from one end is received by the other end only, as on a two-node CAN bus. The other end not being
open is a send error (`can.CanOperationError`), like a bus with no node to acknowledge: the driver's transport
counts it as a failed attempt and names it.

Wire format per datagram (24 bytes, little-endian): sender's `time.time()` (f64), CAN id with the socketcan
flag bits (u32: 0x80000000 extended, 0x40000000 remote, 0x20000000 error), data length (u8), 3 pad bytes, up to
8 data bytes (classic CAN only). The timestamp lets the receiver tell a frame that waited in its queue from one
sent late (the emulator's watchdog counts from the sending time).
"""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import Any, Literal

import can

END_NAMES = ("host", "device")
End = Literal["host", "device"]
_FRAME = struct.Struct("<dIB3x8s")
_EXTENDED = 0x80000000
_REMOTE = 0x40000000
_ERROR = 0x20000000
_ID_MASK = 0x1FFFFFFF
# A full receive queue at the other end (Linux keeps net.unix.max_dgram_qlen, 10 by default, datagrams per
# socket) makes a send wait this long for room, as a CAN frame waits for the bus, before it counts as failed.
SEND_WAIT_S = 0.005
_SEND_RETRY_S = 0.0002


def link_address(channel: str, end: str) -> str:
    """The abstract-namespace address of `end` of the link named `channel`."""
    return f"\0robot_client.can_link/{channel}/{end}"


class UnixLinkBus(can.BusABC):
    """One end of the link `channel`. Classic CAN frames only; `receive_own_messages` is not offered (a node
    does not hear itself on this link)."""

    def __init__(self, channel: str, end: End = "host", **kwargs: Any) -> None:
        if end not in END_NAMES:
            raise ValueError(f"unix_link end must be one of {list(END_NAMES)}, got {end!r}")
        if not channel or "/" in channel or "\0" in channel:
            raise ValueError(f"unix_link channel must be a non-empty name without '/' or NUL, got {channel!r}")
        self.channel_info = f"unix_link {channel} ({end} end)"
        self._peer = link_address(channel, "device" if end == "host" else "host")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(link_address(channel, end))
        except OSError as exc:
            self._sock.close()
            raise can.CanInitializationError(
                f"unix_link {channel!r}: cannot open the {end} end ({exc}); is another process holding it?") from exc
        # Blocking mode with per-call MSG_DONTWAIT: a receive timeout never applies to sends (one Python timeout
        # would govern both), and a send to a full queue is retried briefly here instead of blocking.
        self._sock.setblocking(True)
        super().__init__(channel=channel, **kwargs)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if msg.is_fd or len(msg.data) > 8:
            raise can.CanOperationError(f"unix_link carries classic CAN frames (<= 8 bytes), got {len(msg.data)}")
        can_id = msg.arbitration_id & _ID_MASK
        if msg.is_extended_id:
            can_id |= _EXTENDED
        if msg.is_remote_frame:
            can_id |= _REMOTE
        if msg.is_error_frame:
            can_id |= _ERROR
        data = bytes(msg.data)
        frame = _FRAME.pack(time.time(), can_id, len(data), data)
        give_up = time.monotonic() + SEND_WAIT_S
        while True:
            try:
                self._sock.sendto(frame, socket.MSG_DONTWAIT, self._peer)
                return
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                raise can.CanOperationError(f"{self.channel_info}: no node at the other end ({exc})") from exc
            except BlockingIOError as exc:  # the other end's queue is full: it is not reading
                if time.monotonic() >= give_up:
                    raise can.CanOperationError(f"{self.channel_info}: the other end's receive queue stayed full "
                                                f"for {SEND_WAIT_S * 1e3:g} ms (it is not reading); frame "
                                                f"dropped") from exc
                time.sleep(_SEND_RETRY_S)
            except OSError as exc:
                raise can.CanOperationError(f"{self.channel_info}: send failed ({exc})") from exc

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        try:
            raw = self._sock.recv(64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if timeout is not None and timeout <= 0:
                return None, False
            readable, _, _ = select.select([self._sock], [], [], timeout)
            if not readable:
                return None, False
            raw = self._sock.recv(64, socket.MSG_DONTWAIT)
        if len(raw) != _FRAME.size:
            raise can.CanOperationError(f"{self.channel_info}: datagram of {len(raw)} bytes, expected "
                                        f"{_FRAME.size}")
        stamp, can_id, dlc, data = _FRAME.unpack(raw)
        msg = can.Message(timestamp=stamp, arbitration_id=can_id & _ID_MASK,
                          is_extended_id=bool(can_id & _EXTENDED), is_remote_frame=bool(can_id & _REMOTE),
                          is_error_frame=bool(can_id & _ERROR), dlc=dlc, data=data[:dlc],
                          channel=self.channel_info, check=False)
        return msg, False

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown(self) -> None:
        super().shutdown()
        self._sock.close()
