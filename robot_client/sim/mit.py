"""The simulated arms driven as the real Damiao motors drive them: the MIT law, per physics step.

Why: in the default ("position") actuation the sim's joints are stiff position servos with gravity cancelled per
body, so the sag of the real arm (kp 80 / 10 against the arm's weight), the torque limits of each motor type and the
force of a stalled gripper never show in a test or a demo. In "mit" actuation every robot joint's actuator becomes
the motor's law

    tau = kp (p_des - p) + kd (v_des - v) + tau_ff,   clipped to the motor type's torque range,

with the arm config's gains, v_des the servo's planned velocity (what the real driver sends; 0 for the grippers and
while holding), real gravity acting on every body, and tau_ff the
gravity feed-forward the real driver adds (`robot_client.gravity.GravityModel`, one per arm, at the measured joint
angles of that very step). The law is evaluated at the physics timestep (the real motors run it at kHz; the servo
loop at 200 Hz only moves p_des).

How, with one source of kinematics and masses: the model's actuators are re-parameterised at load, not rewritten.
Each becomes an affine actuator, force = ctrl - kp' * length - kd' * velocity, clamped to the torque range, and each
step sets ctrl = kp' * p_des + s * tau_ff. MuJoCo's implicitfast integrator then treats the kd term implicitly
(stable at 2 ms with the motors' armature already in the model) and the clamp is the motor's torque limit.

Gripper: the robot unit is the opening g (0 closed .. 1 open; the actuator's length through its gear 1 / finger
travel). The linear_4310's motor turns `motor_stroke_rad` (6.57 rad) over the full stroke, so the motor angle is
s * g with s = 6.57, and the law in motor units becomes, in g units, kp' = kp s^2, kd' = kd s^2, force range
+-t_max s, feed-forward s * tau. The motor's rotor inertia and the mechanism's friction (the 0.3 N m the maker's
force limiter allows for) are put on the finger joints, reflected through the transmission, so the jaws move and
press like the motor-driven ones (after the edit, `mj_setConst` recomputes the constraint weights so the heavier
fingers' coupling stays stiff). A stalled motor can push each pad with hundreds of newtons before the force limiter
steps in, so the pads get a harder contact impedance than the model's default (PAD_SOLIMP). The gripper force limiter
(`robot_client.gripper_force`) runs on the motor-unit position, speed and torque each physics step by default, an
idealised driver; `limiter_period_steps` = 2-3 runs it every 3.3-5 ms instead, about the real driver's command frame
(4 ms), holding its gripper frame in between as the motor holds the last frame. A frame is the limiter's target and
law: the configured kp and kd, or while grasping pure torque (kp = kd = 0, the capped push as torque), so each frame
also writes the gripper actuator's kp' and kd' into its biasprm and the push into its ctrl. With kd' = 0 the implicit
integrator has no damping of that actuator to treat; the fingers' friction and the pads' contact damping remain, and
the motor stays a pure force source, which an explicit step integrates stably.

Efforts in this mode are what the motors report: motor torque in N m, the gripper's included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np
import numpy.typing as npt

from robot_client.config import ArmConfig, RobotConfig
from robot_client.gravity import ARM_JOINTS, GravityConfig, GravityModel
from robot_client.gripper_force import GripperForceConfig, GripperForceLimiter, force_config_for
from robot_client.robot import ActuationReport, GraspReport
from robot_client.sim.world import SimModelError, SimWorld
from robot_client.yam.protocol import MOTOR_LIMITS

F64 = npt.NDArray[np.float64]

# Reflected rotor inertia (kg m^2 at the output) per motor type: Menagerie's armature for the YAM (DM4340 0.032,
# DM4310 0.0018). The arm joints already carry these in the model; the gripper's motor needs them on its fingers.
ROTOR_INERTIA: dict[str, float] = {"DM4340": 0.032, "DM4310": 0.0018}
# The sim's own plant is the model the feed-forward is computed from, so factor 1 cancels gravity exactly; the
# real arm's factors (ArmConfig.gravity_factors) describe how the real arm differs from that model.
MODEL_GRAVITY_FACTORS: tuple[float, ...] = (1.0,) * ARM_JOINTS
# Contact impedance (dmin, dmax, width) of the finger pads in this mode (see _install_gripper).
PAD_SOLIMP = (0.95, 0.99, 0.001)


class MitDriveError(SimModelError):
    """The model or config cannot be driven through the MIT law (names the joint or field)."""


@dataclass
class _Arm:
    config: ArmConfig
    joints: npt.NDArray[np.intp]  # robot indices of the arm joints (joint1..6)
    gripper: int  # robot index of the gripper
    gravity: GravityModel | None
    limiter: GripperForceLimiter | None


class MitDrive:
    """Per-step MIT law of every robot joint of a SimWorld (see the module docstring).

    Not thread-safe on its own: SimWorld calls it under the world lock."""

    def __init__(self, config: RobotConfig, world: SimWorld, *, gravity_compensation: bool = True,
                 gravity_factors: Sequence[float] | None = MODEL_GRAVITY_FACTORS,
                 gripper_force_limit: bool = True, limiter_period_steps: int = 1) -> None:
        """`gravity_compensation` and `gripper_force_limit` act only where the arm's config also has them on;
        `gravity_factors` None = each arm's configured factors; `limiter_period_steps`: physics steps between two
        force-limiter updates (see the module docstring). Edits `world.model` in place."""
        if world.joint_names != config.joint_names:
            raise MitDriveError(f"world joints {list(world.joint_names)} differ from the config's "
                                f"{list(config.joint_names)}")
        names = config.joint_names
        self.joint_names = names
        n = len(names)
        self.kp = np.zeros(n)
        self.kd = np.zeros(n)
        self.t_max = np.zeros(n)
        self.scale = np.ones(n)  # motor rad per robot unit
        self.motor_types: list[str] = [""] * n
        self.arms: list[_Arm] = []
        self.force_configs: list[GripperForceConfig] = []  # per arm
        for arm in config.arms:
            idx = [names.index(j) for j in arm.names]
            types = list(arm.motor_types)
            self.kp[idx] = [*arm.kp, arm.gripper_kp]
            self.kd[idx] = [*arm.kd, arm.gripper_kd]
            self.t_max[idx] = [MOTOR_LIMITS[t].t_max for t in types]
            for i, t in zip(idx, types, strict=True):
                self.motor_types[i] = t
            force = force_config_for(arm.gripper_type, arm.gripper_max_force_n)
            self.force_configs.append(force)
            self.scale[idx[-1]] = force.motor_stroke_rad
            gravity = None
            if gravity_compensation and arm.gravity_compensation:
                if len(arm.joints) != ARM_JOINTS:
                    raise MitDriveError(f"arm '{arm.name}': gravity compensation needs {ARM_JOINTS} joints, "
                                        f"got {len(arm.joints)}")
                factors = tuple(arm.gravity_factors if gravity_factors is None else gravity_factors)
                gravity = GravityModel(GravityConfig(enabled=True, factors=factors, clip_nm=arm.gravity_clip_nm))
            limiter = None
            if gripper_force_limit and arm.gripper_force_limit:
                limiter = GripperForceLimiter(force, arm.gripper_kp, arm.gripper_kd)
            self.arms.append(_Arm(arm, np.asarray(idx[:-1], dtype=np.intp), idx[-1], gravity, limiter))
        self._act = np.array([b.actuator for b in world.bindings], dtype=np.intp)
        self._kp_act = self.kp * self.scale ** 2  # the law in robot units (actuator length)
        self._kd_act = self.kd * self.scale ** 2
        # The kp (robot units) and added torque (N m) of each joint's current frame: the configured kp and none,
        # but a grasping gripper's frames run pure torque (robot_client.gripper_force.GripperForceLimiter.law_to_send).
        self._kp_sent = self._kp_act.copy()
        self._push = np.zeros(n)
        self._targets = world.positions()
        self._velocities = np.zeros(n)  # v_des per robot joint (robot units/s)
        self.limiter_period_steps = limiter_period_steps
        self._limited: dict[int, float] = {}  # arm index -> gripper target the limiter sent last (robot units)
        self._steps = 0  # physics steps driven since reset()
        self.sent = self._targets.copy()  # the targets the motors got in the last step (after the force limiter)
        self.feedforward = np.zeros(n)  # motor-unit tau_ff of the last step (N m)
        self._ff_sum = np.zeros(n)  # |tau_ff| summed over the steps since reset_stats()
        self._ff_max = np.zeros(n)
        self._ff_steps = 0
        self._install(world)

    # -- model -------------------------------------------------------------------------------------------------
    def _install(self, world: SimWorld) -> None:
        m = world.model
        for i, b in enumerate(world.bindings):
            a, s = b.actuator, self.scale[i]
            m.actuator_dyntype[a] = mujoco.mjtDyn.mjDYN_NONE
            m.actuator_gaintype[a] = mujoco.mjtGain.mjGAIN_FIXED
            m.actuator_gainprm[a, :] = 0.0
            m.actuator_gainprm[a, 0] = 1.0
            m.actuator_biastype[a] = mujoco.mjtBias.mjBIAS_AFFINE
            m.actuator_biasprm[a, :] = 0.0
            m.actuator_biasprm[a, 1] = -self.kp[i] * s ** 2
            m.actuator_biasprm[a, 2] = -self.kd[i] * s ** 2
            m.actuator_ctrllimited[a] = 0
            m.actuator_forcelimited[a] = 1
            m.actuator_forcerange[a] = (-self.t_max[i] * s, self.t_max[i] * s)
        for arm in self.arms:
            self._install_gripper(world, arm)
        m.body_gravcomp[:] = 0.0  # real gravity acts; the feed-forward has to hold the arm up
        # The constraint solver scales each constraint's softness by inverse weights computed at compile time;
        # recompute them for the new armature, or the heavy fingers' coupling and contacts would be far too soft.
        mujoco.mj_setConst(m, mujoco.MjData(m))

    def _install_gripper(self, world: SimWorld, arm: _Arm) -> None:
        """Rotor inertia and mechanism friction of the gripper motor, reflected onto its finger joints."""
        m = world.model
        b = world.bindings[arm.gripper]
        fingers = [b.joint, *(int(m.eq_obj1id[e]) for e in range(m.neq)
                              if m.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT and m.eq_obj2id[e] == b.joint)]
        ratio = self.scale[arm.gripper] * b.gear  # motor rad per metre of finger travel
        inertia = ROTOR_INERTIA.get(self.motor_types[arm.gripper])
        if inertia is None:
            raise MitDriveError(f"{arm.config.gripper}: no rotor inertia known for motor type "
                                f"{self.motor_types[arm.gripper]} (known: {sorted(ROTOR_INERTIA)}); the MIT-law sim "
                                f"cannot drive this gripper")
        friction = self.force_configs[self.arms.index(arm)].friction_nm
        for j in fingers:
            dof = int(m.jnt_dofadr[j])
            m.dof_armature[dof] = inertia * ratio ** 2 / len(fingers)
            m.dof_frictionloss[dof] = friction * ratio / len(fingers)
            # A stalled motor pushes each pad with up to t_max * ratio / 2 (~690 N for a DM4310) before the force
            # limiter steps in: with MuJoCo's default contact softness, scaled by the light object's mass, the pads
            # would sink a centimetre into a 50 g cube. Harder pads (impedance up to 0.99, and their parameters win
            # over the object's) keep a grasp at the object's width, within about a millimetre.
            for geom in np.flatnonzero(m.geom_bodyid == m.jnt_bodyid[j]):
                m.geom_priority[geom] = 1
                m.geom_solimp[geom, :3] = PAD_SOLIMP

    @property
    def limiter_period_steps(self) -> int:
        """Physics steps between two gripper force-limiter updates (1: every step)."""
        return self._limiter_period

    @limiter_period_steps.setter
    def limiter_period_steps(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise MitDriveError(f"limiter_period_steps must be an integer >= 1 (physics steps), got {steps!r}")
        self._limiter_period = steps

    # -- per step ----------------------------------------------------------------------------------------------
    def set_targets(self, targets: F64, velocities: F64 | None = None) -> None:
        """p_des and v_des per robot joint (robot units; v_des 0 when not given and for the grippers, whose force
        limiter owns their law), held until the next call."""
        self._targets = np.array(targets, dtype=np.float64)
        n = len(self._targets)
        self._velocities = np.zeros(n) if velocities is None else np.array(velocities, dtype=np.float64)
        for arm in self.arms:
            self._velocities[arm.gripper] = 0.0

    def targets(self) -> F64:
        return self._targets.copy()

    def reset(self) -> None:
        """Forget the force limiters' history (on enable and episode reset, as the real driver does)."""
        for arm in self.arms:
            if arm.limiter is not None:
                arm.limiter.reset()
        self._limited.clear()
        self._steps = 0
        self.feedforward[:] = 0.0

    def before_step(self, world: SimWorld) -> None:
        """Set every actuator's ctrl from the measured state of this step: gravity, force limit, law."""
        if world.model.opt.disableflags & int(mujoco.mjtDisableBit.mjDSBL_ACTUATION):
            return  # limp: the motors apply nothing, and nothing is sent that a report should count
        q, v, t = world.positions(), world.velocities(), world.time
        target = self._targets.copy()
        ff = np.zeros(len(target))
        effort = self.efforts(world)
        frame = self._steps % self._limiter_period == 0
        self._steps += 1
        for a, arm in enumerate(self.arms):
            g = arm.gripper
            if arm.gravity is not None:
                ff[arm.joints] = arm.gravity.torques(q[arm.joints], float(q[g]))
            if arm.limiter is not None:
                if frame or a not in self._limited:
                    s = self.scale[g]
                    self._limited[a] = arm.limiter.update(t, s * q[g], s * v[g], float(effort[g]), s * target[g]) / s
                    # The frame's gains and added torque, held until the next frame as the motor holds them.
                    law = arm.limiter.law_to_send()
                    self._kp_sent[g] = law.kp * s ** 2
                    self._push[g] = law.torque_nm
                    world.model.actuator_biasprm[self._act[g], 1] = -law.kp * s ** 2
                    world.model.actuator_biasprm[self._act[g], 2] = -law.kd * s ** 2
                target[g] = self._limited[a]
        self.feedforward = ff
        self._ff_sum += np.abs(ff)
        np.maximum(self._ff_max, np.abs(ff), out=self._ff_max)
        self._ff_steps += 1
        self.sent = target
        world.data.ctrl[self._act] = (self._kp_sent * target + self._kd_act * self._velocities
                                      + self.scale * (ff + self._push))

    def efforts(self, world: SimWorld) -> F64:
        """Motor torque per robot joint (N m), as the motors report it: the clipped law of the last step."""
        return np.asarray(world.data.actuator_force[self._act], dtype=np.float64) / self.scale

    def report(self) -> ActuationReport:
        """The feed-forward per arm joint (mean/max |tau_ff| over the physics steps since `reset_stats`) and each
        force-limited gripper's grasp state, as the real driver reports them for an episode."""
        joints = [int(i) for arm in self.arms for i in arm.joints]
        mean = self._ff_sum / self._ff_steps if self._ff_steps else np.zeros(len(self._ff_sum))
        grasps = tuple(GraspReport(arm.config.gripper, arm.limiter.grasping, arm.limiter.grasps,
                                   arm.limiter.peak_effort_nm, arm.limiter.peak_grasp_effort_nm,
                                   arm.limiter.config.max_torque_nm)
                       for arm in self.arms if arm.limiter is not None)
        return ActuationReport(tuple(self.joint_names[i] for i in joints), tuple(float(mean[i]) for i in joints),
                               tuple(float(self._ff_max[i]) for i in joints), grasps)

    def reset_stats(self) -> None:
        """Start a new reporting period (feed-forward sums, grasp counts and peaks; a grasp in progress stays)."""
        self._ff_sum[:] = 0.0
        self._ff_max[:] = 0.0
        self._ff_steps = 0
        for arm in self.arms:
            if arm.limiter is not None:
                arm.limiter.peak_effort_nm = 0.0
                arm.limiter.peak_grasp_effort_nm = 0.0
                arm.limiter.grasps = 0

    def grasping(self) -> dict[str, bool]:
        """Per gripper (name): stalled on an object with its force capped."""
        return {arm.config.gripper: arm.limiter is not None and arm.limiter.grasping for arm in self.arms}
