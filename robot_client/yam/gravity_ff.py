"""The gravity feed-forward of one real arm, as the `YamArm.feedforward` hook.

Why here and not in the arm: the arm only knows motor frames; which torque to add is a model question
(`robot_client.gravity`), and the calibration procedure needs the same computation with other factors. The
hook receives the measured joint angles with the zero offsets applied (the model's joint angles) and the gripper's
motor position, which the gripper's calibrated (closed, open) limits turn into the opening the model's fingers
take (their mass moves a little with it). The gripper motor itself gets no feed-forward.

Not thread-safe (one MuJoCo data buffer): one hook per arm, called from whoever builds that arm's frames under the
robot's lock.
"""

from __future__ import annotations

import numpy as np

from robot_client.config import ArmConfig
from robot_client.gravity import ARM_JOINTS, GravityConfig, GravityModel
from robot_client.robot import RobotError
from robot_client.yam.arm import F64


def gravity_config(arm: ArmConfig, factors: tuple[float, ...] | None = None) -> GravityConfig:
    """The arm's gravity settings from the robot config; `factors` (e.g. calibrated) replace the configured ones."""
    return GravityConfig(enabled=arm.gravity_compensation,
                         factors=arm.gravity_factors if factors is None else tuple(factors),
                         clip_nm=arm.gravity_clip_nm)


class ArmGravity:
    """FeedForward for one arm: the model's gravity torque at the measured pose, scaled and clipped."""

    def __init__(self, config: GravityConfig, gripper_limits: tuple[float, float] | None = None,
                 model: GravityModel | None = None) -> None:
        """`gripper_limits`: (closed, open) gripper motor rad; None = treat the gripper as open."""
        self.model = model or GravityModel(config)
        self.model.config = config
        self.gripper_limits = gripper_limits

    @property
    def config(self) -> GravityConfig:
        return self.model.config

    def opening(self, gripper_motor: float) -> float:
        """Normalized opening (0 closed .. 1 open, clipped) of a gripper motor position."""
        if self.gripper_limits is None:
            return 1.0
        closed, opened = self.gripper_limits
        return float(np.clip((gripper_motor - closed) / (opened - closed), 0.0, 1.0))

    def joint_torques(self, positions: F64) -> F64:
        """The six joints' feed-forward (N m) for measured positions [6 joint angles, gripper motor rad]."""
        return self.model.torques(positions[:ARM_JOINTS], self.opening(float(positions[ARM_JOINTS])))

    def __call__(self, arm_name: str, positions: F64, velocities: F64) -> F64:
        if positions.shape != (ARM_JOINTS + 1,):
            raise RobotError(f"arm '{arm_name}': gravity feed-forward needs {ARM_JOINTS} joints and a gripper, got "
                             f"{positions.shape[0]} positions")
        out = np.zeros(ARM_JOINTS + 1)
        out[:ARM_JOINTS] = self.joint_torques(positions)
        return out
