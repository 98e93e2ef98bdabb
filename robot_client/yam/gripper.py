"""Gripper motor radians <-> normalized opening (0 = closed, 1 = open).

The linear grippers' motors travel more than 2 pi over the stroke, so the motor position alone does not say
how open the jaw is: the closed and open motor positions are measured per arm (`python -m calibration gripper`,
written to the rig calibration file) or pinned in the robot config as `gripper_limits = [closed, open]`; the
file wins (`robot_client.yam.rig_calibration`). Either order is valid (open may be below closed, e.g. a motor
mounted in reverse). Without them the gripper cannot be driven safely, so the driver refuses to enable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from robot_client.config import ArmConfig
from robot_client.robot import RobotError


class GripperCalibrationError(RobotError):
    """The gripper has no (usable) calibrated limits; the message says how to calibrate."""


@dataclass(frozen=True)
class GripperMap:
    closed: float  # motor rad at normalized 0
    open: float  # motor rad at normalized 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.closed) and math.isfinite(self.open)) or abs(self.open - self.closed) < 1e-3:
            raise GripperCalibrationError(f"gripper limits (closed={self.closed}, open={self.open}) span nothing")

    @property
    def span(self) -> float:
        return self.open - self.closed

    def to_motor(self, opening: float) -> float:
        """Motor target for a normalized opening, clipped to [0, 1] first so no target leaves the stroke."""
        if not math.isfinite(opening):
            raise ValueError(f"gripper opening must be finite, got {opening}")
        return self.closed + min(1.0, max(0.0, opening)) * self.span

    def to_normalized(self, motor_position: float) -> float:
        """Normalized opening of a measured motor position (not clipped: a reading past a stop stays visible)."""
        return (motor_position - self.closed) / self.span

    def rate_to_normalized(self, motor_rate: float) -> float:
        """Velocity (rad/s) in normalized units per second."""
        return motor_rate / self.span


def gripper_map_for(arm: ArmConfig, p_max: float) -> GripperMap:
    """The arm's gripper map; refuses an uncalibrated gripper or limits the motor cannot be commanded to."""
    if arm.gripper_limits is None:
        raise GripperCalibrationError(
            f"{arm.gripper}: the gripper is not calibrated: no gripper range for arm '{arm.name}' in the rig "
            f"calibration file and no gripper_limits in the robot config. Measure it with `python -m calibration "
            f"gripper --calibration FILE --arm {arm.name}` and name FILE as [robot] calibration in the robot config "
            f"(or pass --calibration FILE), or pin gripper_limits = [closed, open] in the arm's table")
    closed, opened = arm.gripper_limits
    for value in (closed, opened):
        if not abs(value) <= p_max:
            raise GripperCalibrationError(
                f"{arm.gripper}: gripper limit {value} rad is outside the motor's +-{p_max} rad command range; "
                f"re-zero the gripper motor and recalibrate")
    return GripperMap(closed=closed, open=opened)
