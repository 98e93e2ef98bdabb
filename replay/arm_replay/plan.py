"""What an arm replay plays: one episode's actions in the robot's joint order, time-stamped i / (fps * speed).

Why a plan checked up front: everything that can be wrong with the input (episode index, action names that are
not the robot's joints, non-finite actions, an impossible speed) is refused here, before a rig is built, so a
typo never gets as far as energizing a motor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from policy_norm.joint_names import NAME_MAP_FLAG, joint_name_mismatch
from robodata.dataset import Dataset
from robot_client.chunking import Timeline
from robot_client.config import RobotConfig

F64 = npt.NDArray[np.float64]
MAX_SPEED = 4.0


class ReplayError(ValueError):
    """Bad replay input or a refused replay; the message names the field, option or joint."""


def check_action_names(robot_names: Sequence[str], action_names: Sequence[str]) -> None:
    """The dataset's actions must name the robot's joints in the robot's order: a silent reorder would send
    joint3's action to joint4. Raises ReplayError with what differs and, when a renaming would fix it, the
    --name-map to pass (the one name comparison of policy_norm.joint_names)."""
    problem = joint_name_mismatch(robot_names, action_names, "action", other="dataset", hint_flag=NAME_MAP_FLAG)
    if problem is not None:
        raise ReplayError(f"dataset {problem}")


def check_speed(speed: float) -> float:
    if not (math.isfinite(speed) and 0 < speed <= MAX_SPEED):
        raise ReplayError(f"--speed must be in (0, {MAX_SPEED:g}], got {speed}")
    return float(speed)


@dataclass(frozen=True)
class ReplayPlan:
    """Actions [T, D] float64 in robot joint order, played at fps * speed frames per second."""

    dataset_name: str
    episode_index: int
    task: str
    joint_names: tuple[str, ...]
    actions: F64
    fps: float
    speed: float
    # The episode's first measured state in robot joint order (None when the states do not name the joints).
    first_state: F64 | None = None

    @property
    def frame_period_s(self) -> float:
        """Time between two actions as played (1 / (fps * speed))."""
        return 1.0 / (self.fps * self.speed)

    @property
    def times(self) -> F64:
        return np.arange(len(self.actions), dtype=np.float64) * self.frame_period_s

    @property
    def duration_s(self) -> float:
        """From the first action to the last one, as played."""
        return (len(self.actions) - 1) * self.frame_period_s

    @property
    def first_action(self) -> F64:
        return np.asarray(self.actions[0], dtype=np.float64)

    def timeline(self) -> Timeline:
        """Linear interpolation between actions, held at the last one (the policy runs' target timeline)."""
        return Timeline(self.times, self.actions)

    def start_pose(self) -> F64:
        """Where a simulation starts when asked to start at the episode: its first state, else its first action."""
        return self.first_action.copy() if self.first_state is None else self.first_state.copy()


def load_plan(dataset: Dataset, episode: int, config: RobotConfig, speed: float) -> ReplayPlan:
    """Read and check one episode for replay on the robot described by `config`."""
    info = dataset.info
    speed = check_speed(speed)
    indices = dataset.episode_indices()
    if episode not in indices:
        listing = f"{indices[0]}..{indices[-1]}" if indices else "none"
        raise ReplayError(f"--episode {episode}: no such episode in {info.path} (episodes: {listing}, "
                          f"{len(indices)} in all)")
    check_action_names(config.joint_names, info.action_names)
    ep = dataset.episode(episode)
    actions = np.asarray(ep.actions, dtype=np.float64)
    if len(actions) < 2:
        raise ReplayError(f"episode {episode}: {len(actions)} action(s); a replay needs at least 2")
    bad = np.argwhere(~np.isfinite(actions))
    if bad.size:
        frame, joint = (int(v) for v in bad[0])
        raise ReplayError(f"episode {episode}: action {info.action_names[joint]} is {actions[frame, joint]} at "
                          f"frame {frame} ({len(bad)} non-finite value(s))")
    first_state: F64 | None = None
    if set(config.joint_names) <= set(info.state_names):
        order = [info.state_names.index(n) for n in config.joint_names]
        state = np.asarray(ep.states[0, order], dtype=np.float64)
        first_state = state if np.all(np.isfinite(state)) else None
    return ReplayPlan(dataset_name=Path(info.path).resolve().name or "dataset", episode_index=episode, task=ep.task,
                      joint_names=config.joint_names, actions=actions, fps=info.fps, speed=speed,
                      first_state=first_state)
