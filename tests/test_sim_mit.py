"""The simulated arms driven through the motors' MIT law (SimConfig(actuation="mit")), in real MuJoCo.

What must show, as on the real arm: without the gravity feed-forward the arm sags where gravity loads joints 2/3, with
it the static error falls to a small fraction; no motor ever produces more than its type's torque range; a gripper
closing on a cube is capped by the force limiter once the stall is detected (and is not without it), at the real
driver's frame period too, and let go when commanded open or when the cube is taken. The sim's other
behaviour (tracking-error fault, holds, limp, lockstep and real-time clocks) works the same in this mode, and the
default actuation stays the position servos the demo policy was trained on.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import time

import numpy as np
import pytest

from robot_client import run_cli
from robot_client.backends import SIM_ACTUATIONS
from robot_client.config import RobotConfig, load_robot_config
from robot_client.gripper_force import GripperForceConfig
from robot_client.robot import RobotError, RobotFault
from robot_client.sim import Pose, SimConfig, SimRobot, SimWorld
from robot_client.sim.mit import MitDrive, MitDriveError
from robot_client.sim.robot import Actuation
from robot_client.sim.tasks import hover_ik
from robot_client.yam.protocol import MOTOR_LIMITS

# Upper arm raised, forearm forward: gravity loads joints 2, 3 and 4 (about 6.6, 6.6 and 1.6 N m).
LOADED = (0.0, 1.57, 1.2, 0.0, 0.0, 0.0)
# Measured at LOADED after 1 s: sag without compensation j2 0.087, j3 0.078, j4 0.138 rad; with it <= 0.0002 rad.
MIN_SAG = {1: 0.05, 2: 0.05, 3: 0.1}  # arm joint index -> least sag (rad) without compensation
MAX_ON_OFF_RATIO = 0.10
CUBE_Z = 0.02  # the 4 cm cube's centre resting on the table
GRIPPER_CLOSE_RATE = 2.0  # gripper units per second: the configured gripper velocity limit the servo loop applies


@pytest.fixture(scope="module")
def config() -> RobotConfig:
    return load_robot_config("bimanual_yam")


def both_arms(config: RobotConfig, arm_joints: tuple[float, ...], gripper: float = 1.0) -> np.ndarray:
    q = np.zeros(config.dof)
    for arm in config.arms:
        q[[config.joint_names.index(j) for j in arm.joints]] = arm_joints
        q[config.joint_names.index(arm.gripper)] = gripper
    return q


def mit_robot(config: RobotConfig, start: np.ndarray, **options: object) -> SimRobot:
    robot = SimRobot(config, SimConfig(actuation="mit", initial_positions=tuple(start), **options))  # type: ignore[arg-type]
    robot.connect()
    robot.enable()
    return robot


def hold_error(robot: SimRobot, target: np.ndarray, seconds: float) -> np.ndarray:
    for _ in range(int(seconds * robot.config.servo_hz)):
        robot.command(target)
    return np.abs(target - robot.read_state().positions)


def test_arm_sags_without_compensation_and_holds_with_it(config: RobotConfig) -> None:
    q = both_arms(config, LOADED)
    left = [config.joint_names.index(j) for j in config.arms[0].joints]
    off = hold_error(mit_robot(config, q, gravity_compensation=False), q, 1.0)[left]
    on = hold_error(mit_robot(config, q), q, 1.0)[left]
    for joint, least in MIN_SAG.items():
        assert off[joint] > least, (joint, off)
    assert on.max() <= MAX_ON_OFF_RATIO * off.max(), (on, off)


def test_the_maker_factors_overcompensate_an_exact_model(config: RobotConfig) -> None:
    """gravity_factors=None takes the arm config's factors (1.1/1.2 on joints 2-4): on a plant equal to the model
    that is 10-20% too much, so the arm rises above its target, proof the config's factors are the ones applied."""
    q = both_arms(config, LOADED)
    left = [config.joint_names.index(j) for j in config.arms[0].joints]
    exact = hold_error(mit_robot(config, q), q, 0.5)[left]
    maker = hold_error(mit_robot(config, q, gravity_factors=None), q, 0.5)[left]
    assert maker[3] > 5 * max(exact[3], 1e-3)


