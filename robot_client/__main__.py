"""`python -m robot_client <command>`."""

from __future__ import annotations

import argparse
import sys

from robot_client import demo, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot_client", description="Robot-side tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.add_arguments(sub.add_parser(
        "demo", help="end-to-end demo: the embedded Pi0.5 policy served on loopback, run on the sim arms, reported"))
    run_cli.add_arguments(sub.add_parser("run", help="drive the sim or real arms with a served policy",
                                         description=run_cli.__doc__))
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.main_from_args(args)
    if args.command == "run":
        return run_cli.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
