"""Live comparison: each chunk the policy sends during a run, against the nearest demonstration's ground truth.

For every received chunk we look up the dataset frame that best matches the live observation -- same task,
nearest joint state (each joint scaled by its range in the dataset) with a weak preference for the same elapsed
time in the episode -- and compare the live chunk with that frame's next H actions. A policy that drifts from its
demonstrations shows up here while the arm is moving, per joint, before anyone reads a report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from robodata.dataset import Dataset

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LiveComparison:
    episode: int
    frame: int
    state_distance: float  # scaled joint-space distance to the matched frame (1 = one range on every joint)
    chunk_l1: F64  # per joint mean |live - ground truth| over the compared rows, robot units
    first_error: F64  # per joint |live - ground truth| of the first action
    rows: int  # real (not padded) ground-truth rows compared


class LiveComparator:
    def __init__(self, dataset: Dataset, *, time_weight: float = 0.02, max_episodes: int = 200) -> None:
        self.dataset = dataset
        self.fps = dataset.info.fps
        self.time_weight = time_weight
        states, times, owners, tasks = [], [], [], []
        for index in dataset.episode_indices()[:max_episodes]:
            ep = dataset.episode(index)
            states.append(ep.states.astype(np.float64))
            times.append(np.arange(ep.length, dtype=np.float64) / self.fps)
            owners.append(np.stack([np.full(ep.length, index), np.arange(ep.length)], axis=1))
            tasks += [ep.task] * ep.length
        self._states = np.concatenate(states)
        self._times = np.concatenate(times)
        self._owners = np.concatenate(owners)
        self._tasks = np.asarray(tasks, dtype=object)
        span = self._states.max(axis=0) - self._states.min(axis=0)
        self._scale = np.where(span > 1e-6, span, 1.0)

    def nearest(self, state: F64, task: str, elapsed_s: float) -> tuple[int, int, float]:
        """(episode, frame, scaled distance) of the best-matching dataset frame for this task (any task if none)."""
        mask = self._tasks == task
        if not mask.any():
            mask = np.ones(len(self._tasks), dtype=bool)
        diff = (self._states[mask] - state[None, :]) / self._scale
        dist = np.sqrt((diff**2).mean(axis=1))
        score = dist + self.time_weight * np.abs(self._times[mask] - elapsed_s)
        k = int(np.argmin(score))
        episode, frame = (int(v) for v in self._owners[mask][k])
        return episode, frame, float(dist[k])

    def compare(self, state: F64, chunk: F64, task: str, elapsed_s: float) -> LiveComparison:
        episode, frame, distance = self.nearest(np.asarray(state, np.float64), task, elapsed_s)
        ep = self.dataset.episode(episode)
        truth, rows = ep.action_chunk(frame, len(chunk))
        err = np.abs(np.asarray(chunk, np.float64)[:rows] - truth[:rows].astype(np.float64))
        return LiveComparison(episode, frame, distance, err.mean(axis=0), err[0], rows)
