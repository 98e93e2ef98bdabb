"""The arms in rerun's 3D view: geometry logged once per body, one world pose per body and frame.

Why this shape: geometry never changes, so it is logged statically in each body's own frame
(`/robot/<body>/<kind>`); per frame only the bodies that move get a Transform3D (their world pose from
forward kinematics on `/robot/<body>`), which is 2 small columns per body. `/robot` itself carries no transform,
so a body's transform is its pose in the MJCF world frame (z up, table top at z = 0).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import numpy.typing as npt
import rerun as rr

from replay.view import layout
from replay.view.columns import TimeIndex
from replay.view.kinematics import F64, GeomShape, RobotKinematics


def _rotate(quat_xyzw: F64, vec: F64) -> F64:
    """Rotate `vec` by a unit quaternion (x, y, z, w)."""
    u, w = quat_xyzw[:3], quat_xyzw[3]
    return np.asarray(vec + 2.0 * np.cross(u, np.cross(u, vec) + w * vec), dtype=np.float64)


def _archetype(kind: str, shapes: list[GeomShape]) -> rr.AsComponents:
    """One batch archetype for all geoms of one kind in one body (MuJoCo sizes converted to rerun's)."""
    quats = np.stack([s.quat_xyzw for s in shapes])
    centers = np.stack([s.pos for s in shapes])
    colors = [s.rgba for s in shapes]
    sizes = np.stack([s.size for s in shapes])
    solid = rr.components.FillMode.Solid
    if kind == "box":
        return rr.Boxes3D(half_sizes=sizes, centers=centers, quaternions=quats, colors=colors, fill_mode=solid)
    if kind == "capsule":
        # MuJoCo: centred on pos, half-length size[1] along local z. rerun: from the origin to +length along z.
        starts = np.stack([s.pos + _rotate(s.quat_xyzw, np.array([0.0, 0.0, -s.size[1]])) for s in shapes])
        return rr.Capsules3D(
            lengths=2.0 * sizes[:, 1], radii=sizes[:, 0], translations=starts, quaternions=quats, colors=colors
        )
    if kind == "cylinder":
        return rr.Cylinders3D(
            lengths=2.0 * sizes[:, 1], radii=sizes[:, 0], centers=centers, quaternions=quats, colors=colors,
            fill_mode=solid,
        )
    if kind == "sphere":
        radii = np.repeat(sizes[:, :1], 3, axis=1)
        return rr.Ellipsoids3D(half_sizes=radii, centers=centers, quaternions=quats, colors=colors, fill_mode=solid)
    if kind == "ellipsoid":
        return rr.Ellipsoids3D(half_sizes=sizes, centers=centers, quaternions=quats, colors=colors, fill_mode=solid)
    raise ValueError(f"no batch archetype for geom kind '{kind}'")


def _mesh(shape: GeomShape) -> rr.Mesh3D:
    assert shape.vertices is not None and shape.faces is not None
    verts = np.stack([shape.pos + _rotate(shape.quat_xyzw, v) for v in shape.vertices])
    return rr.Mesh3D(vertex_positions=verts, triangle_indices=shape.faces, albedo_factor=shape.rgba)


def log_robot_static(rec: rr.RecordingStream, kin: RobotKinematics) -> None:
    """Geometry of every shown body, and the world pose of the bodies that never move (home pose)."""
    rec.log(layout.ROBOT, rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    grouped: dict[tuple[str, str], list[GeomShape]] = defaultdict(list)
    for shape in kin.shapes():
        if shape.kind == "mesh":
            rec.log(f"{layout.body_path(shape.body)}/{layout.part(shape.name)}", _mesh(shape), static=True)
        else:
            grouped[(shape.body, shape.kind)].append(shape)
    for (body, kind), shapes in grouped.items():
        rec.log(f"{layout.body_path(body)}/{kind}", _archetype(kind, shapes), static=True)
    pos, quat = kin.body_poses(np.zeros(len(kin.joint_names)))
    for i, (body, moving) in enumerate(zip(kin.bodies, kin.moving, strict=True)):
        if not moving:
            rec.log(layout.body_path(body), rr.Transform3D(translation=pos[i], quaternion=quat[i]), static=True)


def send_robot_poses(
    rec: rr.RecordingStream, kin: RobotKinematics, index: TimeIndex, positions: npt.ArrayLike
) -> None:
    """World poses of the moving bodies for [N, D] joint vectors, one column pair per body."""
    q = np.asarray(positions, dtype=np.float64)
    if q.shape[0] != len(index):
        raise ValueError(f"{q.shape[0]} joint vectors for {len(index)} time positions")
    if q.shape[0] == 0:
        return
    pos, quat = kin.body_poses_batch(q)
    for i, (body, moving) in enumerate(zip(kin.bodies, kin.moving, strict=True)):
        if moving:
            rr.send_columns(
                layout.body_path(body),
                indexes=index.columns(),
                columns=rr.Transform3D.columns(translation=pos[:, i], quaternion=quat[:, i]),
                recording=rec,
            )
