"""The dataset policy: answers each observation with the dataset's own next H actions.

Why it exists: before evaluating a model, users replay ground truth through the exact deploy path (client,
wire, server, chunking, servo, safety). If the arm misbehaves with this policy, the problem is in the deploy
path or the rig, not in the model. It also serves as the oracle in `replay oracle` (zero error by design).

The observation's (episode_index, step_index) selects the frame. The chunk past the episode end is padded with
the last action and a `chunk_padded` warning says how many rows are padding. When the live state is far from
the dataset's state at that frame, a `state_far_from_dataset` warning names the joint: replaying ground truth
from the wrong pose is how arms fly.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from policy_norm.modes import NormMode
from policy_norm.spec import (
    CameraSpec,
    FeatureStatsSpec,
    NormStatsSpec,
    PolicySpec,
    PreprocessingSpec,
    gripper_mask,
)
from policy_server.policy import Policy, PolicyIdentity, PolicyOutput, PolicyWarning, canonical_digest
from policy_server.validate import ObservationInput
from protos import policy_pb2 as pb
from protos.codec import WireError
from robodata.dataset import Dataset, DatasetInfo, Episode
from robodata.open import open_dataset


@dataclass(frozen=True)
class DatasetPolicyConfig:
    dataset: Path
    action_horizon: int = 50
    # Max |live state - dataset state| (robot units) before a warning names the joint.
    state_warn_threshold: float = 0.25
    # Whether observations must carry every dataset camera (True mirrors a real model's needs).
    require_images: bool = True
    episode_cache: int = 4


def _stats_spec(info: DatasetInfo) -> NormStatsSpec | None:
    if not info.stats:
        return None

    def feature(key: str) -> FeatureStatsSpec:
        stats = info.stats.get(key, {}) if info.stats else {}
        picked = {
            name: tuple(float(v) for v in np.asarray(stats[name]).reshape(-1))
            for name in ("mean", "std", "q01", "q99", "min", "max")
            if name in stats
        }
        return FeatureStatsSpec(**picked)

    return NormStatsSpec(mode=NormMode.IDENTITY, state=feature("observation.state"), actions=feature("action"))


def _dataset_digest(info: DatasetInfo) -> str:
    """Identity of the dataset for PolicyMetadata.weight_hash (format, sizes, names; cheap to compute)."""
    h = hashlib.sha256()
    for part in (info.format, info.path.name, info.num_episodes, info.num_frames, info.fps,
                 info.state_names, info.action_names, info.tasks):
        h.update(repr(part).encode())
    return h.hexdigest()


class DatasetPolicy(Policy):
    concurrent_safe = True  # read-only lookups; the episode cache has its own lock

    def __init__(self, config: DatasetPolicyConfig, dataset: Dataset | None = None) -> None:
        self.config = config
        self.dataset = dataset if dataset is not None else open_dataset(config.dataset)
        info = self.dataset.info
        self._episodes: OrderedDict[int, Episode] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._valid_episodes = set(self.dataset.episode_indices())
        self.spec = PolicySpec(
            policy_type="dataset",
            model_id=f"dataset:{info.path.name}",
            weight_hash=_dataset_digest(info),
            action_horizon=config.action_horizon,
            state_names=info.state_names,
            action_names=info.action_names,
            cameras=tuple(
                CameraSpec(c.name, c.height, c.width, required=config.require_images) for c in info.cameras
            ),
            control_fps=info.fps,
            action_delta_mask=(False,) * info.action_dim,
            action_gripper_mask=gripper_mask(info.action_names),
            norm_stats=_stats_spec(info),
            preprocessing=PreprocessingSpec(image_resize="resize_with_pad"),
            known_prompts=info.tasks,
        )

    def identity(self) -> PolicyIdentity:
        """The dataset's fingerprint stands for the weights; the serving config is what shapes the answers
        (chunk length, the state check, required cameras)."""
        cfg = self.config
        served = {"action_horizon": cfg.action_horizon, "state_warn_threshold": cfg.state_warn_threshold,
                  "require_images": cfg.require_images}
        return replace(super().identity(), policy_config_digest=canonical_digest(served))

    def _episode(self, index: int) -> Episode:
        with self._cache_lock:
            ep = self._episodes.get(index)
            if ep is None:
                ep = self.dataset.episode(index)
                self._episodes[index] = ep
                while len(self._episodes) > self.config.episode_cache:
                    self._episodes.popitem(last=False)
            else:
                self._episodes.move_to_end(index)
            return ep

    def check(self, obs: ObservationInput) -> None:
        if obs.episode_index not in self._valid_episodes:
            raise WireError(
                "observation.episode_index",
                f"episode {obs.episode_index} is not in the dataset; valid: "
                f"{sorted(self._valid_episodes)[:20]}{' ...' if len(self._valid_episodes) > 20 else ''}",
            )
        length = self._episode(obs.episode_index).length
        if obs.step_index >= length:
            raise WireError(
                "observation.step_index",
                f"episode {obs.episode_index} has {length} steps; expected 0..{length - 1}, got {obs.step_index}",
            )

    def infer(self, obs: ObservationInput, noise_seed: int | None = None) -> PolicyOutput:
        t0 = time.perf_counter()
        ep = self._episode(obs.episode_index)
        chunk, valid = ep.action_chunk(obs.step_index, self.spec.action_horizon)
        warnings: list[PolicyWarning] = []
        if valid < self.spec.action_horizon:
            warnings.append(PolicyWarning(
                "chunk_padded", "actions",
                f"episode {ep.index} ends {valid} steps after step {obs.step_index}; the last "
                f"{self.spec.action_horizon - valid} rows repeat its final action",
            ))
        diff = np.abs(obs.state - ep.states[obs.step_index])
        worst = int(np.argmax(diff))
        if diff[worst] > self.config.state_warn_threshold:
            warnings.append(PolicyWarning(
                "state_far_from_dataset", f"observation.state[{worst}] ({self.spec.state_names[worst]})",
                f"live state differs from the dataset's state at episode {ep.index} step {obs.step_index} by "
                f"{diff[worst]:.3f} (threshold {self.config.state_warn_threshold}); "
                f"{int((diff > self.config.state_warn_threshold).sum())} dims over",
            ))
        report = pb.NormReport(mode=NormMode.IDENTITY, steps=["dataset_lookup"])
        return PolicyOutput(
            actions=chunk.astype(np.float32, copy=False),
            norm_report=report,
            warnings=warnings,
            model_ms=(time.perf_counter() - t0) * 1e3,
        )