def test_motor_torque_never_exceeds_its_range(config: RobotConfig) -> None:
    start = both_arms(config, LOADED)
    # Long tracking hold: a wrist asked for 12 N m lags its target by over 0.5 rad for more than 0.1 s.
    robot = mit_robot(config, start, gravity_compensation=False, tracking_hold_s=1.0)
    limits = np.array([MOTOR_LIMITS[t].t_max for arm in config.arms for t in arm.motor_types])
    world = robot.world
    peak = np.zeros(config.dof)
    step = world.step

    def checked_step() -> None:  # every physics step, not only at the servo ticks
        step()
        efforts = robot.mit_drive.efforts(world)  # type: ignore[union-attr]
        peak[:] = np.maximum(peak, np.abs(efforts))

    world.step = checked_step  # type: ignore[method-assign]
    target = start.copy()
    target[[1, 8]] -= 0.45  # kp x 0.45 = 36 N m asked of a 28 N m DM4340
    target[[3, 10]] += 1.2  # 12 N m asked of a 10 N m DM4310
    target[[6, 13]] = 0.0  # the grippers slam shut: 20 x 6.57 = 131 N m asked
    for _ in range(100):
        robot.command(target)
    assert (peak <= limits * (1 + 1e-9)).all(), (peak, limits)
    saturated = [config.joint_names[i] for i in np.flatnonzero(peak >= limits * 0.999)]
    assert {"left_joint2", "left_joint4", "left_gripper", "right_joint2"} <= set(saturated), peak
    arm_dofs = [b.dof for b, i in zip(world.bindings, range(config.dof), strict=True)
                if i not in config.gripper_indices()]
    arm_limits = np.delete(limits, list(config.gripper_indices()))
    assert (np.abs(world.data.qfrc_actuator[arm_dofs]) <= arm_limits * (1 + 1e-9)).all()


def grasp_cube(config: RobotConfig, force_limit: bool,
               limiter_period_steps: int = 1) -> tuple[SimRobot, list[float], int | None]:
    """Left gripper lowered around the red cube on the table, closed at the servo's gripper rate; returns the
    robot, the gripper motor's effort every physics step (N m) and the step the stall was detected in (its command
    the first the limiter capped), or None."""
    arm = hover_ik(SimWorld(config.joint_names), "left", np.array([0.3, 0.3, 0.03]))  # pads around the cube
    q = both_arms(config, (0.0, 1.0, 1.0, 0.0, 0.0, 0.0))
    q[:6] = arm
    robot = mit_robot(config, q, gripper_force_limit=force_limit)
    drive = robot.mit_drive
    assert drive is not None
    drive.limiter_period_steps = limiter_period_steps
    robot.set_object_pose("red_cube", Pose.on_table(0.3, 0.3, CUBE_Z))
    robot.step(0.2)
    world, gripper = robot.world, config.joint_names.index("left_gripper")
    efforts: list[float] = []
    detected: list[int] = []
    step = world.step

    def logged_step() -> None:
        step()
        efforts.append(float(drive.efforts(world)[gripper]))
        if drive.grasping()["left_gripper"] and not detected:
            detected.append(len(efforts) - 1)

    world.step = logged_step  # type: ignore[method-assign]
    for k in range(int(1.6 * config.servo_hz)):
        q[gripper] = max(0.0, 1.0 - GRIPPER_CLOSE_RATE * k / config.servo_hz)
        robot.command(q)
    return robot, efforts, detected[0] if detected else None


