"""Training samples from a LeRobot dataset, prepared by the server's own input transform.

The model inputs come from `policy_server.pi05_inputs.Pi05InputTransform`, the class `Pi05Policy` serves
requests with, so training sees exactly what serving sends. Per frame t of an episode with prompt p:
- state and tokens: `transform.encode_prompt(state[t], p, strict=True)` (the one normalization pipeline, the
  256-bin discretized state in the prompt), refused when the prompt would be truncated;
- actions: the chunk action[t : t + H] (the last action repeated past the episode end, as the stats tool and
  `Episode.action_chunk` do) through `pipeline.encode_actions(chunk, state[t])` (gripper convention, absolute ->
  delta on the masked dims, normalize, zero-pad) -- the inverse of the server's `pipeline.finish`;
- images: the dataset frames as the model takes them (`transform.model_frame`: uint8 at the model size, a no-op
  for demos the recorder already fitted; float32 in [0, 1] for a policy fitting with LeRobot's torch method, whose
  result lies between uint8 levels), turned into model pixels per batch by `transform.assemble`, as the server
  does per request.
Robot-unit chunks are kept too, for the reconstruction error in raw units.

Prompt-state jitter (training only): a recorded rest pose often sits exactly on a quantile of the state stats
(many frames at rest make it q01 or q99), so its normalized value is exactly -1 or +1 and its bin 0 or 255 in every
training prompt; in closed loop the servo leaves the arm a hair to either side and the trainers' bins give -1 on
half the joints: prompts the model never saw at rest. With `state_jitter_bins` > 0 each frame also gets a second
prompt built from its state plus Gaussian noise of that many bins (robot units, per joint), and the trainer picks
one of the two per sample. The served path is untouched: the jitter changes what training shows, never what a
served observation becomes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from policy_server.model.pi05 import ModelInputs
from policy_server.pi05_inputs import Pi05InputTransform
from robodata.dataset import Dataset, DatasetError
from robot_client.sim.layout import SceneLayout

# Objects whose place the auxiliary probe regresses from the image tokens (see training.train.ObjectProbe).
PROBE_OBJECTS = ("red_cube", "blue_cube")


@dataclass
class Samples:
    """Every frame of a set of episodes, ready to batch. N frames, camera slots in the model's order."""

    transform: Pi05InputTransform  # turns a batch of these frames and tokens into model inputs
    images: list[torch.Tensor]  # per model slot, [N, S, S, 3] of `transform.frame_dtype` (uint8 or float32 [0, 1])
    tokens: torch.Tensor  # int64 [N, L]
    token_masks: torch.Tensor  # bool [N, L]
    actions: torch.Tensor  # float32 [N, H, A] model space
    robot_actions: npt.NDArray[np.float32]  # [N, H, D] robot units (the recorded chunk)
    states: npt.NDArray[np.float32]  # [N, D] robot units
    episode: npt.NDArray[np.int64]  # [N] dataset episode index
    frame: npt.NDArray[np.int64]  # [N] frame index within the episode
    prompts: list[str]  # [N]
    # Training-only targets of the auxiliary probe: where the task objects are (`object_targets`), [N, 2 * K].
    object_targets: torch.Tensor | None = None
    # Training-only prompts built from jittered states (see the module docstring), [N, L] each; None = off.
    jittered_tokens: torch.Tensor | None = None
    jittered_token_masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def inputs(self, index: torch.Tensor | npt.NDArray[np.int64] | Sequence[int],
               jittered: torch.Tensor | None = None) -> ModelInputs:
        """Model inputs of frames `index`; `jittered` (bool per frame) takes those frames' jittered prompts."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        tokens, masks = self.tokens[idx], self.token_masks[idx]
        if jittered is not None:
            if self.jittered_tokens is None or self.jittered_token_masks is None:
                raise ValueError("jittered prompts requested but the samples were built without state jitter")
            pick = jittered.to(torch.bool)[:, None]
            tokens = torch.where(pick, self.jittered_tokens[idx], tokens)
            masks = torch.where(pick, self.jittered_token_masks[idx], masks)
        return self.transform.assemble([img[idx] for img in self.images], tokens, masks)


def object_targets(seed: int, objects: Sequence[str] = PROBE_OBJECTS) -> npt.NDArray[np.float32]:
    """Table positions (x, y) of `objects` in scene `seed`, each scaled from its spawn region to [-1, 1].

    The hover task's cubes never move, so the layout of the seed is where they are in every frame."""
    layout = SceneLayout()
    poses = layout.sample(seed)
    spawns = {s.name: s for s in layout.spawns}
    out = []
    for name in objects:
        spawn = spawns[name]
        for value, (lo, hi) in zip(poses[name].position[:2], (spawn.x_range, spawn.y_range), strict=True):
            out.append((value - (lo + hi) / 2) / ((hi - lo) / 2))
    return np.asarray(out, dtype=np.float32)


