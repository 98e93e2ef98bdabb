"""`python -m calibration <command>`: the rig's calibration procedures, each writing its section of the rig's
calibration file (`robot_client.calfile`).

    joints   zero offsets at the documented zero pose (or --check: each joint's reading there)
    gripper  closed/open motor positions by stall detection at low torque, or pinned
    gravity  per-joint gravity factors: still poses, least squares on the motors' torque
    camera   intrinsics from board images; hand-eye extrinsics of a wrist camera
    latency  command-to-motion and camera latency
    check    the rig (config + calibration) against the dataset it will run

Each command lives in its own module (`calibration.<name>_cli`) exposing HELP, `add_arguments(parser)` and
`run(args) -> int`. Those modules stay light (argparse only at import; OpenCV, MuJoCo, CAN imported inside
`run`), so building the parser costs nothing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

COMMANDS = ("joints", "gripper", "gravity", "camera", "latency", "check")


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"calibration.{name}_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calibration", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMANDS:
        module = _module(name)
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = _module(args.command).run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
