"""YAM joint limits by joint name, for the output clip step and the doctor's outlier check.

Why by name: datasets and policy configs name joints ("left_joint3", "right_gripper"); matching the suffix
lets both arms and any prefix use one table. Values are i2rt's `yam.xml` limits in radians; the gripper is the
normalized opening (0 = closed, 1 = open).
"""

from __future__ import annotations

from collections.abc import Sequence

YAM_JOINT_LIMITS: dict[str, tuple[float, float]] = {
    "joint1": (-2.618, 3.1416),
    "joint2": (0.0, 3.6652),
    "joint3": (0.0, 3.1416),
    "joint4": (-1.693, 1.5708),
    "joint5": (-1.5708, 1.5708),
    "joint6": (-2.0944, 2.0944),
    "gripper": (0.0, 1.0),
}


def yam_limit(name: str) -> tuple[float, float] | None:
    """The YAM limit of a joint whose name ends in one of the table's keys (e.g. 'left_joint2'), else None."""
    lowered = name.lower()
    for key, limit in YAM_JOINT_LIMITS.items():
        if lowered == key or lowered.endswith("_" + key) or lowered.endswith("." + key):
            return limit
    return None


def yam_limits(names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """{name: (lower, upper)} for every name that matches a YAM joint; unmatched names are left out."""
    return {n: lim for n in names if (lim := yam_limit(n)) is not None}
