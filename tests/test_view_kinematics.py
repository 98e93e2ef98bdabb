"""The 3D arms: body transforms written to the .rrd equal MuJoCo's own forward kinematics, grippers open through
the actuator gear, and geometry matches the MJCF (a capsule spans its `fromto`)."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import rerun as rr

from replay.view.columns import TimeIndex
from replay.view.kinematics import DEFAULT_MODEL, RobotKinematics
from replay.view.robot3d import _rotate, log_robot_static, send_robot_poses
from replay.view.rrd_read import read_rrd
from robot_client.config import load_robot_config

NAMES = load_robot_config("bimanual_yam").joint_names


def _mujoco_pose(body: str, qpos: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """MuJoCo's own world pose of `body` with the named joints set (everything else at qpos0)."""
    model = mujoco.MjModel.from_xml_path(str(DEFAULT_MODEL))
    data = mujoco.MjData(model)
    for joint, value in qpos.items():
        data.qpos[model.jnt_qposadr[model.joint(joint).id]] = value
    mujoco.mj_kinematics(model, data)
    b = data.body(body)
    return np.array(b.xpos), np.array([*b.xquat[1:], b.xquat[0]])


def _written_poses(tmp_path: Path, q: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    kin = RobotKinematics(NAMES)
    rec = rr.RecordingStream("fk_test")
    rec.save(tmp_path / "fk.rrd")
    log_robot_static(rec, kin)
    send_robot_poses(rec, kin, TimeIndex.of([0], [0.0]), q[None, :])
    rec.flush()
    rec.disconnect()
    content = read_rrd(tmp_path / "fk.rrd")
    out = {}
    for body in ("left_link6", "left_finger_a", "left_finger_b", "right_link6"):
        entity = content[f"/robot/{body}"]
        out[body] = (np.array(entity.values("Transform3D:translation")[0][0]),
                     np.array(entity.values("Transform3D:quaternion")[0][0]))
    return out


def test_home_pose_link6_matches_mujoco(tmp_path: Path) -> None:
    written = _written_poses(tmp_path, np.zeros(len(NAMES)))
    pos, quat = _mujoco_pose("left_link6", {})
    np.testing.assert_allclose(written["left_link6"][0], pos, atol=1e-6)
    assert abs(abs(float(np.dot(written["left_link6"][1], quat))) - 1.0) < 1e-6


def test_moved_joints_and_open_gripper_match_mujoco(tmp_path: Path) -> None:
    q = np.zeros(len(NAMES))
    q[NAMES.index("left_joint1")], q[NAMES.index("left_joint2")] = 0.5, 1.2
    q[NAMES.index("left_gripper")] = 1.0  # fully open = 0.0475 m of travel per finger
    written = _written_poses(tmp_path, q)
    travel = 0.0475
    joints = {"left_joint1": 0.5, "left_joint2": 1.2, "left_finger_a": travel, "left_finger_b": travel}
    for body in ("left_link6", "left_finger_a", "left_finger_b"):
        pos, _ = _mujoco_pose(body, joints)
        np.testing.assert_allclose(written[body][0], pos, atol=1e-6, err_msg=body)
    gap = np.linalg.norm(written["left_finger_a"][0] - written["left_finger_b"][0])
    assert abs(gap - 2 * travel) < 1e-6
    home, _ = _mujoco_pose("right_link6", {})
    np.testing.assert_allclose(written["right_link6"][0], home, atol=1e-6)


def test_capsule_spans_its_fromto() -> None:
    kin = RobotKinematics(NAMES)
    beam = next(s for s in kin.shapes() if s.name == "left_link2_beam")
    start = beam.pos + _rotate(beam.quat_xyzw, np.array([0.0, 0.0, -beam.size[1]]))
    end = beam.pos + _rotate(beam.quat_xyzw, np.array([0.0, 0.0, beam.size[1]]))
    ends = sorted([tuple(np.round(start, 6)), tuple(np.round(end, 6))])
    np.testing.assert_allclose(ends, sorted([(0.0, -0.0344, 0.03), (0.0, -0.0344, 0.236)]), atol=1e-6)
    assert beam.kind == "capsule" and abs(beam.size[0] - 0.028) < 1e-9


def test_generic_names_map_by_order_with_a_note() -> None:
    kin = RobotKinematics([f"action_{i}" for i in range(len(NAMES))])
    assert "mapped by order" in kin.note
    pos, _ = kin.body_poses(np.zeros(len(NAMES)))
    assert pos.shape == (len(kin.bodies), 3)
