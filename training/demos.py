"""Scripted demonstrations of the hover tasks in the MuJoCo station, written as a LeRobot v3.0 dataset.

    python -m training.demos --out .cache/demos/hover [--scenes 300] [--workers 2]

Each episode: reset the scene with its seed (SimRobot.reset, home pose), plan the expert move
(robot_client.sim.tasks: IK above the cube, min-jerk in joint space, hold), execute it through the same
jerk-limited servo loop the runner uses (ServoLoop at the robot's servo rate, targets interpolated linearly
between policy steps with velocity feed-forward, like the chunk schedulers), and record at the policy rate:
state = measured joints at the frame instant, action = the plan's joint target for that instant (what a chunk's
action means to the runner), and the camera frame rendered at the rig's size (240x320) and fitted to the
model's input size with the client's own `fit_image` (resize_with_pad), so training sees the pixels serving
will see. Images are stored as PNG (lossless), not video. The task check of every episode is recorded in
`demos.json`; failed expert episodes are left out of the dataset (and counted).

Scene seeds start at DEMO_SEED_BASE (100000), far from the seeds `robot_client run --seed N` uses by default, so
closed-loop runs from small seeds are on scenes the policy never saw. Every scene is recorded once per task,
so each prompt is seen on the same layouts.

Deterministic: the same DemoConfig gives the same numbers (lockstep simulation, no wall-clock dependence).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from robot_client.sim import _gl  # noqa: F401  (headless GL before mujoco loads)

DEMO_SEED_BASE = 100_000
DEFAULT_CACHE = Path(".cache") / "demos"
MANIFEST = "demos.json"


@dataclass(frozen=True)
class DemoConfig:
    scenes: int = 300
    seed_base: int = DEMO_SEED_BASE
    fps: int = 10
    hold_s: float = 1.5
    camera: str = "top"
    image_size: int = 96  # square model input (the vision tower's image_size)
    render_height: int = 240  # the rig's camera size (robot_client.rig.build_sim_rig default)
    render_width: int = 320
    prompts: tuple[str, ...] = field(default_factory=lambda: tuple(t.prompt for t in _tasks()))
    robot_config: str = "bimanual_yam"

    @property
    def episodes(self) -> int:
        return self.scenes * len(self.prompts)

    def key(self) -> str:
        """Short digest of everything that changes the recorded data (the cache folder name)."""
        raw = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:12]

    def episode_spec(self, i: int) -> tuple[int, str]:
        """(scene seed, prompt) of episode i: scene i // n_prompts, every prompt on every scene."""
        return self.seed_base + i // len(self.prompts), self.prompts[i % len(self.prompts)]


def _tasks() -> tuple[Any, ...]:
    from robot_client.sim.tasks import HOVER_TASKS

    return HOVER_TASKS


@dataclass
class RecordedEpisode:
    index: int
    seed: int
    prompt: str
    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.float32]
    images: npt.NDArray[np.uint8]  # [T, S, S, 3]
    outcome: str
    success: bool


class DemoRecorder:
    """One simulated station that records expert episodes (use from one thread: it owns a GL context)."""

    def __init__(self, config: DemoConfig) -> None:
        from robot_client.config import load_robot_config
        from robot_client.sim.cameras import SimCameraConfig, SimCameras
        from robot_client.sim.robot import SimConfig, SimRobot
        from robot_client.sim.tasks import TaskMonitor

        self.config = config
        self.robot_config = load_robot_config(config.robot_config)
        self.robot = SimRobot(self.robot_config, SimConfig(seed=config.seed_base))
        self.robot.connect()
        self.cameras = SimCameras(self.robot.world, SimCameraConfig(
            names=(config.camera,), height=config.render_height, width=config.render_width))
        self.monitor = TaskMonitor(self.robot.world)

    def close(self) -> None:
        self.cameras.close()
        self.robot.close()

    def image(self) -> npt.NDArray[np.uint8]:
        from policy_norm.image_fit import fit_image

        rgb = self.cameras.capture(self.config.camera).rgb
        s = self.config.image_size
        return np.ascontiguousarray(fit_image(rgb, s, s, "resize_with_pad"))

    def record(self, index: int) -> RecordedEpisode:
        from robot_client.chunking import Timeline
        from robot_client.control_loop import ServoLoop
        from robot_client.servo import JerkLimitedServo, ServoLimits
        from robot_client.sim.clock import SimClock
        from robot_client.sim.tasks import expert_frames, expert_plan, find_task, hover_goal

        cfg = self.config
        seed, prompt = cfg.episode_spec(index)
        task = find_task(prompt)
        if task is None:
            raise ValueError(f"demo prompt '{prompt}' names no task of robot_client.sim.tasks")
        robot = self.robot
        robot.reset(seed=seed)
        robot.enable()
        self.monitor.start()
        rc = self.robot_config
        servo = JerkLimitedServo(ServoLimits.from_config(rc), 1.0 / rc.servo_hz)
        loop = ServoLoop(robot, servo, SimClock(robot, pace=None), deadline_s=rc.safety.server_deadline_s)
        start_state = loop.start()
        start = start_state.positions.astype(np.float64)
        goal = hover_goal(robot.world, task, start)
        frames = expert_frames(start, goal, cfg.fps, cfg.hold_s)
        plan = expert_plan(start, goal, cfg.fps, frames)
        t0 = robot.now()
        timeline = Timeline(t0 + np.arange(frames) / cfg.fps, plan)
        ticks = int(round(rc.servo_hz / cfg.fps))
        if abs(ticks * cfg.fps - rc.servo_hz) > 1e-9:
            raise ValueError(f"the servo rate {rc.servo_hz} Hz must be a multiple of the demo rate {cfg.fps} Hz")
        states, images = [], []
        for _ in range(frames):
            states.append(robot.read_state().positions.copy())
            images.append(self.image())
            for _ in range(ticks):
                loop.tick(timeline.at, lambda t: 0.0, timeline.velocity_at)
        outcome = self.monitor.outcome(prompt)
        assert outcome is not None
        return RecordedEpisode(index, seed, prompt, np.asarray(states, np.float32), plan.astype(np.float32),
                               np.stack(images), outcome.describe(), outcome.success)


