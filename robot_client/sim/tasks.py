"""Scripted tasks of the simulated station: prompts, success checks from the sim state, and a scripted expert.

The demo task is "hover": move one gripper above one cube, e.g. "move the left gripper above the red cube".
Why this task: it is solvable by a small model trained on CPU in minutes, yet exercises what a VLA must do:
- the prompt says which arm moves (the same scene is solved differently by each prompt), and the other arm
  must stay where it is, so a policy that ignores the prompt fails half the episodes;
- the cube's place varies with the scene seed (SceneLayout, a 17 x 15 cm region per cube), so the policy must
  find it in the camera image (the state does not say where the cube is);
- the motion is low-dimensional (joints 1-4 of one arm, grippers closed, joints 5-6 at 0) and needs no contact,
  so success is a geometric check that does not depend on grasp physics.

Success (`HoverCriteria`), checked on the final sim state: the named arm's grasp site (between the finger pads)
is within `xy_tolerance` of the cube centre horizontally and `min_clearance`..`max_clearance` above the cube's
top face; the other arm's grasp site is within `idle_tolerance` of where it started; no cube moved more than
`object_tolerance` (the gripper hovers, it must not push).

The expert (`hover_goal` + `expert_plan`): inverse kinematics of the arm's joints 1-4 for a grasp-site position
`hover_height` above the cube with the tool pointing straight down, then a minimum-jerk joint-space move from
the start pose, then a hold. Straight joint-space paths from the home pose keep the gripper above 9 cm over the
whole cube region (checked in tests), so the expert needs no waypoints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mujoco
import numpy as np
import numpy.typing as npt

from robot_client.sim.world import SimModelError, SimWorld

F64 = npt.NDArray[np.float64]
ARMS = ("left", "right")
CUBE_HALF_SIZE = 0.02  # the cubes of assets/bimanual_yam.xml are 4 cm boxes


class TaskError(ValueError):
    """A task cannot be set up or solved (unknown prompt, unreachable target); the message names it."""


@dataclass(frozen=True)
class HoverTask:
    """Bring `arm`'s gripper above `target` (a free object of the scene); `prompt` is the instruction."""

    arm: str
    target: str
    prompt: str


# The tasks the bundled demo policy is trained on. Each cube starts on its arm's side (robot_client.sim.layout).
HOVER_TASKS: tuple[HoverTask, ...] = (
    HoverTask("left", "red_cube", "move the left gripper above the red cube"),
    HoverTask("right", "blue_cube", "move the right gripper above the blue cube"),
)


def _canonical(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".")


def find_task(prompt: str, tasks: Sequence[HoverTask] = HOVER_TASKS) -> HoverTask | None:
    """The task whose prompt matches (case, surrounding blanks, repeated spaces and a final '.' ignored)."""
    key = _canonical(prompt)
    for task in tasks:
        if _canonical(task.prompt) == key:
            return task
    return None


@dataclass(frozen=True)
class HoverCriteria:
    """Thresholds of the success check (metres)."""

    xy_tolerance: float = 0.03
    min_clearance: float = 0.01
    max_clearance: float = 0.10
    idle_tolerance: float = 0.03
    object_tolerance: float = 0.02


@dataclass(frozen=True)
class HoverOutcome:
    success: bool
    xy_error: float  # horizontal distance grasp site - cube centre
    clearance: float  # grasp site height above the cube's top face
    idle_drift: float  # how far the other arm's grasp site moved
    object_drift: float  # largest displacement of any free object
    reasons: tuple[str, ...]

    def describe(self) -> str:
        verdict = "success" if self.success else "failure (" + "; ".join(self.reasons) + ")"
        return (f"{verdict}: xy error {self.xy_error * 100:.1f} cm, clearance {self.clearance * 100:.1f} cm, "
                f"idle arm drift {self.idle_drift * 100:.1f} cm, object drift {self.object_drift * 100:.1f} cm")


@dataclass(frozen=True)
class SceneSnapshot:
    """Positions at the start of an episode: every free object and both grasp sites."""

    objects: Mapping[str, F64]
    grasp: Mapping[str, F64]


