"""Gravity torque of one YAM arm at a measured pose, from the arm's MuJoCo model.

Why: the motors run the MIT law tau = kp (p_des - p) + kd (v_des - v) + tau_ff with modest gains (kp 80 on the
big joints, 10 on the wrist), so without a feed-forward the arm sags under its own weight (about 0.2 rad on
joint 2 at some poses) and tracks every target low while staying under the tracking-error fault. The maker's
driver adds the gravity torque every cycle, in hold and in tracking: MuJoCo inverse dynamics at the measured pose
with zero velocity and acceleration, scaled per joint by [1.0, 1.1, 1.1, 1.2, 1.0, 1.0]; LeRobot's native YAM
follower clips it to +-10 N m. This module is the one place that computes it, for the CAN driver and for the
simulator's motor law alike.

The model is `robot_client/sim/assets/yam_arm.xml` (six joints, the gripper housing on link 6 and its two fingers, so
the gripper's mass counts). Its bodies carry `gravcomp="1"` for the simulator's position-actuated mode; here that is
switched off on a private copy, otherwise inverse dynamics would see gravity already cancelled and return zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

ARM_MODEL = Path(__file__).resolve().parent / "sim" / "assets" / "yam_arm.xml"
ARM_JOINTS = 6
# Per-finger travel of the linear_4310 gripper (m) at gripper value 1 (open); the model's finger slide range.
FINGER_TRAVEL_M = 0.0475
# i2rt's current per-joint factors (robots/config/yam.yml).
MAKER_FACTORS = (1.0, 1.1, 1.1, 1.2, 1.0, 1.0)


class GravityConfigError(ValueError):
    """A gravity-compensation setting that cannot be used (names the field)."""


@dataclass(frozen=True)
class GravityConfig:
    """Gravity feed-forward of one arm. `factors` scale the model's torque per joint (fitted on the real arm by
    `python -m calibration gravity`); `clip_nm` bounds each joint's feed-forward (ArmConfig says why 20 N m)."""

    enabled: bool = True
    factors: tuple[float, ...] = MAKER_FACTORS
    clip_nm: float = 20.0

    def __post_init__(self) -> None:
        if len(self.factors) != ARM_JOINTS:
            raise GravityConfigError(f"gravity factors: expected {ARM_JOINTS} values (joints 1-6), "
                                     f"got {len(self.factors)}")
        if not all(np.isfinite(f) and 0.0 <= f <= 3.0 for f in self.factors):
            raise GravityConfigError(f"gravity factors must lie in [0, 3], got {list(self.factors)}")
        if not (np.isfinite(self.clip_nm) and self.clip_nm > 0):
            raise GravityConfigError(f"gravity clip_nm must be > 0, got {self.clip_nm}")


class GravityModel:
    """Inverse dynamics of one arm at rest: `torques(joints, gripper)` -> the feed-forward per joint (N m).

    Not thread-safe (one MjData); give each thread or arm its own instance."""

    def __init__(self, config: GravityConfig | None = None, model_path: Path = ARM_MODEL) -> None:
        self.config = config or GravityConfig()
        self.model = mujoco.MjModel.from_xml_path(str(model_path))
        self.model.body_gravcomp[:] = 0.0
        # No constraints: a joint resting on its stop reads a hair outside its range, and inverse dynamics would
        # then add the limit's reaction (measured: -13 N m on joint 2 at -0.01 rad), i.e. push the arm into the
        # stop; joint friction loss is a constraint too and has no place in a static torque.
        self.model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONSTRAINT)
        if self.model.nq < ARM_JOINTS:
            raise GravityConfigError(f"{model_path}: {self.model.nq} joints, expected at least {ARM_JOINTS}")
        self.data = mujoco.MjData(self.model)
        self._fingers = [self.model.joint(i).qposadr[0] for i in range(self.model.njnt)
                         if self.model.joint(i).type == mujoco.mjtJoint.mjJNT_SLIDE]

    def raw(self, joints: npt.ArrayLike, gripper: float = 1.0) -> F64:
        """The model's gravity torque per arm joint (N m), unscaled and unclipped. `joints`: six angles (rad);
        `gripper`: 0 = closed .. 1 = open (the fingers open symmetrically, so today's model gives the same torque
        at any opening; kept so a gripper with an asymmetric stroke needs no new signature)."""
        q = np.asarray(joints, dtype=np.float64)
        if q.shape != (ARM_JOINTS,) or not np.isfinite(q).all():
            raise ValueError(f"joints: expected {ARM_JOINTS} finite angles, got {q!r}")
        d = self.data
        d.qpos[:ARM_JOINTS] = q
        opening = float(np.clip(gripper, 0.0, 1.0)) * FINGER_TRAVEL_M if np.isfinite(gripper) else 0.0
        for adr in self._fingers:
            d.qpos[adr] = opening
        d.qvel[:] = 0.0
        d.qacc[:] = 0.0
        mujoco.mj_inverse(self.model, d)
        return np.array(d.qfrc_inverse[:ARM_JOINTS], dtype=np.float64)

    def torques(self, joints: npt.ArrayLike, gripper: float = 1.0) -> F64:
        """The feed-forward to send: the model torque times the factors, clipped to +-clip_nm; zeros when off."""
        if not self.config.enabled:
            return np.zeros(ARM_JOINTS)
        tau = self.raw(joints, gripper) * np.asarray(self.config.factors)
        return np.asarray(np.clip(tau, -self.config.clip_nm, self.config.clip_nm), dtype=np.float64)


def fit_factors(raw_torques: npt.ArrayLike, measured_torques: npt.ArrayLike) -> tuple[F64, F64]:
    """Per-joint least-squares factor f_j minimising sum_k (f_j * raw_kj - measured_kj)^2 over K still poses.

    `raw_torques`, `measured_torques`: [K, 6] (the model's torque and the torque the motor reported while holding
    still). Returns (factors, rms residual per joint). A joint whose model torque is ~0 at every pose (joint 1 on a
    level base) cannot be fitted and keeps factor 1.0."""
    raw = np.asarray(raw_torques, dtype=np.float64)
    meas = np.asarray(measured_torques, dtype=np.float64)
    if raw.shape != meas.shape or raw.ndim != 2 or raw.shape[1] != ARM_JOINTS:
        raise ValueError(f"raw and measured torques must both be [K, {ARM_JOINTS}], got {raw.shape} and "
                         f"{meas.shape}")
    if not (np.isfinite(raw).all() and np.isfinite(meas).all()):
        raise ValueError("torques must be finite")
    denom = (raw ** 2).sum(axis=0)
    fittable = denom > 1e-6 * max(1, raw.shape[0])
    factors = np.where(fittable, (raw * meas).sum(axis=0) / np.where(fittable, denom, 1.0), 1.0)
    residual = np.sqrt(((raw * factors - meas) ** 2).mean(axis=0))
    return factors, residual
