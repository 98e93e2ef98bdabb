"""Static tracking error of the simulated arms driven through the motors' MIT law, gravity compensation off vs on.

    python bench/sim_gravity.py [--factors model|arm] [--settle 2.0] [--stream] [--gripper-only]

Both arms of the MuJoCo station run in SimConfig(actuation="mit"): the arm config's kp/kd, the motor types' torque
ranges, real gravity; "on" adds the driver's gravity feed-forward (robot_client.gravity; clip from the arm config).
For each of five poses (the arm joint vector is applied to both arms) the arms start at a neutral pose, move there
in a 1.5 s minimum-jerk move at the servo rate (lockstep simulated time), hold the target for --settle seconds, and
the static error |target - measured| is averaged over the last 0.5 s. Printed: per-joint error per pose, the max
over joints, and the ratio on / off per pose and overall (goal: on <= 10% of off).

Also printed: one outstretched pose where joint 2 needs 14.9 N m, more than LeRobot's 10 N m feed-forward clip, with
the configured clip (default 20 N m) and with LeRobot's; and the left gripper closing on a 4 cm cube, with and
without the force limiter (motor effort before and from the step the stall is detected in, against the cap), the
limiter updated every physics step and, as the real driver does, once per command frame (every 2 or 3 steps); then
the cube is taken from the grasp and the time until the limiter lets go is printed (--gripper-only: just this part).

--factors model (default): feed-forward factors 1.0, exact for the sim whose plant is the model itself; arm: the
arm config's gravity_factors (the maker's 1.0/1.1/1.1/1.2/1.0/1.0), i.e. the over-compensation those factors give
on an arm that matches the model. --stream additionally reports the tracking error of the recorded servo stream of
data/sample_yam episode 0 (position vs MIT actuation), for deciding whether the demo can run in MIT mode.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from robot_client.config import RobotConfig, load_robot_config  # noqa: E402
from robot_client.sim import Pose, SimConfig, SimRobot  # noqa: E402
from robot_client.sim.mit import MODEL_GRAVITY_FACTORS  # noqa: E402

# Arm joints 1-6 (rad). Poses with joint 2/3 loaded, within the workspace of the demo and the sample recordings
# (their gravity torques reach 6.6 N m on joint 3 and 6.6 N m on joint 2), plus one reaching far out.
POSES: dict[str, tuple[float, ...]] = {
    "reach low": (0.0, 1.0, 0.6, 0.0, 0.0, 0.0),
    "forward": (0.0, 1.57, 1.2, 0.0, 0.0, 0.0),
    "side, wrist turned": (0.5, 1.5, 1.2, -0.5, 0.3, 0.8),
    "raised, wrist up": (-0.6, 0.8, 0.5, 0.6, -0.4, -1.0),
    "far out": (0.3, 2.0, 1.8, 0.4, 0.0, 0.0),
}
# Forearm stretched out: joint 2 needs 14.9 N m, beyond LeRobot's 10 N m feed-forward clip (reported apart).
OUTSTRETCHED = (0.0, 0.2, 3.0, 0.0, 0.0, 0.0)
LEROBOT_CLIP_NM = 10.0  # LeRobot's native YAM follower clips the gravity feed-forward here
NEUTRAL = (0.0, 1.0, 1.0, 0.0, 0.0, 0.0)
MOVE_S = 1.5
MEASURE_S = 0.5
STREAM_EPISODES = 4
SAMPLE = REPO_ROOT / "data" / "sample_yam"
PARKED = {"red_cube": Pose.on_table(0.75, 0.5, 0.02), "blue_cube": Pose.on_table(0.75, -0.5, 0.02),
          "green_pad": Pose.on_table(0.75, 0.0, 0.004)}


def full_vector(config: RobotConfig, arm_joints: tuple[float, ...]) -> np.ndarray:
    """The robot joint vector with `arm_joints` on every arm's joints 1-6 and the grippers open."""
    q = np.zeros(config.dof)
    names = config.joint_names
    for arm in config.arms:
        q[[names.index(j) for j in arm.joints]] = arm_joints
        q[names.index(arm.gripper)] = 1.0
    return q


def static_error(config: RobotConfig, pose: tuple[float, ...], compensation: bool,
                 factors: tuple[float, ...] | None, settle_s: float) -> np.ndarray:
    """Mean |target - measured| per robot joint over the last MEASURE_S of the hold."""
    start, goal = full_vector(config, NEUTRAL), full_vector(config, pose)
    robot = SimRobot(config, SimConfig(actuation="mit", gravity_compensation=compensation, gravity_factors=factors,
                                       initial_positions=tuple(start)))
    robot.connect()
    robot.enable()
    hz = config.servo_hz
    for k in range(int(MOVE_S * hz)):
        s = min(1.0, (k + 1) / (MOVE_S * hz))
        robot.command(start + (goal - start) * (10 * s**3 - 15 * s**4 + 6 * s**5))
    hold = int(settle_s * hz)
    errors = []
    for k in range(hold):
        robot.command(goal)
        if k >= hold - int(MEASURE_S * hz):
            errors.append(np.abs(goal - robot.read_state().positions))
    robot.close()
    return np.asarray(np.mean(errors, axis=0), dtype=np.float64)