@pytest.mark.parametrize("period", [1, 2, 3])  # limiter frames every 1.67, 3.33, 5 ms (the real driver: 4 ms)
def test_stalled_gripper_is_capped_after_detection(config: RobotConfig, period: int) -> None:
    cap = GripperForceConfig(max_force_n=config.arms[0].gripper_max_force_n).max_torque_nm
    robot, efforts, detected = grasp_cube(config, force_limit=True, limiter_period_steps=period)
    assert detected is not None, "the stall on the cube was never detected"
    steps_per_s = 1.0 / robot.world.timestep
    # Pressed at the motor's full range for the detection window, the pads spring back once the push drops to the
    # cap; the grasping frames run pure torque (kp = kd = 0), so neither that motion nor the frame's age adds to it.
    before, after = np.abs(efforts[:detected]), np.abs(efforts[detected:])
    assert before.max() > 5 * cap  # it did press hard before the stall was detected
    assert len(after) > 0.5 * steps_per_s
    assert after.max() <= 1.1 * cap, (after.max(), cap)
    assert after[-1] == pytest.approx(cap, rel=0.05)
    gripper = config.joint_names.index("left_gripper")
    act = robot.world.bindings[gripper].actuator
    np.testing.assert_array_equal(robot.world.model.actuator_biasprm[act, 1:3], 0.0)  # the sim runs kp = kd = 0
    report = robot.actuation_report()
    assert report is not None
    left = next(g for g in report.grippers if g.gripper == "left_gripper")
    assert left.grasping and left.grasps == 1 and left.cap_nm == pytest.approx(cap)
    assert report.feedforward_max_nm[report.joints.index("left_joint3")] > 1.0  # holding the arm up
    state = robot.read_state()
    assert state.positions[gripper] == pytest.approx(0.04 / 0.095, abs=0.03)  # held at the cube's width
    q = state.positions.copy()
    q[gripper] = 0.0
    for _ in range(150):  # lift (joint 2 back by 0.3 rad): the capped grasp still carries the cube
        q[1] -= 0.002
        robot.command(q)
    cube = np.asarray(robot.object_pose("red_cube").position)
    assert cube[2] > CUBE_Z + 0.05
    assert np.linalg.norm(cube - robot.site_position("left_grasp")) < 0.02
    assert robot.mit_drive is not None and robot.mit_drive.grasping()["left_gripper"]
    assert robot.status().ok
    drive = robot.mit_drive
    with pytest.raises(MitDriveError, match="limiter_period_steps must be an integer >= 1"):
        drive.limiter_period_steps = 0


def grasping_left(config: RobotConfig, period: int) -> tuple[SimRobot, MitDrive, list[float], int, np.ndarray]:
    """(robot, its MIT drive, gripper efforts, the left gripper's index, the present pose): the left gripper
    holding the cube in the limiter's grasp."""
    robot, efforts, detected = grasp_cube(config, force_limit=True, limiter_period_steps=period)
    assert detected is not None
    drive = robot.mit_drive
    assert drive is not None and drive.grasping()["left_gripper"]
    return robot, drive, efforts, config.joint_names.index("left_gripper"), robot.read_state().positions.copy()


def test_commanding_open_releases_the_grasp(config: RobotConfig) -> None:
    robot, drive, _, gripper, q = grasping_left(config, 3)
    q[gripper] = 1.0
    for _ in range(int(0.5 * config.servo_hz)):
        robot.command(q)
    assert not drive.grasping()["left_gripper"]
    assert robot.read_state().positions[gripper] > 0.9  # opened
    act = robot.world.bindings[gripper].actuator
    s = drive.scale[gripper]  # the configured law is back: kp and kd in robot units
    np.testing.assert_allclose(robot.world.model.actuator_biasprm[act, 1:3],
                               [-drive.kp[gripper] * s ** 2, -drive.kd[gripper] * s ** 2])


