"""Joint checks of the rig against its dataset: names, ranges, episode start poses, gripper convention.

Why each matters on the arm:
- names: the client refuses a policy whose state/action names differ from the config's (robot_client.rig.
  check_names); better to learn it here than at the robot.
- ranges: states or actions beyond a configured position limit are poses this rig will not go to (the servo
  clamps targets into the limits), so the policy reproduces the demonstrations only partly, or the limits
  are wrong.
- start poses: an episode that starts beyond a limit cannot be set up on this rig at all.
- gripper convention: the rig's grippers are 0 (closed) .. 1 (open); data in 0..100, in motor radians, or
  never reaching one end was recorded (or mapped) with another convention, and a policy trained on it
  commands the wrong opening.
Thresholds are stated in JointThresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.check_inputs import F64, DataSummary, RigSpec
from policy_norm.joint_names import NAME_MAP_FLAG, joint_name_mismatch
from replay.doctor.findings import Finding


@dataclass(frozen=True)
class JointThresholds:
    """limit_margin: a value beyond a position limit by more than this (rad; gripper units) is an error (data
    sits on the limits exactly when it was clipped to them; sensor noise there is ~0.002).
    unit_slack: gripper values within [-unit_slack, 1 + unit_slack] count as the 0..1 convention.
    open_min / closed_max: the gripper actions must reach at least open_min and at most closed_max somewhere in
    the dataset, or they never open / close (a scaled or offset range).
    start_open: the median episode-start gripper state below this means the data starts closed: inverted?
    (demonstrations start with open grippers)."""

    limit_margin: float = 0.02
    unit_slack: float = 0.05
    open_min: float = 0.75
    closed_max: float = 0.25
    start_open: float = 0.5


def column_map(rig_names: tuple[str, ...], data_names: tuple[str, ...]) -> tuple[dict[str, int], bool]:
    """Dataset column of each rig joint: by name; by position when no name matches and the dims agree (a
    dataset with generic names). The flag says whether positions were used."""
    by_name = {n: data_names.index(n) for n in rig_names if n in data_names}
    if not by_name and len(rig_names) == len(data_names):
        return {n: i for i, n in enumerate(rig_names)}, True
    return by_name, False


def check_names(rig: RigSpec, data: DataSummary) -> list[Finding]:
    """The dataset's state and action names against the config's joints (policy_norm.joint_names, the comparison
    the client makes), with the --name-map that would rename them when one would."""
    out: list[Finding] = []
    expected = rig.config.joint_names
    for label, names in (("state", data.state_names), ("action", data.action_names)):
        problem = joint_name_mismatch(expected, names, label, other="dataset", hint_flag=NAME_MAP_FLAG)
        if problem is None:
            continue
        out.append(Finding("error", "joint_names", f"{label} names",
                           f"{problem} (the client refuses a policy whose {label} names differ from the config)"))
    return out


def _arm_joints(rig: RigSpec) -> set[str]:
    """Joints other than grippers: a gripper's range is the gripper convention check's (one finding, not two)."""
    grippers = {rig.config.joint_names[i] for i in rig.config.gripper_indices()}
    return set(rig.config.joint_names) - grippers


def check_ranges(rig: RigSpec, data: DataSummary, th: JointThresholds) -> list[Finding]:
    out: list[Finding] = []
    arm = _arm_joints(rig)
    for label, arr, names in (("state", data.states, data.state_names), ("action", data.actions, data.action_names)):
        cols, by_position = column_map(rig.config.joint_names, names)
        if arr.shape[0] == 0:
            continue
        for joint, j in cols.items():
            if joint not in arm:
                continue
            col = arr[:, j][np.isfinite(arr[:, j])]
            if col.size == 0:
                continue
            lim = rig.config.limits[joint]
            lo, hi = float(col.min()), float(col.max())
            note = " (dims matched by position)" if by_position else ""
            if lo < lim.lower - th.limit_margin or hi > lim.upper + th.limit_margin:
                beyond = int(np.sum((col < lim.lower - th.limit_margin) | (col > lim.upper + th.limit_margin)))
                out.append(Finding(
                    "error", "range_beyond_limits", f"{label} {joint}",
                    f"{joint} {label}s span [{lo:.4g}, {hi:.4g}] but the config limits are [{lim.lower:g}, "
                    f"{lim.upper:g}] (+/- {th.limit_margin:g}); {beyond} of {col.size} frames beyond{note}",
                ))
    return out


def check_start_poses(rig: RigSpec, data: DataSummary, th: JointThresholds) -> list[Finding]:
    cols, _ = column_map(rig.config.joint_names, data.state_names)
    arm = _arm_joints(rig)
    out: list[Finding] = []
    for joint, j in cols.items():
        if joint not in arm:
            continue
        lim = rig.config.limits[joint]
        bad = [(ep, float(s[j])) for ep, s in data.starts
               if not lim.lower - th.limit_margin <= float(s[j]) <= lim.upper + th.limit_margin]
        if bad:
            ep, value = bad[0]
            out.append(Finding(
                "error", "start_pose_beyond_limits", f"episode {ep} start {joint}",
                f"episode {ep} starts with {joint} = {value:.4g}, outside the config limits [{lim.lower:g}, "
                f"{lim.upper:g}] (+/- {th.limit_margin:g}); {len(bad)} of {len(data.starts)} episodes start beyond",
            ))
    return out


def _looks_like(lo: float, hi: float) -> str:
    if lo >= -5.0 and 1.5 < hi <= 110.0:
        return "0..100 (percent; divide by 100)"
    if hi > 2.0 or lo < -0.5:
        return "raw motor radians (not normalized by the gripper calibration)"
    return "a range other than 0..1"


def _gripper(label: str, joint: str, col: F64, starts: F64 | None, th: JointThresholds) -> list[Finding]:
    lo, hi = float(col.min()), float(col.max())
    where = f"{label} {joint}"
    if lo < -th.unit_slack or hi > 1.0 + th.unit_slack:
        return [Finding("error", "gripper_convention", where,
                        f"{joint} {label}s span [{lo:.4g}, {hi:.4g}], which looks like {_looks_like(lo, hi)}; this "
                        f"rig's grippers are 0 = closed .. 1 = open")]
    out: list[Finding] = []
    if starts is not None and starts.size and float(np.median(starts)) < th.start_open:
        out.append(Finding("warning", "gripper_inverted", where,
                           f"episodes start with {joint} at a median {float(np.median(starts)):.3g} (closed, if 0 = "
                           f"closed); demonstrations usually start open: is the convention inverted (0 = open)?"))
    if label == "action":
        if hi < th.open_min:
            out.append(Finding("warning", "gripper_never_opens", where,
                               f"{joint} actions never exceed {hi:.3g} (expected to reach >= {th.open_min:g}, near 1 = "
                               f"open): a scaled or offset gripper range?"))
        if lo > th.closed_max:
            out.append(Finding("warning", "gripper_never_closes", where,
                               f"{joint} actions never go below {lo:.3g} (expected to reach <= {th.closed_max:g}, near "
                               f"0 = closed): a scaled or offset gripper range?"))
    return out


def check_grippers(rig: RigSpec, data: DataSummary, th: JointThresholds) -> list[Finding]:
    grippers = [rig.config.joint_names[i] for i in rig.config.gripper_indices()]
    out: list[Finding] = []
    for label, arr, names in (("state", data.states, data.state_names), ("action", data.actions, data.action_names)):
        cols, _ = column_map(rig.config.joint_names, names)
        for joint in grippers:
            if joint not in cols or arr.shape[0] == 0:
                continue
            col = arr[:, cols[joint]]
            col = col[np.isfinite(col)]
            if col.size == 0:
                continue
            starts = None
            if label == "state":
                starts = np.array([float(s[cols[joint]]) for _, s in data.starts])
            out += _gripper(label, joint, col, starts, th)
    return out
