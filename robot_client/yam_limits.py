"""YAM joint position limits by joint name, read from the bundled robot config, for the tools that check, clip
or generate data (training's output clip, the doctor's outlier check, the sample dataset).

Why from the robot config: its `[limits.*]` tables are what the servo loop actually enforces on the arms, so a
tool that reads them here can never disagree with the robot. Values are i2rt's `yam.xml` limits in radians; the
gripper is the normalized opening (0 = closed, 1 = open).

Why by name: datasets and policy configs name joints ("left_joint3", "right_gripper"); matching the suffix lets
both arms and any prefix use one table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from types import MappingProxyType

from robot_client.config import RobotConfigError, load_robot_config

YAM_CONFIG = "bimanual_yam"  # the bundled config whose limits are the YAM's


@cache
def yam_joint_limits() -> Mapping[str, tuple[float, float]]:
    """{"joint1": (lower, upper), ..., "joint6": ..., "gripper": (0.0, 1.0)}: one arm's position limits, the
    same on every arm of the bundled config (the joint's index in its arm, 1-based, names it)."""
    config = load_robot_config(YAM_CONFIG)
    table: dict[str, tuple[float, float]] = {}
    for arm in config.arms:
        for i, name in enumerate(arm.names):
            key = "gripper" if name == arm.gripper else f"joint{i + 1}"
            limit = (config.limits[name].lower, config.limits[name].upper)
            if table.setdefault(key, limit) != limit:
                raise RobotConfigError(f"{config.source}: {name} has limits {limit}, another arm's {key} has "
                                       f"{table[key]}; the YAM table needs one pair per joint")
    return MappingProxyType(table)


def yam_limit(name: str) -> tuple[float, float] | None:
    """The YAM limit of a joint whose name ends in one of the table's keys (e.g. 'left_joint2'), else None."""
    lowered = name.lower()
    for key, limit in yam_joint_limits().items():
        if lowered == key or lowered.endswith("_" + key) or lowered.endswith("." + key):
            return limit
    return None


def yam_limits(names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """{name: (lower, upper)} for every name that matches a YAM joint; unmatched names are left out."""
    return {n: lim for n in names if (lim := yam_limit(n)) is not None}