@pytest.mark.parametrize("period", [1, 3])
def test_a_cube_taken_from_the_grasp_releases_it_by_the_motion(config: RobotConfig, period: int) -> None:
    """Pure torque has nothing that fades when the object goes: the jaws run on toward the target past where they
    stalled, and that motion releases the grasp (the gripper then closes on nothing under its ordinary law)."""
    robot, drive, efforts, gripper, q = grasping_left(config, period)
    q[gripper] = 0.0
    robot.set_object_pose("red_cube", Pose.on_table(0.6, -0.2, CUBE_Z))  # taken away
    released = None
    for k in range(int(0.5 * config.servo_hz)):
        robot.command(q)
        if released is None and not drive.grasping()["left_gripper"]:
            released = k
    assert released is not None and released / config.servo_hz < 0.05
    assert robot.read_state().positions[gripper] == pytest.approx(0.0, abs=0.01)  # closed on nothing
    assert abs(efforts[-1]) < 0.2 * GripperForceConfig().max_torque_nm  # not pushing at the cap
    report = robot.actuation_report()
    assert report is not None
    left = next(g for g in report.grippers if g.gripper == "left_gripper")
    assert not left.grasping and left.grasps == 1  # not detected again on the closed jaws


def test_stalled_gripper_without_the_limiter_pushes_to_the_motor_range(config: RobotConfig) -> None:
    cap = GripperForceConfig().max_torque_nm
    robot, efforts, detected = grasp_cube(config, force_limit=False)
    assert detected is None
    tail = np.abs(efforts[-int(0.5 / robot.world.timestep):])
    assert tail.min() > 3 * cap  # kp x the remaining error into the cube


def test_stuck_joint_faults_holds_and_recovers(config: RobotConfig) -> None:
    q = both_arms(config, (0.0, 1.0, 1.0, 0.0, 0.0, 0.0))
    robot = mit_robot(config, q)
    robot.inject_stuck("left_joint3")
    with pytest.raises(RobotFault) as info:
        for k in range(400):
            q[2] = 1.0 + min(1.0, k / config.servo_hz)
            robot.command(q)
    assert info.value.joint == "left_joint3" and info.value.code == "tracking_error"
    held = robot.measured_state().positions
    robot.step(0.3)
    np.testing.assert_allclose(robot.measured_state().positions, held, atol=0.01)  # holding, gravity compensated
    with pytest.raises(RobotFault, match="enable refused"):
        robot.enable()
    robot.clear_injected_faults()
    robot.clear_faults()
    robot.enable()
    robot.command(robot.read_state().positions)
    assert robot.status().ok


def test_enable_holds_without_a_drop_and_limp_falls(config: RobotConfig) -> None:
    q = both_arms(config, LOADED)
    robot = mit_robot(config, q)  # enabled at LOADED: hold the measured pose, the feed-forward carries the weight
    robot.step(0.5)
    np.testing.assert_allclose(robot.read_state().positions, q, atol=0.002)
    robot.disable()
    robot.step(0.3)
    assert np.abs(robot.measured_state().positions - q).max() > 0.1


def test_lockstep_clock_and_delayed_commands(config: RobotConfig) -> None:
    q = both_arms(config, (0.0, 1.0, 1.0, 0.0, 0.0, 0.0))
    robot = SimRobot(config, SimConfig(actuation="mit", initial_positions=tuple(q), command_delay_s=0.05))
    robot.connect()
    robot.enable()
    t0 = robot.sim_time
    target = q.copy()
    target[0] = 0.2
    for _ in range(8):  # 40 ms: the command has not arrived yet
        robot.command(target)
    assert robot.sim_time - t0 == pytest.approx(8 / config.servo_hz, abs=1e-9)
    assert abs(robot.read_state().positions[0]) < 0.005
    for _ in range(120):
        robot.command(target)
    assert robot.read_state().positions[0] == pytest.approx(0.2, abs=0.01)


