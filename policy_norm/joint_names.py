"""Do a policy's joint names match the robot's, name for name and in order?

Why one comparison for every side: a policy's state and action dims are positional, so a reordered or renamed
joint sends joint3's action to joint4 without any error downstream. The robot client checks the served policy
at connect, the server checks its policy config against a robot config at start, and the policy config draft
checks a dataset against the robot; all three say the same thing, naming the first joint that differs, so the
message reads the same wherever the mismatch is caught. It lives on the ground floor because the server and
the robot client must not import each other.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_name_mismatch(robot_names: Sequence[str], other_names: Sequence[str]) -> int | None:
    """Index of the first position where the two name lists differ (a missing name counts); None if equal."""
    robot, other = tuple(robot_names), tuple(other_names)
    if robot == other:
        return None
    for i, (a, b) in enumerate(zip(robot, other, strict=False)):
        if a != b:
            return i
    return min(len(robot), len(other))


def joint_name_mismatch(robot_names: Sequence[str], other_names: Sequence[str], what: str,
                        other: str = "policy") -> str | None:
    """None when `other_names` are the robot's joint names in the robot's order; else what differs, starting
    with the first mismatch, e.g. "state names do not match the robot config: first mismatch at state[3]:
    policy 'left_joint5', robot 'left_joint4'; same names, different order: ...".

    `what` names the feature ("state", "action"); `other` names whose names they are ("policy", "dataset").
    """
    index = first_name_mismatch(robot_names, other_names)
    if index is None:
        return None
    robot, theirs = tuple(robot_names), tuple(other_names)

    def at(names: tuple[str, ...]) -> str:
        return repr(names[index]) if index < len(names) else "nothing (too few names)"

    first = f"first mismatch at {what}[{index}]: {other} {at(theirs)}, robot {at(robot)}"
    missing = [n for n in theirs if n not in robot]
    extra = [n for n in robot if n not in theirs]
    detail = f"{other} {what} names missing on the robot: {missing}; robot joints the {other} lacks: {extra}" \
        if missing or extra else f"same names, different order: {other} {list(theirs)}, robot {list(robot)}"
    return f"{what} names do not match the robot config: {first}; {detail}"