def stream_error(config: RobotConfig, actuation: str, episode: int) -> tuple[float, float, str]:
    """(max, mean) |target - measured| over the arm joints while tracking a sample episode's actions,
    interpolated to the servo rate (objects parked out of the way), and the joint with the largest max."""
    from robodata.open import open_dataset

    dataset = open_dataset(SAMPLE)
    actions = dataset.episode(episode).actions.astype(np.float64)
    fps = float(dataset.info.fps)
    robot = SimRobot(config, SimConfig(actuation=actuation))  # type: ignore[arg-type]
    robot.connect()
    robot.reset(seed=0, object_poses=PARKED, joint_positions=actions[0])
    robot.enable()
    hz = config.servo_hz
    errors = []
    for k in range(int((len(actions) - 1) / fps * hz)):
        f = k * fps / hz
        i0 = int(f)
        w = f - i0
        target = (1 - w) * actions[i0] + w * actions[min(i0 + 1, len(actions) - 1)]
        robot.command(target)
        errors.append(np.abs(target - robot.read_state().positions))
    robot.close()
    err = np.asarray(errors)[int(0.25 * hz):]
    joints = [i for i in range(config.dof) if i not in config.gripper_indices()]
    worst = joints[int(np.argmax(err[:, joints].max(axis=0)))]
    return float(err[:, joints].max()), float(err[:, joints].mean()), config.joint_names[worst]


def gripper_stall(config: RobotConfig, force_limit: bool, limiter_period_steps: int = 1) -> dict[str, float]:
    """The left gripper lowered around a 4 cm cube on the table and closed at the servo's gripper rate (2 / s) in
    MIT actuation; the gripper motor's |effort| every physics step, before and after the stall is detected. The
    force limiter runs every `limiter_period_steps` physics steps (1: every step)."""
    from robot_client.sim import SimWorld
    from robot_client.sim.tasks import hover_ik

    q = full_vector(config, NEUTRAL)
    q[:6] = hover_ik(SimWorld(config.joint_names), "left", np.array([0.3, 0.3, 0.03]))
    robot = SimRobot(config, SimConfig(actuation="mit", gripper_force_limit=force_limit,
                                       initial_positions=tuple(q)))
    robot.connect()
    drive, world = robot.mit_drive, robot.world
    assert drive is not None
    drive.limiter_period_steps = limiter_period_steps
    robot.enable()
    robot.set_object_pose("red_cube", Pose.on_table(0.3, 0.3, 0.02))
    robot.step(0.2)
    gripper = config.joint_names.index("left_gripper")
    efforts: list[float] = []
    detected: list[int] = []
    step = world.step

    def logged_step() -> None:
        step()
        efforts.append(abs(float(drive.efforts(world)[gripper])))
        if drive.grasping()["left_gripper"] and not detected:
            detected.append(len(efforts) - 1)  # this step's command was the first the limiter capped

    world.step = logged_step  # type: ignore[method-assign]
    for k in range(int(2.0 * config.servo_hz)):
        q[gripper] = max(0.0, 1.0 - 2.0 * k / config.servo_hz)
        robot.command(q)
    e = np.asarray(efforts)
    dt = world.timestep
    out = {"cap": drive.force_configs[0].max_torque_nm, "peak": float(e.max()), "final": float(e[-1]),
           "opening": float(robot.read_state().positions[gripper]),
           "limiter_ms": limiter_period_steps * dt * 1e3}
    if detected:
        after = e[detected[0]:]
        over = np.flatnonzero(after > 1.1 * out["cap"])
        out.update(peak_before=float(e[:detected[0]].max()), peak_after=float(after.max()),
                   over_ms=float((over.max() + 1) * dt * 1e3) if len(over) else 0.0,
                   detected_s=float(detected[0] * dt))
    if drive.grasping()["left_gripper"]:
        # The cube taken from the grasp: the capped push runs the jaws on until the limiter lets go.
        robot.set_object_pose("red_cube", Pose.on_table(0.6, -0.2, 0.02))
        taken = len(efforts)
        while drive.grasping()["left_gripper"] and len(efforts) - taken < 0.5 / dt:
            world.step()
        out["released_ms"] = (len(efforts) - taken) * dt * 1e3
        for _ in range(int(0.5 * config.servo_hz)):
            robot.command(q)
        out["final_taken"] = float(efforts[-1])
    robot.close()
    return out


