"""Training samples from a LeRobot dataset, prepared exactly as `policy_server.pi05_policy` prepares a request.

Per frame t of an episode with prompt p:
- state: `pipeline.prepare(state[t])` (the one normalization module) gives the 256-bin discretized state;
- tokens: `tokenizer.tokenize_pi05(p, bins, max_len)`, refused when it would truncate;
- actions: the chunk action[t : t + H] (the last action repeated past the episode end, as the stats tool and
  `Episode.action_chunk` do) through `pipeline.encode_actions(chunk, state[t])` (gripper convention, absolute ->
  delta on the masked dims, normalize, zero-pad) -- the inverse of the server's `pipeline.finish`;
- images: the dataset frames, which the demo recorder already fitted to the model size with the client's
  `fit_image`; `model_pixels` scales them to [-1, 1] CHW float32 as the server's `_images` does.
Robot-unit chunks are kept too, for the reconstruction error in raw units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from policy_norm.pipeline import NormalizationPipeline
from policy_server.model.config import Pi05Config
from policy_server.model.pi05 import ModelInputs
from policy_server.tokenizer import PromptTokenizer
from robodata.dataset import Dataset, DatasetError
from robot_client.sim.layout import SceneLayout

# Objects whose place the auxiliary probe regresses from the image tokens (see training.train.ObjectProbe).
PROBE_OBJECTS = ("red_cube", "blue_cube")


def model_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [B, H, W, 3] -> float32 [B, 3, H, W] in [-1, 1] (the server's `/ 255 * 2 - 1`, channels first)."""
    return (images.to(torch.float32) / 255.0 * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()


@dataclass
class Samples:
    """Every frame of a set of episodes, ready to batch. N frames, camera slots in the model's order."""

    images: list[torch.Tensor]  # per model slot, uint8 [N, S, S, 3]
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

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def inputs(self, index: torch.Tensor | npt.NDArray[np.int64] | Sequence[int]) -> ModelInputs:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return ModelInputs(
            images=[model_pixels(img[idx]) for img in self.images],
            image_masks=[torch.ones(len(idx), dtype=torch.bool) for _ in self.images],
            tokens=self.tokens[idx],
            token_masks=self.token_masks[idx],
        )


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


def build_samples(
    ds: Dataset,
    episodes: Sequence[int],
    pipeline: NormalizationPipeline,
    tokenizer: PromptTokenizer,
    cfg: Pi05Config,
    camera_slots: dict[str, str],
    scene_seeds: Mapping[int, int] | None = None,
) -> Samples:
    """Samples of `episodes` of `ds`; `camera_slots` maps dataset camera -> model slot (policy_config cameras).
    With `scene_seeds` (dataset episode -> scene seed) the samples carry the auxiliary probe's object targets."""
    by_slot = {slot: cam for cam, slot in camera_slots.items()}
    missing = [s for s in cfg.image_keys if s not in by_slot]
    if missing:
        raise DatasetError(f"model slots {missing} have no camera in {camera_slots}")
    size = cfg.vision.image_size
    h = cfg.action_horizon
    images: dict[str, list[npt.NDArray[np.uint8]]] = {s: [] for s in cfg.image_keys}
    tokens, masks, actions, raw, states, ep_ids, frames, prompts, targets = [], [], [], [], [], [], [], [], []
    for index in episodes:
        ep = ds.episode(index)
        if scene_seeds is not None:
            targets.append(np.repeat(object_targets(scene_seeds[index])[None], len(ep), axis=0))
        for slot in cfg.image_keys:
            frames_u8 = ep.images(by_slot[slot])
            if frames_u8.shape[1:] != (size, size, 3):
                raise DatasetError(f"episode {index}: camera '{by_slot[slot]}' frames are {frames_u8.shape[1:3]}, "
                                   f"the model takes {size}x{size}; record the demos at the model size")
            images[slot].append(frames_u8)
        for t in range(len(ep)):
            prepared, _ = pipeline.prepare(ep.states[t])
            assert prepared.state_bins is not None
            tok = tokenizer.tokenize_pi05(ep.task, prepared.state_bins, max_len=cfg.max_token_len, strict=True)
            chunk, _ = ep.action_chunk(t, h)
            tokens.append(tok.tokens)
            masks.append(tok.mask)
            actions.append(pipeline.encode_actions(chunk, prepared.robot_state))
            raw.append(chunk)
            states.append(ep.states[t])
            ep_ids.append(index)
            frames.append(t)
            prompts.append(ep.task)
    if not tokens:
        raise DatasetError(f"{ds.info.path}: no frames in episodes {list(episodes)}")
    return Samples(
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
    )
