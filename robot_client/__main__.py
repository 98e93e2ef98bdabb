"""`python -m robot_client <command>`."""

from __future__ import annotations

import argparse
import sys

from robot_client import demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot_client", description="Robot-side tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.add_arguments(sub.add_parser("demo", help="end-to-end demo on the bundled sample dataset"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.main_from_args(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
