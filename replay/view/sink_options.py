"""The rerun sink options (`--save`, `--serve`, `--connect`, ...) shared by `replay view` and the robot client.

Kept apart from `sinks` so that building a parser does not import rerun (the other commands should not pay for
it). The defaults are the safe ones: a served view listens on 127.0.0.1 only and the web viewer, which rerun
always binds to every interface, is opt-in.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from replay.view.sinks import SinkConfig

DEFAULT_GRPC_PORT = 9876
DEFAULT_WEB_PORT = 9090
# rerun's own default: every interface. The note printed when a server starts says what that means.
ALL_INTERFACES = "0.0.0.0"
LOOPBACK = "127.0.0.1"


def add_sink_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The sink options, spelled `--{prefix}save` etc. (the robot client uses the prefix "rerun-")."""
    parser.add_argument(f"--{prefix}save", type=Path, default=None, metavar="FILE.rrd", help="write an .rrd file")
    parser.add_argument(f"--{prefix}serve", action="store_true", help="host a rerun gRPC server viewers connect to")
    parser.add_argument(f"--{prefix}connect", default=None, metavar="ADDR",
                        help="stream to a running viewer: HOST:PORT or rerun+http://HOST:PORT/proxy")
    parser.add_argument(f"--{prefix}bind", default=LOOPBACK,
                        help=f"with --{prefix}serve: address to listen on (default {LOOPBACK}: this machine only; "
                             f"{ALL_INTERFACES} lets anyone on the network watch, unauthenticated)")
    parser.add_argument(f"--{prefix}grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                        help=f"with --{prefix}serve: gRPC port (default {DEFAULT_GRPC_PORT})")
    parser.add_argument(f"--{prefix}web", action="store_true",
                        help=f"with --{prefix}serve: also host rerun's web viewer (it listens on every interface)")
    parser.add_argument(f"--{prefix}web-port", type=int, default=DEFAULT_WEB_PORT,
                        help=f"with --{prefix}web: web viewer port (default {DEFAULT_WEB_PORT})")


def sink_from_args(args: argparse.Namespace, prefix: str = "",
                   default_save: Path | None = None) -> SinkConfig | None:
    """The SinkConfig the options of `add_sink_arguments` ask for; None when they ask for none (and there is no
    `default_save`)."""
    from replay.view.sinks import SinkConfig

    key = prefix.replace("-", "_")

    values: dict[str, Any] = vars(args)

    def get(name: str) -> Any:
        return values[key + name]

    save = get("save")
    serve, connect = bool(get("serve")), get("connect")
    if save is None and not serve and not connect:
        if default_save is None:
            return None
        save = default_save
    return SinkConfig(save=save, serve=serve, connect=connect, bind=get("bind"), grpc_port=get("grpc_port"),
                      web_viewer=bool(get("web")), web_port=get("web_port"))
