"""The bimanual YAM MJCF: limits equal the robot config, home-pose kinematics match the YAM facts, the gripper
value maps onto finger travel, and the seeded object layout is deterministic."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np
import pytest

from robot_client.config import RobotConfig, load_robot_config
from robot_client.sim import LayoutError, Pose, SceneLayout, SimModelError, SimWorld

FINGER_TRAVEL = 0.0475
MOUNTS = {"left": np.array([0.0, 0.3, 0.0]), "right": np.array([0.0, -0.3, 0.0])}
# World-frame joint axes at the home pose (all joints zero), for an arm facing +x.
HOME_AXES = [(0, 0, 1), (0, 1, 0), (0, -1, 0), (0, -1, 0), (0, 0, -1), (1, 0, 0)]
LINK6_HOME_POS = np.array([0.110597, 0.0, 0.173502])
LINK6_HOME_ROT = np.array([[0, 0, -1], [0, -1, 0], [-1, 0, 0]], dtype=float)
LINK_MASSES = {"link1": 0.101218, "link2": 1.46908, "link3": 0.982553, "link4": 0.462165, "link5": 0.403307,
               "link6": 0.553219}


@pytest.fixture(scope="module")
def config() -> RobotConfig:
    return load_robot_config("bimanual_yam")


@pytest.fixture()
def world(config: RobotConfig) -> SimWorld:
    w = SimWorld(config.joint_names)
    w.reset(seed=0)
    return w


def test_joint_ranges_equal_config_limits_in_radians(world: SimWorld, config: RobotConfig) -> None:
    ranges = world.position_ranges()
    for name, (lo, hi) in zip(config.joint_names, ranges, strict=True):
        lim = config.limits[name]
        assert lo == pytest.approx(lim.lower, abs=1e-9), name
        assert hi == pytest.approx(lim.upper, abs=1e-9), name
    # Degrees would have made joint1's upper limit 3.14159 deg = 0.0548 rad.
    assert world.model.jnt_range[world.bindings[0].joint][1] == pytest.approx(3.14159)
    m = world.model
    for b in world.bindings:
        lo, hi = m.actuator_ctrlrange[b.actuator]
        assert (lo, hi) == pytest.approx((config.limits[b.name].lower, config.limits[b.name].upper), abs=1e-6), b.name


@pytest.mark.parametrize("arm", ["left", "right"])
def test_home_pose_world_axes_and_link6_mount(world: SimWorld, arm: str) -> None:
    m, d = world.model, world.data
    for j, axis in enumerate(HOME_AXES, start=1):
        jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{arm}_joint{j}")
        np.testing.assert_allclose(d.xaxis[jid], axis, atol=1e-6, err_msg=f"{arm}_joint{j}")
    link6 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{arm}_link6")
    np.testing.assert_allclose(d.xpos[link6] - MOUNTS[arm], LINK6_HOME_POS, atol=0.002)
    np.testing.assert_allclose(d.xmat[link6].reshape(3, 3), LINK6_HOME_ROT, atol=1e-4)


def test_link_masses_are_the_yam_masses(world: SimWorld) -> None:
    for arm in ("left", "right"):
        for link, mass in LINK_MASSES.items():
            body = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_BODY, f"{arm}_{link}")
            assert world.model.body_mass[body] == pytest.approx(mass, rel=1e-6), f"{arm}_{link}"


def test_gripper_value_is_finger_opening(world: SimWorld, config: RobotConfig) -> None:
    m = world.model
    q = np.zeros(config.dof)
    left, right = config.gripper_indices()
    q[left], q[right] = 0.5, 1.0
    world.set_joint_positions(q)
    mujoco.mj_forward(m, world.data)
    for arm, value in (("left", 0.5), ("right", 1.0)):
        for finger in ("finger_a", "finger_b"):
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{arm}_{finger}")
            assert world.data.qpos[m.jnt_qposadr[jid]] == pytest.approx(value * FINGER_TRAVEL), f"{arm}_{finger}"
    measured = world.positions()
    assert measured[left] == pytest.approx(0.5) and measured[right] == pytest.approx(1.0)


def test_model_has_cameras_sites_and_objects(world: SimWorld) -> None:
    m = world.model
    cams = {mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(m.ncam)}
    assert {"top", "left_wrist", "right_wrist"} <= cams
    assert set(world.object_names) == {"red_cube", "blue_cube", "green_pad"}
    assert world.site_position("left_grasp")[1] > 0 > world.site_position("right_grasp")[1]
    with pytest.raises(SimModelError, match="no site named 'nope'"):
        world.site_position("nope")


def test_unknown_joint_is_named(config: RobotConfig) -> None:
    with pytest.raises(SimModelError, match="'left_joint7'"):
        SimWorld((*config.joint_names, "left_joint7"))


def test_layout_is_seeded_and_non_overlapping() -> None:
    layout = SceneLayout()
    a, b, c = layout.sample(3), layout.sample(3), layout.sample(4)
    assert a == b and a != c
    for seed in range(20):
        poses = layout.sample(seed)
        xy = {n: np.array(p.position[:2]) for n, p in poses.items()}
        radius = {s.name: s.radius for s in layout.spawns}
        for i, n1 in enumerate(xy):
            for n2 in list(xy)[i + 1:]:
                assert np.linalg.norm(xy[n1] - xy[n2]) >= radius[n1] + radius[n2] + layout.min_gap - 1e-12
    crowded = SceneLayout(min_gap=1.0, max_tries=5)
    with pytest.raises(LayoutError, match="could not place"):
        crowded.sample(0)


def test_reset_applies_layout_and_overrides(world: SimWorld) -> None:
    world.reset(seed=7)
    expected = SceneLayout().sample(7)
    for name, pose in expected.items():
        np.testing.assert_allclose(world.object_pose(name).position, pose.position)
    world.reset(seed=7, object_poses={"red_cube": Pose.on_table(0.5, 0.0, 0.02, yaw=0.3)})
    assert world.object_pose("red_cube").position == pytest.approx((0.5, 0.0, 0.02))
    assert world.object_pose("blue_cube").position == pytest.approx(expected["blue_cube"].position)
    with pytest.raises(SimModelError, match="no free object 'yellow_cube'"):
        world.reset(seed=7, object_poses={"yellow_cube": Pose.on_table(0.5, 0.0, 0.02)})
