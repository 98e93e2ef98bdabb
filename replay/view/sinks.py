"""Where a view goes: an .rrd file, a gRPC server that viewers connect to, and/or an existing viewer.

Why one place: the `view` command and the live logger offer the same three sinks, the same options and the
same safety note. A served recording is reachable by anyone who can reach the port: rerun's gRPC server has
no authentication, so ours binds 127.0.0.1 unless told otherwise (`bind`), and rerun's web viewer, which
always binds 0.0.0.0, is opt-in. The note printed every time a server starts says who can watch.

Several recordings (one per episode) can share one server: the first hosts it, the others stream to it.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import rerun as rr
import rerun.blueprint as rrb

from replay.view.sink_options import ALL_INTERFACES, DEFAULT_GRPC_PORT, DEFAULT_WEB_PORT, LOOPBACK

log = logging.getLogger(__name__)


class SinkError(ValueError):
    """A sink option is invalid (nothing to write to, a malformed address); the message names it."""


@dataclass(frozen=True)
class SinkConfig:
    """Any combination of: save to `save`, serve (gRPC on `grpc_port`, plus a web viewer), connect to `connect`."""

    save: Path | None = None
    serve: bool = False
    connect: str | None = None
    bind: str = LOOPBACK
    grpc_port: int = DEFAULT_GRPC_PORT
    web_viewer: bool = False
    web_port: int = DEFAULT_WEB_PORT
    server_memory_limit: str = "1GiB"

    def __post_init__(self) -> None:
        if self.save is None and not self.serve and not self.connect:
            raise SinkError("no sink: give a file to save to, serve, or an address to connect to")
        for label, port in (("grpc_port", self.grpc_port), ("web_port", self.web_port)):
            if not 0 < port < 65536:
                raise SinkError(f"{label} must be in 1..65535, got {port}")
        if self.connect:
            grpc_url(self.connect)


def grpc_url(address: str) -> str:
    """A viewer address as rerun wants it: "host:port" -> "rerun+http://host:port/proxy"; URLs pass through."""
    if "://" in address:
        if not address.startswith(("rerun://", "rerun+http://", "rerun+https://")):
            raise SinkError(f"address {address!r} must be HOST:PORT or a rerun://, rerun+http(s):// URL")
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SinkError(f"address {address!r} must be HOST:PORT or a rerun+http://HOST:PORT/proxy URL")
    return f"rerun+http://{host}:{port}/proxy"


def local_url(config: SinkConfig) -> str:
    """The served address as seen from this machine (rerun reports 0.0.0.0 for an all-interfaces bind)."""
    host = "127.0.0.1" if config.bind == ALL_INTERFACES else config.bind
    return f"rerun+http://{host}:{config.grpc_port}/proxy"


def serve_note(config: SinkConfig) -> str:
    """What a user needs to know when a server starts: where to connect, and who else can."""
    url = local_url(config)
    public = config.bind == ALL_INTERFACES
    host = socket.gethostname() if public else config.bind
    remote = f"rerun+http://{host}:{config.grpc_port}/proxy"
    lines = [f"rerun gRPC server: {remote}" + (f" (from this machine: {url})" if remote != url else "")]
    if public:
        lines.append(
            f"note: it listens on {config.bind}:{config.grpc_port}, i.e. on every network interface, without "
            "authentication: anyone who can reach this machine can watch. Bind 127.0.0.1 and use an SSH tunnel "
            "to keep it local."
        )
    else:
        lines.append(f"note: it listens on {config.bind}:{config.grpc_port} only.")
    if config.web_viewer:
        lines.append(
            f"web viewer: http://{host}:{config.web_port}/?url={remote} (rerun's web viewer always listens on "
            f"0.0.0.0:{config.web_port}, every network interface, whatever the gRPC bind address)"
        )
    lines.append(f"native viewer: rerun --connect {remote}")
    return "\n".join(lines)


def check_port_free(bind: str, port: int) -> None:
    """Fail now with a clear message: rerun only logs an error and runs on without a server when it cannot
    listen."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as err:
            raise SinkError(f"cannot serve on {bind}:{port}: {err.strerror or err}; pick another port") from err


class Sinks:
    """Attaches recording streams to the configured sinks; remembers the server the first stream hosts."""

    def __init__(self, config: SinkConfig, out: TextIO | None = None) -> None:
        self.config = config
        self.out = out
        self.server_url: str | None = None
        self._web_started = False

    def attach(
        self, rec: rr.RecordingStream, blueprint: rrb.Blueprint | None, save: Path | None = None
    ) -> None:
        """Give `rec` its sinks; `save` overrides the configured file (one file per recording)."""
        cfg = self.config
        sinks: list[rr.FileSink | rr.GrpcSink | rr.GrpcServerSink] = []
        path = save if save is not None else cfg.save
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            sinks.append(rr.FileSink(str(path)))
        if cfg.connect:
            sinks.append(rr.GrpcSink(grpc_url(cfg.connect)))
        hosted: rr.GrpcServerSink | None = None
        if cfg.serve:
            if self.server_url is None:
                check_port_free(cfg.bind, cfg.grpc_port)
                if cfg.web_viewer:
                    check_port_free(ALL_INTERFACES, cfg.web_port)
                hosted = rr.GrpcServerSink(
                    bind_ip=cfg.bind, port=cfg.grpc_port, server_memory_limit=cfg.server_memory_limit
                )
                sinks.append(hosted)
            else:
                sinks.append(rr.GrpcSink(self.server_url))
        rec.set_sinks(*sinks, default_blueprint=blueprint)
        if hosted is not None:
            self.server_url = local_url(cfg)
            self._start_web_viewer(self.server_url)
            note = serve_note(cfg)
            if self.out is not None:
                self.out.write(note + "\n")
                self.out.flush()
            else:
                log.warning("%s", note)

    def _start_web_viewer(self, url: str) -> None:
        if self.config.web_viewer and not self._web_started:
            rr.serve_web_viewer(web_port=self.config.web_port, open_browser=False, connect_to=url)
            self._web_started = True