def _record_range(config: DemoConfig, indices: Sequence[int]) -> list[RecordedEpisode]:
    recorder = DemoRecorder(config)
    try:
        return [recorder.record(i) for i in indices]
    finally:
        recorder.close()


def record_demos(config: DemoConfig, workers: int = 1) -> list[RecordedEpisode]:
    """All episodes of `config`, in index order (workers > 1 records interleaved slices in processes)."""
    indices = list(range(config.episodes))
    if workers <= 1:
        return _record_range(config, indices)
    slices = [indices[w::workers] for w in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_record_range, [config] * workers, slices))
    return sorted((ep for part in parts for ep in part), key=lambda e: e.index)


def write_demos(out: Path, config: DemoConfig, episodes: Sequence[RecordedEpisode]) -> Path:
    """Write the successful episodes as a LeRobot v3.0 dataset (PNG images) plus the manifest."""
    from robodata.lerobot_writer import CameraFeature, EpisodeData, LeRobotWriter, LeRobotWriterConfig
    from robot_client.config import load_robot_config

    names = load_robot_config(config.robot_config).joint_names
    writer_config = LeRobotWriterConfig(
        fps=config.fps, state_names=names, action_names=names,
        cameras=(CameraFeature(config.camera, config.image_size, config.image_size),), robot_type="bi_yam",
        camera_storage="image", overwrite=True,
    )
    kept = [ep for ep in episodes if ep.success]
    with LeRobotWriter(out, writer_config) as writer:
        for ep in kept:
            writer.add_episode(EpisodeData(task=ep.prompt, states=ep.states, actions=ep.actions,
                                           images={config.camera: ep.images}))
    manifest = {
        "config": asdict(config),
        "key": config.key(),
        "episodes": [{"index": ep.index, "seed": ep.seed, "prompt": ep.prompt, "frames": len(ep.states),
                      "success": ep.success, "outcome": ep.outcome} for ep in episodes],
        "recorded": len(episodes),
        "expert_successes": len(kept),
        "dataset_episodes": len(kept),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def read_manifest(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / MANIFEST).read_text())
    return data


def ensure_demos(config: DemoConfig, cache: Path = DEFAULT_CACHE, workers: int = 1, log: Any = print) -> Path:
    """The dataset for `config` under `cache/<key>`, recorded now unless a complete one is there."""
    out = cache / f"hover-{config.key()}"
    if (out / MANIFEST).is_file() and (out / "meta" / "info.json").is_file():
        return out
    t0 = time.perf_counter()
    log(f"recording {config.episodes} expert demos ({config.scenes} scenes x {len(config.prompts)} prompts) "
        f"into {out} ...")
    episodes = record_demos(config, workers)
    write_demos(out, config, episodes)
    ok = sum(e.success for e in episodes)
    log(f"recorded {len(episodes)} demos in {time.perf_counter() - t0:.0f} s; expert success {ok}/{len(episodes)}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demos", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="dataset folder (default: the cache folder for the config)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--scenes", type=int, default=DemoConfig.scenes, help="scenes (each recorded per prompt)")
    parser.add_argument("--workers", type=int, default=1, help="recording processes")
    args = parser.parse_args(argv)
    config = DemoConfig(scenes=args.scenes)
    if args.out is None:
        path = ensure_demos(config, args.cache, args.workers)
    else:
        t0 = time.perf_counter()
        episodes = record_demos(config, args.workers)
        path = write_demos(args.out, config, episodes)
        print(f"recorded {len(episodes)} demos in {time.perf_counter() - t0:.0f} s")
    manifest = read_manifest(path)
    print(f"{path}: expert success {manifest['expert_successes']}/{manifest['recorded']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