def _fitted(transform: Pi05InputTransform, frames_u8: npt.NDArray[np.uint8], camera: str) -> npt.NDArray[Any]:
    """An episode's frames [T, H, W, 3] of `camera` as the model takes them, [T, S, S, 3] of the transform's frame
    dtype (the array itself when they are uint8 frames already at the model's size)."""
    s = transform.image_size
    if frames_u8.shape[1:] == (s, s, 3) and transform.frame_dtype == np.uint8:
        return frames_u8
    return np.stack([transform.model_frame(frame, camera) for frame in frames_u8])


def state_bin_width(transform: Pi05InputTransform, state: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Robot units per prompt bin of each state dimension near `state` (one bin is 2/256 in model space); the
    normalization is affine per dimension in every mode, so a finite difference is exact up to rounding."""
    s = np.asarray(state, dtype=np.float64)[None]
    step = 1e-3
    normalize = transform.pipeline.normalize_states
    slope = ((normalize(s + step) - normalize(s)) / step)[0]
    with np.errstate(divide="ignore"):
        width = (2.0 / 256) / np.abs(slope)
    return np.where(np.isfinite(width), width, 0.0)


def build_samples(
    ds: Dataset,
    episodes: Sequence[int],
    transform: Pi05InputTransform,
    scene_seeds: Mapping[int, int] | None = None,
    state_jitter_bins: float = 0.0,
    seed: int = 0,
) -> Samples:
    """Samples of `episodes` of `ds`, prepared by `transform` (whose cameras map dataset camera -> model slot).
    With `scene_seeds` (dataset episode -> scene seed) the samples carry the auxiliary probe's object targets;
    with `state_jitter_bins` > 0 each frame also gets a jittered prompt (noise seeded by `seed`)."""
    if state_jitter_bins < 0:
        raise ValueError(f"state_jitter_bins must be >= 0, got {state_jitter_bins}")
    rng = np.random.default_rng(seed)
    jit_tokens: list[npt.NDArray[np.int64]] = []
    jit_masks: list[npt.NDArray[np.bool_]] = []
    cfg, pipeline = transform.cfg, transform.pipeline
    missing = [slot for slot, cam in transform.slot_cameras if cam is None]
    if missing:
        raise DatasetError(f"model slots {missing} have no camera in {transform.cameras}")
    h = cfg.action_horizon
    images: dict[str, list[npt.NDArray[Any]]] = {s: [] for s in cfg.image_keys}
    tokens, masks, actions, raw, states, ep_ids, frames, prompts, targets = [], [], [], [], [], [], [], [], []
    for index in episodes:
        ep = ds.episode(index)
        if scene_seeds is not None:
            targets.append(np.repeat(object_targets(scene_seeds[index])[None], len(ep), axis=0))
        for slot, cam in transform.slot_cameras:
            assert cam is not None
            images[slot].append(_fitted(transform, ep.images(cam), f"{cam} (episode {index})"))
        for t in range(len(ep)):
            encoded = transform.encode_prompt(ep.states[t], ep.task, strict=True)
            chunk, _ = ep.action_chunk(t, h)
            tokens.append(encoded.tokens)
            masks.append(encoded.token_mask)
            if state_jitter_bins > 0:
                state = np.asarray(ep.states[t], dtype=np.float64)
                noise = rng.standard_normal(state.shape) * state_jitter_bins * state_bin_width(transform, state)
                jittered = transform.encode_prompt((state + noise).astype(np.float32), ep.task, strict=True)
                jit_tokens.append(jittered.tokens)
                jit_masks.append(jittered.token_mask)
            actions.append(pipeline.encode_actions(chunk, encoded.robot_state))
            raw.append(chunk)
            states.append(ep.states[t])
            ep_ids.append(index)
            frames.append(t)
            prompts.append(ep.task)
    if not tokens:
        raise DatasetError(f"{ds.info.path}: no frames in episodes {list(episodes)}")
    return Samples(
        transform=transform,
        images=[torch.from_numpy(np.concatenate(images[s])) for s in cfg.image_keys],
        tokens=torch.from_numpy(np.stack(tokens)),
        token_masks=torch.from_numpy(np.stack(masks)),
        actions=torch.from_numpy(np.stack(actions).astype(np.float32)),
        robot_actions=np.stack(raw).astype(np.float32),
        states=np.stack(states).astype(np.float32),
        episode=np.asarray(ep_ids, dtype=np.int64),
        frame=np.asarray(frames, dtype=np.int64),
        prompts=prompts,
        object_targets=torch.from_numpy(np.concatenate(targets)) if targets else None,
        jittered_tokens=torch.from_numpy(np.stack(jit_tokens)) if jit_tokens else None,
        jittered_token_masks=torch.from_numpy(np.stack(jit_masks)) if jit_masks else None,
    )
