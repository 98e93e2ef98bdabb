"""Forward kinematics and visual geometry of the arms, read from the same MJCF the simulation runs.

Why the MJCF: it is the one kinematic description of the YAM in this repository (the simulation, its cameras
and its tests use it), so the 3D view shows exactly the arm the sim drives and needs no second model to keep in
sync. Joint values are mapped as the simulation maps them: each robot joint is driven by the actuator of the
same name, and its value is `gear * qpos` of the actuated joint, so arm joints are in rad and a gripper's
0 (closed) .. 1 (open) becomes finger travel through the gripper actuator's gear. Joints slaved by an equality
constraint (the second finger) are placed where the constraint puts them.

A private `MjData` is used and only `mj_kinematics` runs: no physics, no contacts, nothing shared with a
simulation that may be running in the same process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import numpy.typing as npt

import robot_client

F64 = npt.NDArray[np.float64]
DEFAULT_MODEL = Path(robot_client.__file__).resolve().parent / "sim" / "assets" / "bimanual_yam.xml"
# MuJoCo draws geom groups 0-2 by default; higher groups hold collision-only or helper geometry.
VISIBLE_GROUPS = 3

_GEOM_KINDS = {
    int(mujoco.mjtGeom.mjGEOM_BOX): "box",
    int(mujoco.mjtGeom.mjGEOM_CAPSULE): "capsule",
    int(mujoco.mjtGeom.mjGEOM_CYLINDER): "cylinder",
    int(mujoco.mjtGeom.mjGEOM_SPHERE): "sphere",
    int(mujoco.mjtGeom.mjGEOM_ELLIPSOID): "ellipsoid",
    int(mujoco.mjtGeom.mjGEOM_MESH): "mesh",
}


class KinematicsError(ValueError):
    """The model cannot be driven by the given joint names; the message names what is missing."""


@dataclass(frozen=True)
class GeomShape:
    """One visual geom in its body's frame. `size` is MuJoCo's (half-sizes / radius, half-length)."""

    body: str
    name: str
    kind: str
    pos: F64
    quat_xyzw: F64
    size: F64
    rgba: tuple[int, int, int, int]
    vertices: F64 | None = None
    faces: npt.NDArray[np.int32] | None = None


@dataclass(frozen=True)
class _Binding:
    index: int  # position in the caller's joint vector
    qpos: int
    gear: float


def wxyz_to_xyzw(quat: F64) -> F64:
    """MuJoCo stores quaternions w-first; rerun wants them w-last."""
    return np.asarray(np.concatenate([quat[..., 1:], quat[..., :1]], axis=-1), dtype=np.float64)


def _name(model: mujoco.MjModel, obj: mujoco.mjtObj, index: int, prefix: str) -> str:
    return mujoco.mj_id2name(model, obj, index) or f"{prefix}_{index}"


class RobotKinematics:
    """Body poses of the arms for joint vectors in robot units, plus the geometry to draw them with.

    `joint_names` is the order of the vectors the caller passes (a dataset's state names). Names that are
    actuators of the model are mapped by name; if none is, but there are exactly as many names as actuators,
    they are mapped by order and `note` says so. Otherwise the names cannot drive the model: KinematicsError.
    """

    def __init__(self, joint_names: Sequence[str], model_path: str | Path = DEFAULT_MODEL) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise KinematicsError(f"MJCF model {path} not found")
        self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        self.joint_names = tuple(joint_names)
        self.note = ""
        self._bindings = self._bind(self.joint_names)
        self.bodies, self.moving = self._shown_bodies()
        self._body_ids = np.array([mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, b) for b in self.bodies])

    # -- joint mapping ---------------------------------------------------------------------------------------
    def _actuator_names(self) -> list[str]:
        return [_name(self.model, mujoco.mjtObj.mjOBJ_ACTUATOR, a, "actuator") for a in range(self.model.nu)]

    def _bind(self, names: tuple[str, ...]) -> tuple[_Binding, ...]:
        m = self.model
        actuators = self._actuator_names()
        by_name = {n: a for a, n in enumerate(actuators)}
        pairs = [(i, by_name[n]) for i, n in enumerate(names) if n in by_name]
        if pairs:
            unmatched = [n for n in names if n not in by_name]
            if unmatched:
                self.note = f"joints {unmatched} are not in the model and are not drawn"
        elif len(names) == m.nu:
            pairs = list(enumerate(range(m.nu)))
            self.note = f"joint names {list(names)} are not the model's; mapped by order to {actuators}"
        else:
            raise KinematicsError(
                f"none of the joint names {list(names)} is an actuator of the model ({actuators}), and their "
                f"count {len(names)} differs from the model's {m.nu} actuators"
            )
        out = []
        for index, act in pairs:
            if m.actuator_trntype[act] != mujoco.mjtTrn.mjTRN_JOINT:
                raise KinematicsError(f"actuator '{actuators[act]}' does not drive a joint directly")
            joint = int(m.actuator_trnid[act, 0])
            gear = float(m.actuator_gear[act, 0])
            if gear == 0.0:
                raise KinematicsError(f"actuator '{actuators[act]}' has gear 0")
            out.append(_Binding(index, int(m.jnt_qposadr[joint]), gear))
        return tuple(out)

    # -- bodies and geometry ---------------------------------------------------------------------------------
    def _is_free(self, body: int) -> bool:
        m = self.model
        adr, num = int(m.body_jntadr[body]), int(m.body_jntnum[body])
        return any(m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE for j in range(adr, adr + num))

    def _has_joint_above(self, body: int) -> bool:
        m = self.model
        while body > 0:
            if m.body_jntnum[body] > 0:
                return True
            body = int(m.body_parentid[body])
        return False

    def _visual_geoms(self, body: int) -> list[int]:
        m = self.model
        adr, num = int(m.body_geomadr[body]), int(m.body_geomnum[body])
        if adr < 0:
            return []
        return [
            g for g in range(adr, adr + num)
            if int(m.geom_type[g]) in _GEOM_KINDS and m.geom_group[g] < VISIBLE_GROUPS
        ]

    def _shown_bodies(self) -> tuple[tuple[str, ...], tuple[bool, ...]]:
        """Bodies with visual geometry, except free-floating objects (datasets do not hold their poses)."""
        m = self.model
        names: list[str] = []
        moving: list[bool] = []
        for body in range(1, m.nbody):
            root = int(m.body_rootid[body])
            if self._is_free(root) or not self._visual_geoms(body):
                continue
            names.append(_name(m, mujoco.mjtObj.mjOBJ_BODY, body, "body"))
            moving.append(self._has_joint_above(body))
        return tuple(names), tuple(moving)

    def _rgba(self, geom: int) -> tuple[int, int, int, int]:
        m = self.model
        mat = int(m.geom_matid[geom])
        rgba = m.mat_rgba[mat] if mat >= 0 else m.geom_rgba[geom]
        r, g, b, a = (int(round(float(np.clip(c, 0.0, 1.0)) * 255)) for c in rgba)
        return (r, g, b, a)

    def shapes(self) -> list[GeomShape]:
        """Every visual geom of the shown bodies, in its body's frame."""
        m = self.model
        out: list[GeomShape] = []
        for body_name, body in zip(self.bodies, self._body_ids, strict=True):
            for g in self._visual_geoms(int(body)):
                kind = _GEOM_KINDS[int(m.geom_type[g])]
                vertices = faces = None
                if kind == "mesh":
                    mesh = int(m.geom_dataid[g])
                    va, vn = int(m.mesh_vertadr[mesh]), int(m.mesh_vertnum[mesh])
                    fa, fn = int(m.mesh_faceadr[mesh]), int(m.mesh_facenum[mesh])
                    vertices = np.array(m.mesh_vert[va:va + vn], dtype=np.float64)
                    faces = np.array(m.mesh_face[fa:fa + fn], dtype=np.int32)
                out.append(GeomShape(
                    body=body_name,
                    name=_name(m, mujoco.mjtObj.mjOBJ_GEOM, g, "geom"),
                    kind=kind,
                    pos=np.array(m.geom_pos[g], dtype=np.float64),
                    quat_xyzw=wxyz_to_xyzw(np.array(m.geom_quat[g], dtype=np.float64)),
                    size=np.array(m.geom_size[g], dtype=np.float64),
                    rgba=self._rgba(g),
                    vertices=vertices,
                    faces=faces,
                ))
        return out

    # -- forward kinematics ----------------------------------------------------------------------------------
    def _set_joints(self, positions: npt.ArrayLike) -> None:
        q = np.asarray(positions, dtype=np.float64).reshape(-1)
        if q.shape[0] != len(self.joint_names):
            raise KinematicsError(f"expected {len(self.joint_names)} joint values, got {q.shape[0]}")
        d, m = self.data, self.model
        d.qpos[:] = m.qpos0
        for b in self._bindings:
            value = q[b.index]
            if np.isfinite(value):
                d.qpos[b.qpos] = value / b.gear
        for eq in range(m.neq):
            if m.eq_type[eq] != mujoco.mjtEq.mjEQ_JOINT or m.eq_obj2id[eq] < 0 or not m.eq_active0[eq]:
                continue
            slave, master = int(m.eq_obj1id[eq]), int(m.eq_obj2id[eq])
            x = float(d.qpos[m.jnt_qposadr[master]])
            coef = m.eq_data[eq, :5]
            d.qpos[m.jnt_qposadr[slave]] = sum(float(c) * x**k for k, c in enumerate(coef))

    def body_poses(self, positions: npt.ArrayLike) -> tuple[F64, F64]:
        """World positions [B, 3] and orientations [B, 4] (x, y, z, w) of `bodies` for one joint vector."""
        self._set_joints(positions)
        mujoco.mj_kinematics(self.model, self.data)
        pos = np.array(self.data.xpos[self._body_ids], dtype=np.float64)
        quat = wxyz_to_xyzw(np.array(self.data.xquat[self._body_ids], dtype=np.float64))
        return pos, quat

    def body_poses_batch(self, positions: npt.ArrayLike) -> tuple[F64, F64]:
        """Poses for [N, D] joint vectors: positions [N, B, 3] and orientations [N, B, 4] (x, y, z, w)."""
        q = np.asarray(positions, dtype=np.float64)
        if q.ndim != 2:
            raise KinematicsError(f"expected joint vectors [N, D], got shape {q.shape}")
        n, b = q.shape[0], len(self.bodies)
        pos = np.empty((n, b, 3), dtype=np.float64)
        quat = np.empty((n, b, 4), dtype=np.float64)
        for i in range(n):
            pos[i], quat[i] = self.body_poses(q[i])
        return pos, quat
