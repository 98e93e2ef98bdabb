"""Generate the sample bimanual YAM dataset (LeRobot v3.0, AV1 video) shipped in `data/sample_yam`.

Why: every tool (dataset policy, replay, oracle, stats, doctor) needs a small, real, deterministic dataset to
run against without hardware or downloads. The numbers are scripted, not recorded, but shaped like the
real thing: 14-D joint vectors in radians inside the YAM joint limits, min-jerk motions between key poses,
a state that tracks the commanded action two frames late with sensor noise, and two cameras whose images
follow the arm motion.

    python -m replay.make_sample_dataset --out data/sample_yam

The same seed always gives the same numeric data (states, actions, timestamps, tasks); the video bytes
depend on the encoder build.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from robodata.dataset import ImageArray
from robodata.lerobot_writer import CameraFeature, EpisodeData, LeRobotWriter, LeRobotWriterConfig
from robodata.video import VideoEncoding
from robot_client.yam_limits import yam_joint_limits

ARM_JOINTS = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper")
JOINT_NAMES: tuple[str, ...] = tuple(f"{side}_{j}" for side in ("left", "right") for j in ARM_JOINTS)
# YAM joint limits (rad), the robot config's; the gripper is normalized 0 = closed .. 1 = open.
ARM_LOWER = np.array([yam_joint_limits()[j][0] for j in ARM_JOINTS])
ARM_UPPER = np.array([yam_joint_limits()[j][1] for j in ARM_JOINTS])
LOWER = np.concatenate([ARM_LOWER, ARM_LOWER])
UPPER = np.concatenate([ARM_UPPER, ARM_UPPER])
TASKS = (
    "pick up the red cube with the left arm",
    "hand the cube from the left arm to the right arm",
)
ROBOT_TYPE = "bi_yam"
CAMERAS = ("top", "left_wrist")

HOME = np.array([0.0, 0.9, 1.3, 0.0, 0.0, 0.0, 1.0])


@dataclass(frozen=True)
class SampleConfig:
    """Knobs of the sample; the defaults produce the committed dataset."""

    seed: int = 20240611
    fps: int = 30
    num_episodes: int = 4
    min_length: int = 120
    max_length: int = 150
    height: int = 240
    width: int = 320
    lag_frames: int = 2
    joint_noise_rad: float = 0.002
    gripper_noise: float = 0.003
    codec: str = "libsvtav1"
    crf: int = 30


@dataclass(frozen=True)
class SampleEpisode:
    task: str
    actions: npt.NDArray[np.float32]
    states: npt.NDArray[np.float32]


def min_jerk(start: npt.NDArray[np.float64], end: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    """n samples of the minimum-jerk path start -> end (zero velocity and acceleration at both ends)."""
    s = np.linspace(0.0, 1.0, n)[:, None]
    blend = 10 * s**3 - 15 * s**4 + 6 * s**5
    return np.asarray(start + (end - start) * blend, dtype=np.float64)


def _arm(j1: float, j2: float, j3: float, j4: float = 0.0, grip: float = 1.0) -> npt.NDArray[np.float64]:
    return np.array([j1, j2, j3, j4, 0.0, 0.0, grip])


def key_poses(task_id: int, rng: np.random.Generator) -> list[tuple[npt.NDArray[np.float64], float]]:
    """(14-D pose, relative duration of the move into it) for one episode, jittered per episode."""

    def jitter(arm: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        noise = rng.normal(0.0, 0.06, size=7)
        noise[6] = 0.0
        noise[4:6] *= 0.5
        return arm + noise

    left_home, right_home = jitter(HOME), jitter(HOME)
    above = jitter(_arm(0.45, 1.35, 1.05, -0.3))
    grasp = above.copy()
    grasp[1] += 0.35
    grasp[2] -= 0.2
    closed = grasp.copy()
    closed[6] = 0.05
    lift = closed.copy()
    lift[1] -= 0.5
    if task_id == 0:
        carry = lift.copy()
        carry[0] -= 0.25
        carry[5] += 0.4
        return [
            (np.concatenate([left_home, right_home]), 0.0),
            (np.concatenate([above, right_home]), 1.2),
            (np.concatenate([grasp, right_home]), 0.8),
            (np.concatenate([closed, right_home]), 0.4),
            (np.concatenate([lift, right_home]), 0.9),
            (np.concatenate([carry, right_home]), 0.9),
        ]
    # Both grippers meet above the table centre (yaw = facing + joint1 = +/-0.81 rad in the top view).
    center_left = jitter(_arm(0.46, 1.25, 1.0, 0.0, 0.05))
    center_right = jitter(_arm(-0.46, 1.25, 1.0, 0.0, 1.0))
    right_closed = center_right.copy()
    right_closed[6] = 0.05
    left_open = center_left.copy()
    left_open[6] = 1.0
    right_back = right_closed.copy()
    right_back[1] -= 0.4
    right_back[0] += 0.3
    return [
        (np.concatenate([left_home, right_home]), 0.0),
        (np.concatenate([grasp, right_home]), 1.0),
        (np.concatenate([closed, right_home]), 0.35),
        (np.concatenate([center_left, center_right]), 1.1),
        (np.concatenate([center_left, right_closed]), 0.35),
        (np.concatenate([left_open, right_closed]), 0.35),
        (np.concatenate([np.concatenate([left_home[:6], [1.0]]), right_back]), 0.9),
    ]


def scripted_actions(task_id: int, length: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A [length, 14] action trajectory of min-jerk segments through the episode's key poses."""
    poses = key_poses(task_id, rng)
    weights = np.array([d for _, d in poses[1:]])
    hold = max(6, length // 12)  # settle at the end
    steps = np.floor(weights / weights.sum() * (length - hold)).astype(int)
    steps[-1] += length - hold - int(steps.sum())
    parts = []
    for (p0, _), (p1, _), n in zip(poses[:-1], poses[1:], steps, strict=True):
        parts.append(min_jerk(p0, p1, n + 1)[1:])
    parts.append(np.repeat(poses[-1][0][None], hold, axis=0))
    actions = np.concatenate([poses[0][0][None], *parts])[:length]
    return np.asarray(np.clip(actions, LOWER, UPPER), dtype=np.float64)


def tracked_states(
    actions: npt.NDArray[np.float64], config: SampleConfig, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """The measured state: the command `lag_frames` late (first command held), plus sensor noise."""
    lag = config.lag_frames
    delayed = np.concatenate([np.repeat(actions[:1], lag, axis=0), actions[:-lag]]) if lag else actions.copy()
    noise = rng.normal(0.0, config.joint_noise_rad, size=actions.shape)
    grip = np.array([6, 13])
    noise[:, grip] = rng.normal(0.0, config.gripper_noise, size=(len(actions), 2))
    return np.clip(delayed + noise, LOWER, UPPER)


def generate_episodes(config: SampleConfig) -> list[SampleEpisode]:
    """The numeric content of the sample (no images); deterministic in `config.seed`."""
    rng = np.random.default_rng(config.seed)
    episodes = []
    for i in range(config.num_episodes):
        task_id = i % len(TASKS)
        length = int(rng.integers(config.min_length, config.max_length + 1))
        actions = scripted_actions(task_id, length, rng)
        states = tracked_states(actions, config, rng)
        episodes.append(SampleEpisode(TASKS[task_id], actions.astype(np.float32), states.astype(np.float32)))
    return episodes


# ---- rendering -----------------------------------------------------------------------------------------


def _end_effector(
    arm: npt.NDArray[np.float32], base: tuple[float, float], facing: float
) -> tuple[float, float]:
    """Top-down position (px, in a 320x240 frame) of a gripper from its joint angles (a toy planar model)."""
    reach = 30.0 + 45.0 * math.sin(float(arm[1])) + 35.0 * math.sin(float(arm[2]) * 0.5) + 8.0 * float(arm[3])
    yaw = facing + float(arm[0])
    return base[0] + reach * math.sin(yaw), base[1] - reach * math.cos(yaw)


_BASES = {"left": (95.0, 225.0), "right": (225.0, 225.0)}
_FACING = {"left": 0.35, "right": -0.35}


def _table(height: int, width: int, scale: int) -> ImageArray:
    """A wood-coloured table with a grid, `scale` times the camera frame (for the moving wrist view)."""
    h, w = height * scale, width * scale
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.empty((h, w, 3), dtype=np.float64)
    base[..., 0] = 150 + 20 * np.sin(xx / 37.0)
    base[..., 1] = 110 + 12 * np.sin(xx / 37.0 + yy / 91.0)
    base[..., 2] = 75
    img = base.astype(np.uint8)
    for x in range(0, w, 40):
        cv2.line(img, (x, 0), (x, h - 1), (120, 85, 55), 1)
    for y in range(0, h, 40):
        cv2.line(img, (0, y), (w - 1, y), (120, 85, 55), 1)
    return img


class SceneRenderer:
    """Draws both cameras from the measured joint state; the cube follows whichever gripper holds it."""

    def __init__(self, height: int, width: int) -> None:
        self.height = height
        self.width = width
        self._sx = width / 320.0
        self._sy = height / 240.0
        self._top_bg = _table(height, width, 1)
        self._wide = _table(height, width, 3)

    def _px(self, p: tuple[float, float]) -> tuple[int, int]:
        return int(round(p[0] * self._sx)), int(round(p[1] * self._sy))

    def render_episode(self, states: npt.NDArray[np.float32]) -> dict[str, ImageArray]:
        n = len(states)
        top = np.empty((n, self.height, self.width, 3), dtype=np.uint8)
        wrist = np.empty_like(top)
        ee0 = _end_effector(states[0, :7], _BASES["left"], _FACING["left"])
        cube = (ee0[0] + 25.0, ee0[1] - 30.0)
        # The cube rests where the left gripper closes first (found from the trajectory itself).
        closes = np.flatnonzero(states[:, 6] < 0.5)
        if closes.size:
            cube = _end_effector(states[closes[0], :7], _BASES["left"], _FACING["left"])
        holder: str | None = None
        for t in range(n):
            ees = {
                side: _end_effector(states[t, k * 7 : k * 7 + 7], _BASES[side], _FACING[side])
                for k, side in enumerate(("left", "right"))
            }
            grips = {"left": float(states[t, 6]), "right": float(states[t, 13])}
            near = {s: math.dist(ees[s], cube) < 20.0 for s in ees}
            if holder is None and grips["left"] < 0.5 and near["left"]:
                holder = "left"
            elif holder == "left" and grips["right"] < 0.5 and near["right"]:
                holder = "right"
            elif holder is not None and grips[holder] > 0.7:
                holder = None
            if holder is not None:
                cube = ees[holder]
            top[t] = self._top(states[t], ees, cube)
            wrist[t] = self._wrist(states[t], ees["left"], cube)
        return {"top": top, "left_wrist": wrist}

    def _top(
        self, state: npt.NDArray[np.float32], ees: dict[str, tuple[float, float]], cube: tuple[float, float]
    ) -> ImageArray:
        img = self._top_bg.copy()
        cx, cy = self._px(cube)
        half = int(9 * self._sx)
        cv2.rectangle(img, (cx - half, cy - half), (cx + half, cy + half), (200, 30, 30), -1)
        for k, side in enumerate(("left", "right")):
            arm = state[k * 7 : k * 7 + 7]
            base = _BASES[side]
            ee = ees[side]
            elbow = (
                0.55 * base[0] + 0.45 * ee[0] + 6 * math.sin(float(arm[2])),
                0.55 * base[1] + 0.45 * ee[1],
            )
            colour = (60, 60, 70) if side == "left" else (70, 70, 60)
            cv2.circle(img, self._px(base), int(14 * self._sx), (40, 40, 40), -1)
            cv2.line(img, self._px(base), self._px(elbow), colour, int(9 * self._sx))
            cv2.line(img, self._px(elbow), self._px(ee), colour, int(7 * self._sx))
            gap = 3.0 + 9.0 * float(arm[6])
            yaw = _FACING[side] + float(arm[0]) + float(arm[5])
            for sign in (-1, 1):
                jaw = (ee[0] + sign * gap * math.cos(yaw), ee[1] + sign * gap * math.sin(yaw))
                cv2.circle(img, self._px(jaw), int(4 * self._sx), (230, 230, 230), -1)
        return img

    def _wrist(
        self, state: npt.NDArray[np.float32], ee: tuple[float, float], cube: tuple[float, float]
    ) -> ImageArray:
        zoom = 2.0
        h, w = self.height, self.width
        ox, oy = self._wide.shape[1] / 2 - 160 * self._sx, self._wide.shape[0] / 2 - 120 * self._sy
        centre = (ox + ee[0] * self._sx, oy + ee[1] * self._sy)
        angle = math.degrees(float(state[5]) + float(state[0]))
        rot = cv2.getRotationMatrix2D(centre, angle, zoom)
        rot[0, 2] += w / 2 - centre[0]
        rot[1, 2] += h / 2 - centre[1]
        view = cv2.warpAffine(self._wide, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        cube_wide = np.array([[ox + cube[0] * self._sx, oy + cube[1] * self._sy, 1.0]])
        cx, cy = (rot @ cube_wide.T).ravel()
        half = int(9 * self._sx * zoom)
        cv2.rectangle(
            view, (int(cx) - half, int(cy) - half), (int(cx) + half, int(cy) + half), (200, 30, 30), -1
        )
        gap = int((6 + 40 * float(state[6])) * self._sx)
        jaw_w, jaw_h = int(18 * self._sx), int(55 * self._sy)
        for x0 in (w // 2 - gap - jaw_w, w // 2 + gap):
            cv2.rectangle(view, (x0, h - jaw_h), (x0 + jaw_w, h - 1), (90, 90, 95), -1)
        return np.asarray(view, dtype=np.uint8)


# ---- writing -------------------------------------------------------------------------------------------


CARD = """# sample_yam

A small synthetic LeRobot v3.0 dataset for the bimanual I2RT YAM setup ({robot_type}), generated by
`python -m replay.make_sample_dataset --out data/sample_yam` (seed {seed}).

- {episodes} episodes, {frames} frames at {fps} fps; tasks: {tasks}.
- `observation.state` / `action`: 14-D, {names} (joints in rad within the YAM limits, gripper 0 = closed .. 1 = open).
  The state follows the action {lag} frames late plus noise, like a tracking controller.
- Cameras `top` and `left_wrist`, {height}x{width}, {codec} video (yuv420p), drawn from the joint state.

The trajectories are scripted (min-jerk moves between key poses), not recorded on a robot.
"""


def write_sample(out: Path, config: SampleConfig) -> Path:
    """Generate and write the sample dataset to `out` (replacing a previous sample there)."""
    episodes = generate_episodes(config)
    renderer = SceneRenderer(config.height, config.width)
    writer_config = LeRobotWriterConfig(
        fps=config.fps,
        state_names=JOINT_NAMES,
        action_names=JOINT_NAMES,
        cameras=tuple(CameraFeature(cam, config.height, config.width) for cam in CAMERAS),
        robot_type=ROBOT_TYPE,
        video=VideoEncoding(codec=config.codec, crf=config.crf),
        overwrite=True,
    )
    with LeRobotWriter(out, writer_config) as writer:
        for ep in episodes:
            images = renderer.render_episode(ep.states)
            writer.add_episode(EpisodeData(task=ep.task, states=ep.states, actions=ep.actions, images=images))
    card = CARD.format(
        robot_type=ROBOT_TYPE,
        seed=config.seed,
        episodes=len(episodes),
        frames=sum(len(e.actions) for e in episodes),
        fps=config.fps,
        tasks="; ".join(f'"{t}"' for t in TASKS),
        names=", ".join(JOINT_NAMES),
        lag=config.lag_frames,
        height=config.height,
        width=config.width,
        codec=config.codec,
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replay.make_sample_dataset", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (a previous sample is replaced)"
    )
    parser.add_argument("--seed", type=int, default=SampleConfig.seed)
    parser.add_argument("--episodes", type=int, default=SampleConfig.num_episodes)
    parser.add_argument("--codec", default=SampleConfig.codec, help="libsvtav1 (default), libx264, mpeg4")
    args = parser.parse_args(argv)
    config = SampleConfig(seed=args.seed, num_episodes=args.episodes, codec=args.codec)
    path = write_sample(args.out, config)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(f"wrote {path} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
