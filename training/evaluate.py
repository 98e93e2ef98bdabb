"""Closed-loop evaluation of a checkpoint in the simulated station, through the real serving path.

    python -m training.evaluate --checkpoint runs/demo_policy [--episodes 10] [--seed 0] [--seconds 6]

The checkpoint is served in this process by the real server (Pi05Policy behind PolicyServer on a loopback gRPC
port); the robot side is `robot_client run`'s: GrpcPolicy (streaming), build_sim_rig, run_episode with async
chunking, paced at real time so inference delays cost what they cost on the robot. Every prompt of
robot_client.sim.tasks that the checkpoint was trained on (or --prompt) runs on the same N scenes (seeds
seed .. seed + N - 1); the task check (robot_client.sim.tasks.TaskMonitor) decides success. The same numbers
come from `python -m robot_client run --robot sim --prompt "..." --seed S --episodes N --seconds 6` against
`python -m policy_server serve --checkpoint DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robot_client.backends import SIM_ACTUATIONS
from robot_client.sim import _gl  # noqa: F401  (headless GL before mujoco loads)

if TYPE_CHECKING:
    from robot_client.sim.robot import Actuation


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 10  # per prompt
    seed: int = 0
    seconds: float = 6.0
    prompts: tuple[str, ...] = ()  # () = every known task prompt
    chunking: str = "async"
    pace: float | None = 1.0
    threads: int = 2
    robot_config: str = "bimanual_yam"
    # How the simulated joints are driven (robot_client.backends.SIM_ACTUATIONS); the demo policy learnt "position".
    sim_actuation: Actuation = "position"


@dataclass
class EpisodeResult:
    prompt: str
    index: int
    seed: int
    success: bool
    outcome: str
    xy_error: float
    chunks: int
    delay_p50_ms: float
    holds: int
    wall_s: float


@dataclass
class EvalResult:
    episodes: list[EpisodeResult] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.success for e in self.episodes])) if self.episodes else 0.0

    def by_prompt(self) -> dict[str, float]:
        prompts = sorted({e.prompt for e in self.episodes})
        return {p: float(np.mean([e.success for e in self.episodes if e.prompt == p])) for p in prompts}

    def to_dict(self) -> dict[str, Any]:
        return {"success_rate": self.success_rate, "by_prompt": self.by_prompt(),
                "episodes": [vars(e) for e in self.episodes]}


def evaluate(checkpoint: Path, config: EvalConfig, log: Callable[[str], None] = print) -> EvalResult:
    import torch

    from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
    from policy_server.server import PolicyServer, ServerConfig
    from robot_client.chunking import ChunkingConfig
    from robot_client.config import load_robot_config
    from robot_client.policy_client import GrpcPolicy, GrpcPolicyConfig
    from robot_client.rig import build_sim_rig, check_names
    from robot_client.runner import EpisodeOptions, run_episode
    from robot_client.safety import FirstActionError
    from robot_client.sim.robot import SimConfig, SimRobot
    from robot_client.sim.tasks import HOVER_TASKS, TaskMonitor, find_task

    torch.set_num_threads(config.threads)
    prompts = config.prompts or tuple(t.prompt for t in HOVER_TASKS)
    unknown = [p for p in prompts if find_task(p) is None]
    if unknown:
        raise ValueError(f"prompts {unknown} name no task of robot_client.sim.tasks (success could not be checked)")
    robot_config = load_robot_config(config.robot_config)
    policy = Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device="cpu", dtype="float32"))
    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)).start()
    result = EvalResult()
    try:
        client = GrpcPolicy(GrpcPolicyConfig(target=f"127.0.0.1:{server.port}", streaming=True))
        try:
            md = client.metadata
            check_names(robot_config.joint_names, md.state_names, "state")
            check_names(robot_config.joint_names, md.action_names, "action")
            rig = build_sim_rig(robot_config, [c.name for c in md.cameras], seed=config.seed, pace=config.pace,
                                sim=SimConfig(actuation=config.sim_actuation))
            try:
                robot = rig.robot
                assert isinstance(robot, SimRobot)
                monitor = TaskMonitor(robot.world)
                robot.enable()
                chunking = ChunkingConfig(mode=config.chunking, fps=md.control_fps,
                                          refill_threshold=md.action_horizon // 2)
                for prompt in prompts:
                    options = EpisodeOptions(chunking=chunking, duration_s=config.seconds, prompt=prompt)
                    for i in range(config.episodes):
                        rig.reset_episode(i)
                        monitor.start()
                        try:
                            report = run_episode(rig, client, options, i)
                        except FirstActionError as exc:  # the guard refused to move: a failed episode
                            ep = EpisodeResult(prompt, i, config.seed + i, False, f"failure (first action: {exc})",
                                               float("nan"), 1, float("nan"), 0, 0.0)
                        else:
                            outcome = monitor.outcome(prompt)
                            assert outcome is not None
                            if report.success is not None and report.success != outcome.success:
                                raise RuntimeError("the rig's success check disagrees with the task monitor")
                            delays = np.asarray(report.worker.delays) * 1e3 if report.worker.delays else np.zeros(1)
                            ep = EpisodeResult(prompt, i, config.seed + i, outcome.success, outcome.describe(),
                                               outcome.xy_error, report.chunks, float(np.median(delays)),
                                               report.events.holds, report.wall_s)
                        result.episodes.append(ep)
                        log(f"[{prompt}] episode {i} (seed {ep.seed}): {ep.outcome}; {ep.chunks} chunks, delay "
                            f"p50 {ep.delay_p50_ms:.0f} ms, {ep.holds} holds")
            finally:
                rig.close()
        finally:
            client.close()
    finally:
        server.stop(grace=0.5)  # closes the policy too
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=EvalConfig.episodes, help="episodes per prompt")
    parser.add_argument("--seed", type=int, default=EvalConfig.seed, help="scene seed of episode 0")
    parser.add_argument("--seconds", type=float, default=EvalConfig.seconds, help="episode length")
    parser.add_argument("--prompt", action="append", default=[], help="prompt to evaluate (repeatable)")
    parser.add_argument("--chunking", default=EvalConfig.chunking)
    parser.add_argument("--pace", type=float, default=1.0, help="simulated seconds per wall second (0 = unpaced)")
    parser.add_argument("--threads", type=int, default=EvalConfig.threads, help="torch threads of the server")
    parser.add_argument("--out", type=Path, help="write the per-episode results as JSON")
    parser.add_argument("--sim-actuation", choices=SIM_ACTUATIONS, default=EvalConfig.sim_actuation,
                        help="how the simulated joints are driven: position servos (what the demos were recorded "
                             "with) or the motors' MIT law with gravity compensation")
    args = parser.parse_args(argv)
    config = EvalConfig(episodes=args.episodes, seed=args.seed, seconds=args.seconds, prompts=tuple(args.prompt),
                        chunking=args.chunking, pace=args.pace or None, threads=args.threads,
                        sim_actuation=args.sim_actuation)
    t0 = time.perf_counter()
    result = evaluate(args.checkpoint, config)
    summary = ", ".join(f"'{p}' {r:.0%}" for p, r in result.by_prompt().items())
    print(f"closed-loop success {result.success_rate:.0%} over {len(result.episodes)} episodes ({summary}); "
          f"{time.perf_counter() - t0:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