def snapshot(world: SimWorld) -> SceneSnapshot:
    """Current object and grasp-site positions (callers sharing the world across threads hold its lock)."""
    objects = {n: np.asarray(world.object_pose(n).position, dtype=np.float64) for n in world.object_names}
    return SceneSnapshot(objects, {arm: world.site_position(f"{arm}_grasp") for arm in ARMS})


def evaluate_hover(task: HoverTask, start: SceneSnapshot, now: SceneSnapshot,
                   criteria: HoverCriteria = HoverCriteria()) -> HoverOutcome:
    """The success check of `task` on the scene `now`, given where things were at the episode start."""
    if task.target not in now.objects:
        raise TaskError(f"task target '{task.target}' is not an object of the scene ({list(now.objects)})")
    cube = now.objects[task.target]
    grasp = now.grasp[task.arm]
    other = next(a for a in ARMS if a != task.arm)
    xy_error = float(np.linalg.norm(grasp[:2] - cube[:2]))
    clearance = float(grasp[2] - (cube[2] + CUBE_HALF_SIZE))
    idle_drift = float(np.linalg.norm(now.grasp[other] - start.grasp[other]))
    object_drift = max(float(np.linalg.norm(now.objects[n] - start.objects[n])) for n in start.objects)
    reasons = []
    if xy_error > criteria.xy_tolerance:
        reasons.append(f"{task.arm} gripper {xy_error * 100:.1f} cm from above the {task.target} "
                       f"(> {criteria.xy_tolerance * 100:.0f} cm)")
    if not criteria.min_clearance <= clearance <= criteria.max_clearance:
        reasons.append(f"clearance {clearance * 100:.1f} cm outside [{criteria.min_clearance * 100:.0f}, "
                       f"{criteria.max_clearance * 100:.0f}] cm")
    if idle_drift > criteria.idle_tolerance:
        reasons.append(f"the {other} arm moved {idle_drift * 100:.1f} cm")
    if object_drift > criteria.object_tolerance:
        reasons.append(f"an object was pushed {object_drift * 100:.1f} cm")
    return HoverOutcome(not reasons, xy_error, clearance, idle_drift, object_drift, tuple(reasons))


class TaskMonitor:
    """Snapshot at the episode start (`start`), verdict at its end (`outcome`/`success` for the prompt)."""

    def __init__(self, world: SimWorld, tasks: Sequence[HoverTask] = HOVER_TASKS,
                 criteria: HoverCriteria = HoverCriteria()) -> None:
        self.world = world
        self.tasks = tuple(tasks)
        self.criteria = criteria
        self._start: SceneSnapshot | None = None

    def start(self) -> None:
        with self.world.lock:
            self._start = snapshot(self.world)

    def outcome(self, prompt: str) -> HoverOutcome | None:
        """None when the prompt names no known task (or no episode was started)."""
        task = find_task(prompt, self.tasks)
        if task is None or self._start is None:
            return None
        with self.world.lock:
            now = snapshot(self.world)
        return evaluate_hover(task, self._start, now, self.criteria)

    def success(self, prompt: str) -> bool | None:
        outcome = self.outcome(prompt)
        return None if outcome is None else outcome.success


# ---- the scripted expert ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpertConfig:
    hover_height: float = 0.07  # grasp site above the cube centre (5 cm clearance over the top face)
    max_joint_speed: float = 1.1  # rad/s, peak of the min-jerk profile (the servo allows 1.5)
    min_move_s: float = 2.0
    ik_iterations: int = 100
    ik_tolerance: float = 1e-5
    ik_orientation_weight: float = 0.3


IK_JOINTS = ("joint1", "joint2", "joint3", "joint4")
IK_SEED = (0.0, 1.0, 1.0, 0.0)


def arm_joint_indices(joint_names: Sequence[str], arm: str) -> list[int]:
    """Robot-order indices of joint1..joint6 of `arm`."""
    names = list(joint_names)
    try:
        return [names.index(f"{arm}_joint{k}") for k in range(1, 7)]
    except ValueError:
        raise TaskError(f"the robot has no joints {arm}_joint1..6 (joints: {names})") from None