def test_realtime_mode_drives_the_motor_law(config: RobotConfig) -> None:
    q = both_arms(config, LOADED)
    robot = SimRobot(config, SimConfig(actuation="mit", realtime=True, initial_positions=tuple(q)))
    robot.connect()
    try:
        robot.enable()
        t_wall0, t_sim0 = time.monotonic(), robot.sim_time
        target = q.copy()
        target[1] += 0.2
        while time.monotonic() - t_wall0 < 0.6:
            robot.command(target)
            time.sleep(1.0 / config.servo_hz)
        state = robot.read_state()
        assert robot.sim_time - t_sim0 == pytest.approx(time.monotonic() - t_wall0, abs=0.15)
        assert state.positions[1] == pytest.approx(target[1], abs=0.02)
        with pytest.raises(RobotError, match="real-time"):
            robot.step(0.1)
    finally:
        robot.close()


def test_default_actuation_is_unchanged(config: RobotConfig) -> None:
    robot = SimRobot(config)
    robot.connect()
    assert robot.sim_config.actuation == "position" and robot.mit_drive is None
    assert robot.actuation_report() is None
    assert robot.world.model.body_gravcomp.max() == 0.0  # limp until enabled
    robot.enable()
    assert robot.world.model.body_gravcomp.max() == 1.0  # the position servos' per-body compensation


def test_bad_sim_settings_are_named() -> None:
    with pytest.raises(ValueError, match="SimConfig.actuation must be one of"):
        SimConfig(actuation="torque")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SimConfig.gravity_factors must be 6 numbers"):
        SimConfig(actuation="mit", gravity_factors=(1.0, 1.0))
    assert set(SIM_ACTUATIONS) == set(Actuation.__args__)  # type: ignore[attr-defined]


def test_run_cli_switch_builds_the_mit_sim() -> None:
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    args = parser.parse_args(["--server", "127.0.0.1:1", "--sim-actuation", "mit"])
    assert run_cli._sim_config(args).actuation == "mit"
    assert run_cli._sim_config(parser.parse_args(["--server", "127.0.0.1:1"])).actuation == "position"
    with pytest.raises(SystemExit):
        parser.parse_args(["--server", "127.0.0.1:1", "--sim-actuation", "torque"])


def _tracking_lag(config: RobotConfig, send_velocity: bool) -> float:
    """Mean |commanded - measured| (rad) over joints 1-3 of the left arm while the servo sweeps them back and forth
    near its velocity limit, through the MIT law with the gravity feed-forward."""
    from robot_client.servo import JerkLimitedServo, ServoLimits

    start = both_arms(config, (0.0, 1.0, 1.0, 0.0, 0.0, 0.0))
    robot = mit_robot(config, start)
    servo = JerkLimitedServo(ServoLimits.from_config(config), 1.0 / config.servo_hz)
    servo.reset(start)
    joints = [config.joint_names.index(j) for j in config.arms[0].joints[:3]]
    errors = []
    for k in range(int(3.0 * config.servo_hz)):
        target = start.copy()
        target[joints] += 0.6 if (k // int(0.75 * config.servo_hz)) % 2 == 0 else -0.6
        step = servo.step(target)
        robot.command(step.position, step.velocity if send_velocity else None)
        if k > config.servo_hz // 4:
            errors.append(np.abs(step.position - robot.read_state().positions)[joints])
    robot.close()
    return float(np.mean(errors))


def test_planned_velocity_as_v_des_removes_most_of_the_tracking_lag(config: RobotConfig) -> None:
    """With v_des = 0 the damping kd (0 - v) brakes every planned motion and the arm trails its target; with the
    servo's planned velocity it damps only the deviation from the plan."""
    without = _tracking_lag(config, send_velocity=False)
    with_velocity = _tracking_lag(config, send_velocity=True)
    assert without > 0.01, without
    assert with_velocity < 0.4 * without, (with_velocity, without)
