"""SimRobot: tracks a recorded trajectory, keeps a deterministic lockstep clock, refuses bad commands by joint
name, raises tracking faults for a stuck joint, holds grasped objects, and runs in real time on request."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import time
from pathlib import Path

import numpy as np
import pytest

from robodata.open import open_dataset
from robot_client.config import RobotConfig, load_robot_config
from robot_client.robot import RobotCommandError, RobotError, RobotFault
from robot_client.sim import Pose, SimConfig, SimRobot

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_yam"
# Objects parked at the far end of the table, out of the sample trajectories' way.
PARKED = {
    "red_cube": Pose.on_table(0.75, 0.5, 0.02),
    "blue_cube": Pose.on_table(0.75, -0.5, 0.02),
    "green_pad": Pose.on_table(0.75, 0.0, 0.004),
}
# Bounds asserted on the sample episode (measured: max 0.022 rad, mean 0.005 rad on left_joint2; grippers 0.011).
MAX_JOINT_ERROR = 0.05
MEAN_JOINT_ERROR = 0.01
MAX_GRIPPER_ERROR = 0.05
SETTLE_S = 0.25


@pytest.fixture(scope="module")
def config() -> RobotConfig:
    return load_robot_config("bimanual_yam")


@pytest.fixture()
def robot(config: RobotConfig) -> SimRobot:
    r = SimRobot(config)
    r.connect()
    r.enable()
    return r


def _interpolate(actions: np.ndarray, fps: float, t: float) -> np.ndarray:
    """Linear interpolation of 30 Hz actions at time t (what a servo stream between frames looks like)."""
    f = min(t * fps, len(actions) - 1)
    i0 = int(f)
    i1 = min(i0 + 1, len(actions) - 1)
    w = f - i0
    return np.asarray((1 - w) * actions[i0] + w * actions[i1], dtype=np.float64)


def test_tracks_recorded_episode_at_servo_rate(config: RobotConfig) -> None:
    dataset = open_dataset(SAMPLE)
    actions = dataset.episode(0).actions.astype(np.float64)
    fps = float(dataset.info.fps)
    robot = SimRobot(config)
    robot.connect()
    robot.reset(seed=0, object_poses=PARKED, joint_positions=actions[0])
    robot.enable()
    hz = config.servo_hz
    ticks = int((len(actions) - 1) / fps * hz) + int(0.5 * hz)
    errors = []
    for k in range(ticks):
        target = _interpolate(actions, fps, k / hz)
        robot.command(target)
        errors.append(np.abs(target - robot.read_state().positions))
    err = np.array(errors)[int(SETTLE_S * hz):]
    grippers = list(config.gripper_indices())
    joints = [i for i in range(config.dof) if i not in grippers]
    worst = {config.joint_names[i]: round(float(err[:, i].max()), 4) for i in range(config.dof)}
    assert err[:, joints].max() <= MAX_JOINT_ERROR, worst
    assert err[:, joints].mean(axis=0).max() <= MEAN_JOINT_ERROR, worst
    assert err[:, grippers].max() <= MAX_GRIPPER_ERROR, worst
    assert robot.status().ok


def test_lockstep_clock_advances_one_servo_period_per_command(robot: SimRobot, config: RobotConfig) -> None:
    t0, stamp0 = robot.sim_time, robot.read_state().timestamp
    hold = robot.read_state().positions
    stamps = []
    for _ in range(int(config.servo_hz)):
        robot.command(hold)
        stamps.append(robot.read_state().timestamp)
    assert robot.sim_time - t0 == pytest.approx(1.0, abs=robot.world.timestep)
    assert np.all(np.diff(stamps) > 0)
    assert stamps[-1] - stamp0 == pytest.approx(robot.sim_time - t0)
    robot.step(0.5)
    assert robot.sim_time - t0 == pytest.approx(1.5, abs=robot.world.timestep)
    assert robot.now() - stamp0 == pytest.approx(robot.sim_time - t0)


def test_manual_clock_only_advances_on_step(config: RobotConfig) -> None:
    robot = SimRobot(config, SimConfig(step_on_command=False))
    robot.connect()
    robot.enable()
    robot.command(robot.read_state().positions)
    assert robot.sim_time == 0.0
    robot.step(0.01)
    assert robot.sim_time == pytest.approx(0.01)


def _run_scripted(robot: SimRobot, seed: int, steps: int) -> np.ndarray:
    robot.reset(seed=seed)
    robot.enable()
    q = np.zeros(robot.config.dof)
    for k in range(steps):
        q[1] = q[8] = min(1.0, k * 0.004)
        q[2] = q[9] = min(0.8, k * 0.003)
        robot.command(q)
    return np.array(robot.world.data.qpos, copy=True)


def test_reset_is_deterministic(config: RobotConfig) -> None:
    a, b = SimRobot(config), SimRobot(config)
    a.connect()
    b.connect()
    first = _run_scripted(a, seed=5, steps=150)
    np.testing.assert_array_equal(first, _run_scripted(b, seed=5, steps=150))
    np.testing.assert_array_equal(first, _run_scripted(a, seed=5, steps=150))
    other = _run_scripted(a, seed=6, steps=150)
    assert not np.array_equal(first, other)  # the seed moves the objects


def test_object_accessors(robot: SimRobot) -> None:
    robot.reset(seed=0, object_poses={"red_cube": Pose.on_table(0.3, 0.1, 0.02)})
    robot.enable()
    robot.step(0.2)
    positions = robot.object_positions()
    assert set(positions) == {"red_cube", "blue_cube", "green_pad"}
    np.testing.assert_allclose(positions["red_cube"], (0.3, 0.1, 0.02), atol=2e-3)  # resting on the table
    robot.set_object_pose("blue_cube", Pose.on_table(0.4, -0.1, 0.02))
    assert robot.object_pose("blue_cube").position == pytest.approx((0.4, -0.1, 0.02))


def test_command_refusal_names_the_joint(robot: SimRobot, config: RobotConfig) -> None:
    q = robot.read_state().positions
    bad = q.copy()
    bad[9] = config.limits["right_joint3"].upper + 0.1
    with pytest.raises(RobotCommandError, match="right_joint3"):
        robot.command(bad)
    bad = q.copy()
    bad[6] = float("nan")
    with pytest.raises(RobotCommandError, match="left_gripper"):
        robot.command(bad)
    with pytest.raises(RobotCommandError, match="expected 14"):
        robot.command(q[:7])
    robot.disable()
    with pytest.raises(RobotCommandError, match="disabled"):
        robot.command(q)


def test_stuck_joint_raises_tracking_fault_naming_it(robot: SimRobot, config: RobotConfig) -> None:
    q = robot.read_state().positions
    robot.inject_stuck("left_joint2")
    with pytest.raises(RobotFault) as info:
        for k in range(400):  # ramp left_joint2 towards 1.2 rad at 1 rad/s; it never moves
            q[1] = min(1.2, k / config.servo_hz)
            robot.command(q)
    fault = info.value
    assert fault.joint == "left_joint2" and fault.code == "tracking_error"
    # Threshold crossed at 0.5 rad (t = 0.5 s), then sustained for 0.1 s.
    assert robot.sim_time == pytest.approx(0.6, abs=0.02)
    assert [f.joint for f in robot.status().faults] == ["left_joint2"]
    with pytest.raises(RobotFault, match="left_joint2"):
        robot.read_state()
    robot.hold()  # the safe action works while faulted
    held = robot.measured_state().positions
    robot.step(0.2)
    np.testing.assert_allclose(robot.measured_state().positions, held, atol=0.01)  # holding, not falling
    with pytest.raises(RobotFault, match="enable refused"):
        robot.enable()
    robot.clear_injected_faults()
    robot.clear_faults()
    robot.enable()
    assert robot.status().ok
    robot.command(robot.read_state().positions)


def test_brief_tracking_error_is_not_a_fault(robot: SimRobot) -> None:
    q = robot.read_state().positions
    q[0] = 0.7  # a 0.7 rad step: the error exceeds 0.5 rad only for a few milliseconds
    for _ in range(100):
        robot.command(q)
    assert robot.status().ok
    assert robot.read_state().positions[0] == pytest.approx(0.7, abs=0.01)


def test_injected_motor_fault_blocks_until_cleared(robot: SimRobot) -> None:
    robot.inject_fault("right_gripper", "over_temperature", "rotor 95 C")
    with pytest.raises(RobotFault) as info:
        robot.read_state()
    assert info.value.joint == "right_gripper" and info.value.code == "over_temperature"
    robot.clear_faults()  # the motor still reports its error
    with pytest.raises(RobotFault, match="enable refused"):
        robot.enable()
    robot.clear_injected_faults()
    robot.enable()
    assert robot.status().ok


def test_gripper_holds_a_cube(robot: SimRobot, config: RobotConfig) -> None:
    left = config.gripper_indices()[0]
    q = np.zeros(config.dof)
    q[left] = 1.0
    robot.reset(seed=0, joint_positions=q)
    robot.enable()
    grasp = robot.site_position("left_grasp")
    robot.set_object_pose("red_cube", Pose.on_table(*grasp))
    q[left] = 0.0
    for _ in range(60):
        robot.command(q)
    state = robot.read_state()
    assert state.positions[left] == pytest.approx(0.04 / 0.095, abs=0.06)  # 4 cm cube between the pads
    for k in range(200):  # swing the arm; the cube comes along
        q[0] = min(0.6, k * 0.005)
        robot.command(q)
    cube = np.asarray(robot.object_pose("red_cube").position)
    assert np.linalg.norm(cube - robot.site_position("left_grasp")) < 0.02
    assert robot.status().ok  # a gripper blocked by an object is not a tracking fault


def test_disable_goes_limp(robot: SimRobot) -> None:
    q = robot.read_state().positions
    q[1], q[2] = 1.2, 0.6
    for _ in range(200):
        robot.command(q)
    before = robot.read_state().positions
    robot.disable()
    robot.step(0.5)
    after = robot.read_state().positions
    assert np.abs(after - before).max() > 0.1  # gravity is no longer compensated
    robot.enable()  # energised again: holds where it fell
    at_enable = robot.read_state().positions
    robot.step(0.2)
    np.testing.assert_allclose(robot.read_state().positions, at_enable, atol=0.01)


def test_realtime_mode_follows_the_wall_clock(config: RobotConfig) -> None:
    robot = SimRobot(config, SimConfig(realtime=True))
    robot.connect()
    try:
        robot.enable()
        t_sim0, t_wall0 = robot.sim_time, time.monotonic()
        q = robot.read_state().positions
        q[1] = 0.3
        while time.monotonic() - t_wall0 < 0.4:
            robot.command(q)
            time.sleep(1.0 / config.servo_hz)
        state = robot.read_state()
        wall = time.monotonic() - t_wall0
        assert robot.sim_time - t_sim0 == pytest.approx(wall, abs=0.1)
        assert state.timestamp == pytest.approx(time.monotonic(), abs=0.1)
        assert state.positions[1] == pytest.approx(0.3, abs=0.02)
        with pytest.raises(RobotError, match="real-time"):
            robot.step(0.1)
    finally:
        robot.close()
    t = robot.sim_time
    time.sleep(0.05)
    assert robot.sim_time == t  # the stepping thread stopped