def hover_ik(world: SimWorld, arm: str, target: F64, config: ExpertConfig = ExpertConfig()) -> F64:
    """Joints 1-6 (rad) of `arm` putting its grasp site at `target` with the tool pointing down (5, 6 = 0).

    Damped least squares on joints 1-4 over a private MjData (the live simulation is not touched), from a
    fixed seed, so the result depends only on the target. Raises TaskError if it does not converge or leaves
    the joint ranges."""
    model = world.model
    data = mujoco.MjData(model)
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"{arm}_grasp")
    if site < 0:
        raise SimModelError(f"no site named '{arm}_grasp'")
    indices = arm_joint_indices(world.joint_names, arm)
    bindings = [world.bindings[i] for i in indices]
    qadr = np.array([b.qpos for b in bindings[:4]])
    gear = np.array([b.gear for b in bindings[:4]])
    ranges = world.position_ranges()[indices[:4]]
    weight = config.ik_orientation_weight

    def residual(q: F64) -> F64:
        data.qpos[:] = 0.0
        data.qpos[qadr] = q / gear
        mujoco.mj_kinematics(model, data)
        z_axis = data.site_xmat[site].reshape(3, 3)[:, 2]
        return np.concatenate([data.site_xpos[site] - target, weight * (z_axis - (0.0, 0.0, 1.0))])

    q = np.array(IK_SEED, dtype=np.float64)
    err = residual(q)
    for _ in range(config.ik_iterations):
        if float(np.linalg.norm(err)) < config.ik_tolerance:
            break
        jac = np.empty((6, 4))
        for k in range(4):
            dq = q.copy()
            dq[k] += 1e-6
            jac[:, k] = (residual(dq) - err) / 1e-6
        q = q - np.linalg.solve(jac.T @ jac + 1e-4 * np.eye(4), jac.T @ err)
        err = residual(q)
    if float(np.linalg.norm(err)) > 1e-3:
        raise TaskError(f"{arm} arm: no IK solution for the grasp site at {np.round(target, 3).tolist()} "
                        f"(residual {float(np.linalg.norm(err)):.2g})")
    outside = [f"{arm}_{IK_JOINTS[k]}" for k in range(4) if not ranges[k, 0] <= q[k] <= ranges[k, 1]]
    if outside:
        raise TaskError(f"{arm} arm: the IK solution for {np.round(target, 3).tolist()} leaves the range of "
                        f"{outside}")
    return np.concatenate([q, [0.0, 0.0]])


def hover_goal(world: SimWorld, task: HoverTask, start: F64, config: ExpertConfig = ExpertConfig()) -> F64:
    """The full robot joint vector at the goal: `start` with the task arm's joints 1-6 at the hover pose."""
    cube = np.asarray(world.object_pose(task.target).position, dtype=np.float64)
    joints = hover_ik(world, task.arm, cube + (0.0, 0.0, config.hover_height), config)
    goal = np.array(start, dtype=np.float64)
    goal[arm_joint_indices(world.joint_names, task.arm)] = joints
    return goal


def min_jerk(start: F64, end: F64, s: F64) -> F64:
    """Minimum-jerk interpolation start -> end at phases s in [0, 1] ([N] -> [N, D])."""
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)[:, None]
    blend = 10 * s**3 - 15 * s**4 + 6 * s**5
    return np.asarray(start + (end - start) * blend, dtype=np.float64)


def move_duration(start: F64, goal: F64, config: ExpertConfig = ExpertConfig()) -> float:
    """Seconds for the min-jerk move so no joint exceeds `max_joint_speed` (peak = 1.875 x mean speed)."""
    distance = float(np.max(np.abs(goal - start)))
    return max(config.min_move_s, 1.875 * distance / config.max_joint_speed)


def expert_plan(start: F64, goal: F64, fps: float, frames: int, config: ExpertConfig = ExpertConfig()) -> F64:
    """[frames, D] joint targets at t = i / fps: min-jerk from start to goal, then hold the goal."""
    duration = move_duration(start, goal, config)
    t = np.arange(frames, dtype=np.float64) / fps
    return min_jerk(np.asarray(start, np.float64), np.asarray(goal, np.float64), t / duration)


def expert_frames(start: F64, goal: F64, fps: float, hold_s: float, config: ExpertConfig = ExpertConfig()) -> int:
    """Frames of a demo: the move, then `hold_s` at the goal."""
    return int(math.ceil((move_duration(start, goal, config) + hold_s) * fps))
