"""The simulated station: one MuJoCo model + data, robot-unit joint access, resets, object poses and its clock.

Why one owner: SimRobot (commands, faults, clock modes) and SimCameras (rendering) share the same MjData, so
this class holds it together with the lock that serialises access, and converts between MuJoCo arrays and the
robot's joint order and units so that no caller indexes qpos by hand.

Units: each robot joint is read through its actuator's transmission (value = gear * qpos), so arm joints are
in rad and each gripper comes out directly as 0 (closed) .. 1 (open): its actuator's gear is 1 / finger travel
(see assets/yam_arm.xml).

Clock: `stamp()` maps simulated time onto the `time.monotonic()` axis as offset + sim time. The offset is set
when the world is created or reset (to the current monotonic time, never below a stamp already handed out), so
stamps are strictly non-decreasing for the life of the world, and differences between stamps equal simulated
durations. When the simulation runs faster than real time, stamps run ahead of `time.monotonic()`.

Past states (`keep_history`, `past_qpos`): a delayed camera must show the scene as it was some time ago, and
only the stepper sees every intermediate state, so when a consumer asks for it each `step()` records
(time, qpos) and keeps the last `seconds` of them. Off (and free) by default.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mujoco
import numpy as np
import numpy.typing as npt

from robot_client.sim.layout import Pose, SceneLayout

F64 = npt.NDArray[np.float64]
DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "bimanual_yam.xml"


class SimModelError(ValueError):
    """The model lacks something the caller needs (a joint's actuator, an object, a site); the message names it."""


@dataclass(frozen=True)
class JointBinding:
    """Where one robot joint lives in the model: its actuator, the driven joint, and the actuator gear."""

    name: str
    actuator: int
    joint: int
    qpos: int
    dof: int
    gear: float


class JointDrive(Protocol):
    """Drives the robot joints instead of plain position actuators (robot_client.sim.mit): it owns the targets and
    sets every actuator's ctrl before each physics step from the state of that step."""

    def set_targets(self, targets: F64, velocities: F64 | None = None) -> None: ...

    def targets(self) -> F64: ...

    def before_step(self, world: SimWorld) -> None: ...

    def efforts(self, world: SimWorld) -> F64: ...


class SimWorld:
    """Model, data and lock of the station. Methods do not lock: callers that share it across threads hold `lock`."""

    def __init__(self, joint_names: Sequence[str], model_path: str | Path = DEFAULT_MODEL,
                 layout: SceneLayout | None = None) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise SimModelError(f"MJCF model {path} not found")
        self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        self.lock = threading.RLock()
        self.layout = layout if layout is not None else SceneLayout()
        self.bindings = tuple(self._bind(name) for name in joint_names)
        self.joint_names = tuple(joint_names)
        self._qpos = np.array([b.qpos for b in self.bindings], dtype=np.intp)
        self._dof = np.array([b.dof for b in self.bindings], dtype=np.intp)
        self._act = np.array([b.actuator for b in self.bindings], dtype=np.intp)
        self._gear = np.array([b.gear for b in self.bindings], dtype=np.float64)
        self.object_names = self._free_bodies()
        unknown = [n for n in self.layout.names if n not in self.object_names]
        if unknown:
            raise SimModelError(f"layout places {unknown}, which are not free bodies of {path.name} "
                                f"(free bodies: {list(self.object_names)})")
        self._gravcomp = self.model.body_gravcomp.copy()
        self._drive: JointDrive | None = None
        self._clock_offset = time.monotonic()
        self._history_s = 0.0
        self._history: deque[tuple[float, F64]] = deque()

    # -- model lookups -----------------------------------------------------------------------------------------
    def _bind(self, name: str) -> JointBinding:
        m = self.model
        act = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name)
        if act < 0:
            actuators = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(m.nu)]
            raise SimModelError(f"no actuator named '{name}' in the model (one per robot joint is required; its "
                                f"actuators are {actuators})")
        if m.actuator_trntype[act] != mujoco.mjtTrn.mjTRN_JOINT:
            raise SimModelError(f"actuator '{name}' must drive a joint directly")
        joint = int(m.actuator_trnid[act, 0])
        return JointBinding(name, act, joint, int(m.jnt_qposadr[joint]), int(m.jnt_dofadr[joint]),
                            float(m.actuator_gear[act, 0]))

    def _free_bodies(self) -> tuple[str, ...]:
        m = self.model
        names = []
        for body in range(m.nbody):
            first = m.body_jntadr[body]
            if m.body_jntnum[body] >= 1 and m.jnt_type[first] == mujoco.mjtJoint.mjJNT_FREE:
                names.append(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, body))
        return tuple(names)

    def _object_joint(self, name: str) -> int:
        if name not in self.object_names:
            raise SimModelError(f"no free object '{name}'; objects are {list(self.object_names)}")
        body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        return int(self.model.body_jntadr[body])

    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        return float(self.data.time)

    def position_ranges(self) -> F64:
        """[n, 2] range of each robot joint in robot units (the driven joint's range times the actuator gear)."""
        rng = self.model.jnt_range[[b.joint for b in self.bindings]] * self._gear[:, None]
        return np.sort(rng, axis=1)

    # -- clock -------------------------------------------------------------------------------------------------
    def stamp(self) -> float:
        """Current simulated time on the monotonic axis (see the module docstring)."""
        return self._clock_offset + float(self.data.time)

    def rebase_clock(self, wall: float) -> None:
        """Make stamp() read `wall` now, unless that would move stamps backwards (then keep them continuous)."""
        self._clock_offset = max(self._clock_offset, wall - float(self.data.time))

    # -- joints (robot units, robot joint order) ---------------------------------------------------------------
    def positions(self) -> F64:
        return np.asarray(self.data.qpos[self._qpos], dtype=np.float64) * self._gear

    def velocities(self) -> F64:
        return np.asarray(self.data.qvel[self._dof], dtype=np.float64) * self._gear

    def efforts(self) -> F64:
        """Actuator force on each driven joint (N m for arm joints, N on the driven finger); with a drive, what
        the drive reports (motor torques)."""
        if self._drive is not None:
            return self._drive.efforts(self)
        return np.array(self.data.qfrc_actuator[self._dof], dtype=np.float64)

    def targets(self) -> F64:
        if self._drive is not None:
            return self._drive.targets()
        return np.array(self.data.ctrl[self._act], dtype=np.float64)

    def set_targets(self, targets: F64, velocities: F64 | None = None) -> None:
        """Joint targets; `velocities` (planned, robot units/s) reach a drive that uses them (the MIT law's v_des),
        position actuators have no use for them."""
        if self._drive is not None:
            self._drive.set_targets(np.asarray(targets, dtype=np.float64),
                                    None if velocities is None else np.asarray(velocities, dtype=np.float64))
        else:
            self.data.ctrl[self._act] = targets

    def use_drive(self, drive: JointDrive) -> None:
        """Hand the joints to `drive` (after it has adapted the model's actuators): from now on it owns the
        targets and the ctrl, and no body is gravity-compensated (the drive's feed-forward has to hold the arm)."""
        self._drive = drive
        self._gravcomp[:] = 0.0
        self.model.body_gravcomp[:] = 0.0
        drive.set_targets(self.positions())

    def set_joint_positions(self, positions: F64) -> None:
        """Teleport the joints (zero velocity), keep coupled joints consistent, and target the new positions."""
        self.data.qpos[self._qpos] = np.asarray(positions, dtype=np.float64) / self._gear
        self.data.qvel[self._dof] = 0.0
        self._satisfy_joint_equalities()
        self.set_targets(np.asarray(positions, dtype=np.float64))

    def _satisfy_joint_equalities(self) -> None:
        """Place joints slaved by a joint equality (the second finger) where the constraint wants them."""
        m, d = self.model, self.data
        for eq in range(m.neq):
            if m.eq_type[eq] != mujoco.mjtEq.mjEQ_JOINT or m.eq_obj2id[eq] < 0:
                continue
            slave, master = int(m.eq_obj1id[eq]), int(m.eq_obj2id[eq])
            x = d.qpos[m.jnt_qposadr[master]]
            coef = m.eq_data[eq, :5]
            d.qpos[m.jnt_qposadr[slave]] = sum(float(c) * x ** k for k, c in enumerate(coef))
            d.qvel[m.jnt_dofadr[slave]] = 0.0

    # -- objects -----------------------------------------------------------------------------------------------
    def object_pose(self, name: str) -> Pose:
        adr = int(self.model.jnt_qposadr[self._object_joint(name)])
        q = self.data.qpos[adr:adr + 7]
        return Pose((float(q[0]), float(q[1]), float(q[2])), (float(q[3]), float(q[4]), float(q[5]), float(q[6])))

    def set_object_pose(self, name: str, pose: Pose) -> None:
        """Teleport a free object (zero velocity); the quaternion is normalised."""
        joint = self._object_joint(name)
        pos, quat = pose.as_arrays()
        norm = float(np.linalg.norm(quat))
        if pos.shape != (3,) or quat.shape != (4,) or not (np.isfinite(pos).all() and math.isfinite(norm)) \
                or norm < 1e-9:
            raise SimModelError(f"object '{name}': invalid pose {pose}")
        adr, dof = int(self.model.jnt_qposadr[joint]), int(self.model.jnt_dofadr[joint])
        self.data.qpos[adr:adr + 3] = pos
        self.data.qpos[adr + 3:adr + 7] = quat / norm
        self.data.qvel[dof:dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def site_position(self, name: str) -> F64:
        """World position of a site (e.g. "left_grasp") at the current joint positions."""
        site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, name)
        if site < 0:
            raise SimModelError(f"no site named '{name}'")
        mujoco.mj_kinematics(self.model, self.data)
        return np.array(self.data.site_xpos[site], dtype=np.float64)

    # -- past states (delayed cameras) -------------------------------------------------------------------------
    def keep_history(self, seconds: float) -> None:
        """Record the joint state of every later step, keeping at least the last `seconds` (the longest wins)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"keep_history: seconds must be finite and >= 0, got {seconds}")
        self._history_s = max(self._history_s, float(seconds))
        if self._history_s > 0 and not self._history:
            self._record()

    def past_qpos(self, t: float) -> F64:
        """qpos at the last recorded step at or before simulated time `t` (the oldest record when `t` precedes
        them all, e.g. right after a reset; the current qpos when no history is kept)."""
        if not self._history:
            return np.array(self.data.qpos, dtype=np.float64)
        chosen = self._history[0][1]
        for stamp, qpos in reversed(self._history):
            if stamp <= t + 1e-9:
                chosen = qpos
                break
        return chosen.copy()

    def _record(self) -> None:
        now = float(self.data.time)
        self._history.append((now, np.array(self.data.qpos, dtype=np.float64)))
        # Keep one record at or before now - history_s, so the full window can always be answered.
        while len(self._history) > 1 and self._history[1][0] <= now - self._history_s:
            self._history.popleft()

    # -- reset / stepping --------------------------------------------------------------------------------------
    def reset(self, seed: int, object_poses: Mapping[str, Pose] | None = None,
              joint_positions: F64 | None = None) -> None:
        """Fresh physics state: joints at `joint_positions` (default all zero = the YAM home pose) and targeting
        them, objects where the layout puts them for `seed`, then `object_poses` overriding single objects."""
        previous = self.stamp()
        mujoco.mj_resetData(self.model, self.data)
        q = np.zeros(len(self.bindings)) if joint_positions is None else np.asarray(joint_positions, np.float64)
        if q.shape != (len(self.bindings),):
            raise SimModelError(f"joint_positions: expected {len(self.bindings)} values, got shape {q.shape}")
        self.set_joint_positions(q)
        poses = self.layout.sample(seed)
        for name in object_poses or {}:
            self._object_joint(name)  # names the unknown object
        poses.update(object_poses or {})
        for name, pose in poses.items():
            self.set_object_pose(name, pose)
        mujoco.mj_forward(self.model, self.data)
        self._clock_offset = max(time.monotonic(), previous)
        self._history.clear()  # a fresh episode has no past: delayed cameras show its first state
        if self._history_s > 0:
            self._record()

    def step(self) -> None:
        if self._drive is not None:
            self._drive.before_step(self)
        mujoco.mj_step(self.model, self.data)
        if self._history_s > 0:
            self._record()

    def diverged(self) -> bool:
        """True once MuJoCo reported unstable accelerations (it then silently resets the state)."""
        return int(self.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number) > 0

    def set_limp(self, limp: bool) -> None:
        """Limp = actuators off and gravity compensation off, like de-energised motors; otherwise restore both."""
        flag = int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)
        if limp:
            self.model.opt.disableflags |= flag
            self.model.body_gravcomp[:] = 0.0
        else:
            self.model.opt.disableflags &= ~flag
            self.model.body_gravcomp[:] = self._gravcomp
