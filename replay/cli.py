"""`python -m replay <command>`: dataset tools. Each command is one `Command` in COMMANDS.

Why a registry: commands (info, stats, doctor now; sim, oracle, view later) share the dataset options and
the error handling: a bad path or malformed dataset prints one clear `error:` line and exits non-zero,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from policy_norm.errors import NormalizationError
from replay import reference, stats_tool
from replay.arm_replay import command as arm_replay
from replay.dataset_args import add_dataset_arguments, open_from_args
from replay.doctor import command as doctor
from replay.file_check import broken_summary, check_files, file_lines
from replay.oracle import command as oracle
from replay.view import cli as view_cli
from robodata.dataset import Dataset, DatasetError, DatasetInfo

EXIT_OK = 0
EXIT_DATASET_ERROR = 2


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how it adds its arguments, and what it runs."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, TextIO], int]


# ---- info ----------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:10.4f}"


def _stat_rows(feature: str, info: DatasetInfo, width: int) -> list[str]:
    spec = info.features.get(feature)
    if spec is not None and spec.names is not None and len(spec.names) == width:
        if feature in {c.source_key for c in info.cameras} or spec.names == ("height", "width", "channels"):
            return ["r", "g", "b"][:width] if width <= 3 else [str(i) for i in range(width)]
        return list(spec.names)
    if feature in {c.source_key for c in info.cameras} and width == 3:
        return ["r", "g", "b"]
    if feature == "observation.state" and width == len(info.state_names):
        return list(info.state_names)
    if feature == "action" and width == len(info.action_names):
        return list(info.action_names)
    return [str(i) for i in range(width)] if width > 1 else ["value"]


def print_stats(info: DatasetInfo, out: TextIO) -> None:
    if not info.stats:
        out.write("stats: none stored\n")
        return
    out.write("stats (per dimension)\n")
    for feature, feat in info.stats.items():
        means = np.asarray(feat.get("mean", []), dtype=np.float64).reshape(-1)
        width = means.size
        count = feat.get("count")
        count_txt = f", count {int(np.asarray(count).reshape(-1)[0])}" if count is not None else ""
        out.write(f"  {feature}{count_txt}\n")
        cols = [k for k in ("mean", "std", "min", "max", "q01", "q99") if k in feat]
        values: dict[str, npt.NDArray[np.float64]] = {}
        for key in cols:
            arr = np.asarray(feat[key], dtype=np.float64).reshape(-1)
            if arr.size == width:
                values[key] = arr
        labels = _stat_rows(feature, info, width)
        label_w = max(12, *(len(lbl) for lbl in labels))
        out.write("    " + " " * label_w + "".join(f"{k:>10s}" for k in values) + "\n")
        for i, label in enumerate(labels):
            out.write(
                "    " + f"{label:<{label_w}s}" + "".join(_fmt(float(v[i])) for v in values.values()) + "\n"
            )


def print_info(ds: Dataset, out: TextIO, max_episodes: int = 40) -> None:
    info = ds.info
    out.write(f"dataset   {info.path}\n")
    out.write(f"format    {info.format}\n")
    out.write(f"robot     {info.robot_type or '-'}\n")
    out.write(f"fps       {info.fps:g}\n")
    out.write(f"episodes  {info.num_episodes}\n")
    out.write(f"frames    {info.num_frames}\n")
    indices = ds.episode_indices()
    shown = indices if len(indices) <= max_episodes else indices[: max_episodes - 5] + indices[-5:]
    out.write("\nepisodes (index, length, task)\n")
    for pos, i in enumerate(shown):
        if len(shown) < len(indices) and pos == max_episodes - 5:
            out.write(f"  ... {len(indices) - len(shown)} more ...\n")
        meta = ds.episode_meta(i)
        out.write(f"  {meta.index:6d} {meta.length:7d}  {meta.task or '-'}\n")
    out.write(f"\ntasks ({len(info.tasks)})\n")
    for k, task in enumerate(info.tasks):
        out.write(f"  {k}: {task}\n")
    if info.roles:
        out.write("\nroles (which stored array is what; the option changes it)\n")
        for line in info.roles:
            out.write(f"  {line}\n")
    out.write(f"\nstate  ({info.state_dim}): {', '.join(info.state_names)}\n")
    out.write(f"action ({info.action_dim}): {', '.join(info.action_names)}\n")
    out.write("\nfeatures (key, dtype, shape, names)\n")
    for key, spec in info.features.items():
        names = ", ".join(spec.names) if spec.names else "-"
        out.write(f"  {key:<32s} {spec.dtype:<8s} {list(spec.shape)!s:<16s} {names}\n")
    out.write("\ncameras (name, HxW, source)\n")
    if not info.cameras:
        out.write("  none\n")
    for cam in info.cameras:
        out.write(f"  {cam.name:<16s} {cam.height}x{cam.width:<8d} {cam.source_key}\n")
    out.write("\n")
    print_stats(info, out)
    out.write("\nnotes\n")
    if not info.notes:
        out.write("  none\n")
    for note in info.notes:
        out.write(f"  - {note}\n")


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--max-episodes", type=int, default=40, help="list at most this many episodes")
    parser.add_argument("--verify", choices=("quick", "full", "none"), default="quick",
                        help="file check: quick = parquet footers, video containers with their first and last "
                             "frames, counts vs the episode index (default); full = also every data page and "
                             "video frame (as slow as reading the dataset); none = skip")
    parser.add_argument("--no-verify", dest="verify", action="store_const", const="none", help="= --verify none")


def _run_info(args: argparse.Namespace, out: TextIO) -> int:
    """Print the summary, then check every file it rests on: exit 2 naming each broken file."""
    ds = open_from_args(args)
    print_info(ds, out, max_episodes=max(args.max_episodes, 6))
    if args.verify == "none":
        return EXIT_OK
    checks = check_files(ds, full=args.verify == "full")
    root = Path(ds.info.path)
    how = "every page and frame" if args.verify == "full" else "footers, containers, first/last frames"
    out.write(f"\nfiles ({len(checks)} checked: {how}, counts vs the episode index)\n")
    for line in file_lines(checks, root):
        out.write(line + "\n")
    broken = broken_summary(checks, root)
    for line in broken:
        sys.stderr.write(f"error: {root}: {line}\n")
    return EXIT_DATASET_ERROR if broken else EXIT_OK


# ---- stats / doctor ----------------------------------------------------------------------------------------


def _stats_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    stats_tool.add_arguments(parser)


def _run_stats(args: argparse.Namespace, out: TextIO) -> int:
    return stats_tool.run(open_from_args(args), args, out)


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    doctor.add_arguments(parser)


def _run_doctor(args: argparse.Namespace, out: TextIO) -> int:
    return doctor.run(open_from_args(args), args, out)


def _oracle_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    oracle.add_arguments(parser)


def _run_oracle(args: argparse.Namespace, out: TextIO) -> int:
    return oracle.run(open_from_args(args), args, out)


COMMANDS: dict[str, Command] = {
    "info": Command(
        "info", "summarize a dataset (episodes, tasks, features, cameras, stats) and check that every file reads; "
        "exit 2 naming a broken file", _info_arguments, _run_info
    ),
    "stats": Command(
        "stats", "exact norm stats (openpi norm_stats.json, LeRobot stats.json, or ours)", _stats_arguments,
        _run_stats,
    ),
    "doctor": Command(
        "doctor",
        "check a dataset (and a checkpoint's normalization of it); exit 0 clean, 1 warnings, 2 errors",
        _doctor_arguments,
        _run_doctor,
    ),
    "oracle": Command(
        "oracle",
        "compare a policy's chunks with the dataset's own next actions (per joint, per step); exit 0 when it ran",
        _oracle_arguments,
        _run_oracle,
    ),
    "compare-reference": Command(
        "compare-reference",
        "compare a dataset with a known-good one or a rig recording: cameras (resolution, colour, R/B channel order), "
        "fps, joint ranges, start poses; exit 0 clean, 1 warnings, 2 errors",
        reference.add_arguments, reference.run,
    ),
    "sim": Command(
        "sim", "replay an episode's actions on the MuJoCo arms; exit 0 tracked, 1 beyond threshold, 2 refused",
        arm_replay.add_sim_arguments, arm_replay.replay_sim,
    ),
    "real": Command(
        "real", "preview, then (with --i-understand-this-moves-the-arm) replay an episode on the real arms",
        arm_replay.add_real_arguments, arm_replay.replay_real,
    ),
    "view": Command(
        "view",
        "look at a dataset or recording in rerun: save an .rrd, serve it, or stream it to a viewer",
        view_cli.add_arguments,
        view_cli.run,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m replay", description="Dataset tools for the YAM stack.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for command in COMMANDS.values():
        sp = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sp)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stream = out if out is not None else sys.stdout
    try:
        return COMMANDS[args.command].run(args, stream)
    except (DatasetError, NormalizationError) as err:
        sys.stderr.write(f"error: {err}\n")
        return EXIT_DATASET_ERROR