def print_gripper_stall(config: RobotConfig) -> None:
    print("\ngripper closing on a 4 cm cube at 2 / s (motor |effort|, N m); limiter updated every physics step, or "
          "every 2 / 3 steps (about the real driver's 4 ms command frame):")
    for force_limit, every in ((False, 1), (True, 1), (True, 2), (True, 3)):
        r = gripper_stall(config, force_limit, every)
        label = f"on, every {r['limiter_ms']:.2f} ms" if force_limit else "off"
        text = (f"  limiter {label}: peak {r['peak']:.2f}, final {r['final']:.2f} "
                f"(cap {r['cap']:.2f}), opening {r['opening']:.3f}")
        if "peak_after" in r:
            text += (f"; stall detected {r['detected_s']:.3f} s after closing began (peak before "
                     f"{r['peak_before']:.2f}), from then on peak {r['peak_after']:.3f} "
                     f"({r['peak_after'] / r['cap'] - 1:+.1%} of the cap), above 1.1 x cap for {r['over_ms']:.0f} ms")
        if "released_ms" in r:
            text += (f"; cube taken: released after {r['released_ms']:.1f} ms, |effort| 0.5 s later "
                     f"{r['final_taken']:.3f}")
        print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", choices=("model", "arm"), default="model")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds holding each pose (>= 1)")
    parser.add_argument("--stream", action="store_true", help="also track the recorded sample episode")
    parser.add_argument("--gripper-only", action="store_true", help="only the gripper closing on the cube")
    args = parser.parse_args(argv)
    if not args.settle >= MEASURE_S + 0.5:
        parser.error(f"--settle must be >= {MEASURE_S + 0.5} s, got {args.settle}")
    config = load_robot_config("bimanual_yam")
    if args.gripper_only:
        print_gripper_stall(config)
        return 0
    factors = MODEL_GRAVITY_FACTORS if args.factors == "model" else None
    names = config.joint_names
    print(f"MIT-law sim, kp {list(config.arms[0].kp)}, kd {list(config.arms[0].kd)}, gravity factors "
          f"{list(factors) if factors else list(config.arms[0].gravity_factors)}, clip "
          f"{config.arms[0].gravity_clip_nm} N m; static |error| (rad) averaged over the last {MEASURE_S} s of a "
          f"{args.settle} s hold, both arms\n")
    print("| pose | compensation | j1 | j2 | j3 | j4 | j5 | j6 | max | on / off |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = {False: 0.0, True: 0.0}
    ratios = []
    for label, pose in POSES.items():
        per: dict[bool, np.ndarray] = {}
        for comp in (False, True):
            err = static_error(config, pose, comp, factors, args.settle)
            # The worse of the two arms per joint (they mirror each other).
            arm_err = np.max([err[[names.index(j) for j in arm.joints]] for arm in config.arms], axis=0)
            per[comp] = arm_err
            worst[comp] = max(worst[comp], float(arm_err.max()))
        ratio = float(per[True].max() / per[False].max())
        ratios.append(ratio)
        for comp in (False, True):
            cells = " | ".join(f"{e:.4f}" for e in per[comp])
            tail = f"{ratio:.1%}" if comp else ""
            print(f"| {label} {list(pose)} | {'on' if comp else 'off'} | {cells} | {per[comp].max():.4f} | {tail} |")
    overall = worst[True] / worst[False]
    print(f"\nmax over poses: off {worst[False]:.4f} rad, on {worst[True]:.4f} rad; on / off = {overall:.1%} "
          f"(worst pose {max(ratios):.1%}); goal <= 10%: {'met' if max(ratios) <= 0.10 else 'NOT met'}")
    clip = config.arms[0].gravity_clip_nm
    lerobot = replace(config, arms=tuple(replace(a, gravity_clip_nm=LEROBOT_CLIP_NM) for a in config.arms))
    left = [names.index(j) for j in config.arms[0].joints]
    off = static_error(config, OUTSTRETCHED, False, factors, args.settle)[left]
    on = static_error(config, OUTSTRETCHED, True, factors, args.settle)[left]
    on_lerobot = static_error(lerobot, OUTSTRETCHED, True, factors, args.settle)[left]
    print(f"\nbeyond the clip, {list(OUTSTRETCHED)} (gravity 14.9 N m on joint 2): joint 2 static error off "
          f"{off[1]:.4f} rad, on with the configured {clip:g} N m clip {on[1]:.4f} rad ({on[1] / off[1]:.0%}), on "
          f"with LeRobot's {LEROBOT_CLIP_NM:g} N m {on_lerobot[1]:.4f} rad ({on_lerobot[1] / off[1]:.0%})")
    print_gripper_stall(config)
    if args.stream:
        print("\nrecorded servo streams (data/sample_yam, 30 Hz actions interpolated to the servo rate), arm joints "
              "|target - measured| (rad):\n")
        print("| episode | position: max | position: mean | mit: max | mit: mean |")
        print("|---|---|---|---|---|")
        for episode in range(STREAM_EPISODES):
            row: list[str] = []
            for actuation in ("position", "mit"):
                peak, mean, joint = stream_error(config, actuation, episode)
                row += [f"{peak:.3f} ({joint})", f"{mean:.4f}"]
            print(f"| {episode} | {' | '.join(row)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
