"""The dataset options every `python -m replay` command shares, and opening a dataset from them.

Why one place: a dataset whose format does not say which array is the state (DP zarr) or whose joints follow
another naming convention (`left_joint_0` for the robot's `left_joint1`) needs the same options in info,
doctor, oracle, sim and real, and a name map typed for one command must mean the same in the next. The map is
applied once, when the dataset is opened (`Dataset.rename_joints`), so every check after it (joint limits,
action names against the robot, the oracle's policy names) sees the robot's names.
"""

from __future__ import annotations

import argparse
from typing import Any

from policy_norm.joint_names import NAME_MAP_FLAG, NameMapError, parse_name_map
from robodata.dataset import Dataset, DatasetError
from robodata.open import open_dataset
from robot_client.config import RobotConfigError, load_robot_config

# The robot config a name map's `index+N` shorthand is resolved against when the command names none.
DEFAULT_ROBOT_CONFIG = "bimanual_yam"


def parse_episodes(text: str) -> tuple[int, ...]:
    """ "0,2,5-7" -> (0, 2, 5, 6, 7)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"episodes must look like 0,2,5-7; got '{text}'") from err
    return tuple(out)


def _key_list(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    if not keys:
        raise argparse.ArgumentTypeError("give one or more array names separated by commas, e.g. camera_0,camera_1")
    return keys


def add_role_arguments(parser: argparse.ArgumentParser) -> None:
    """Which stored array is the state, the action, a camera, the clock; and the joint-name map."""
    parser.add_argument("--state-key", default=None, metavar="KEY",
                        help="array/feature holding the state (LeRobot: observation.state; DP zarr: picked by "
                             "name, see `replay info`)")
    parser.add_argument("--action-key", default=None, metavar="KEY", help="array/feature holding the action")
    parser.add_argument("--image-keys", type=_key_list, default=None, metavar="A,B",
                        help="DP zarr only: the arrays to read as cameras (default: uint8 [T,H,W,3] arrays named "
                             "like cameras)")
    parser.add_argument("--timestamp-key", default=None, metavar="KEY", help="DP zarr only: the time array")
    parser.add_argument(NAME_MAP_FLAG, dest="name_map", default=None, metavar="MAP",
                        help="rename the dataset's joints to the robot's: a .toml/.json file ([names] table of "
                             "dataset name = robot name), pairs left_joint_0=left_joint1,..., and/or index+1 "
                             "(same stem, index shifted, resolved against the robot config)")


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every dataset command takes; only the ones given are passed to the reader."""
    parser.add_argument("--dataset", required=True, help="dataset folder (LeRobot, DP zarr, recording)")
    parser.add_argument("--episodes", type=parse_episodes, default=None, help="subset, e.g. 0,2,5-7")
    parser.add_argument("--fps", type=float, default=None, help="DP zarr only: control rate (default: estimated)")
    parser.add_argument(
        "--include-incomplete", action="store_true", help="recordings only: also read incomplete episodes"
    )
    add_role_arguments(parser)


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """Reader options from the flags that were given (a flag a format does not take is refused by name)."""
    options: dict[str, Any] = {}
    if getattr(args, "episodes", None) is not None:
        options["episodes"] = args.episodes
    if getattr(args, "fps", None) is not None:
        options["fps"] = args.fps
    if getattr(args, "include_incomplete", False):
        options["include_incomplete"] = True
    for flag, key in (("state_key", "state_key"), ("action_key", "action_key"), ("image_keys", "image_keys"),
                      ("timestamp_key", "timestamp_key")):
        value = getattr(args, flag, None)
        if value is not None:
            options[key] = value
    return options


def robot_joint_names(config_name: str | None) -> tuple[str, ...]:
    """The joint names of a robot config (the bundled default when None)."""
    try:
        return load_robot_config(config_name or DEFAULT_ROBOT_CONFIG).joint_names
    except RobotConfigError as err:
        raise DatasetError(f"{NAME_MAP_FLAG}: cannot read the robot config to resolve names against: {err}") from err


def map_joint_names(ds: Dataset, spec: str | None, robot_names: tuple[str, ...]) -> Dataset:
    """Rename the dataset's state and action joints by the map `spec` (a --name-map value); no-op for None.

    Raises DatasetError naming the map entry, file or clash: a map that names nothing in the dataset or gives
    two joints one name is refused, never half-applied.
    """
    if spec is None:
        return ds
    info = ds.info
    try:
        name_map = parse_name_map(spec)
        name_map.check_entries(info.state_names, info.action_names)
        state = name_map.apply(info.state_names, robot_names, "state names")
        action = name_map.apply(info.action_names, robot_names, "action names")
    except NameMapError as err:
        raise DatasetError(str(err)) from err
    changed = name_map.describe((*info.state_names, *info.action_names), robot_names, limit=6)
    ds.rename_joints(state, action, f"joint names mapped by {name_map.source}: {changed}")
    return ds


def open_from_args(args: argparse.Namespace, robot_names: tuple[str, ...] | None = None) -> Dataset:
    """Open `args.dataset` with the given reader options and apply `--name-map` (its shorthand resolved against
    `robot_names`, else the command's --robot-config, else the bundled default)."""
    ds = open_dataset(args.dataset, **dataset_options(args))
    spec = getattr(args, "name_map", None)
    if spec is not None and robot_names is None:
        robot_names = robot_joint_names(getattr(args, "robot_config", None))
    return map_joint_names(ds, spec, robot_names or ())
