"""Pi0.5 model inputs from an observation: the one transform behind the server, training and the local tools.

Why one class: if training prepared its inputs with its own copy of the server's steps, a change on one side
(slot order, pixel scaling, prompt format, state bins) would silently train a model on inputs the server never
sends. The server (`Pi05Policy`), training (`training.data`) and the checkpoint-loaded-here source of the oracle
and the doctor (`replay.oracle.sources.LocalModelSource`, through `Pi05Policy`) all call this class, so the
served and trained inputs are equal by construction.

Per observation (state in robot units, camera images uint8 [H, W, 3] by robot camera name, prompt):
- images: each robot camera goes to its model slot (policy_config.json "cameras"); a frame at another size than
  the model's is fitted with the policy's "image_resize" method as its trainer fitted it (`model_frame`: uint8
  levels for the PIL methods, LeRobot's unrounded float result for "resize_with_pad_torch", both
  `policy_norm.image_fit.fit_image_unit` once scaled); pixels are float32 `x / 255 * 2 - 1` (uint8) or
  `x * 2 - 1` (float in [0, 1]), channels first; a slot with no camera gets zeros, masked out;
- state: `NormalizationPipeline.prepare` (select, normalize, 256 prompt bins, pad), with its report;
- prompt: the observation's (or the policy's default prompt) with the state bins, tokenized to the model's
  max_token_len and checked against the model's vocabulary.

Batches: `assemble` turns per-slot frames [B, S, S, 3] (`model_frame`'s) and tokens [B, L] into `ModelInputs`; a
single observation (`__call__`) ends in the same `assemble` with B = 1, and training calls it per batch on frames
and tokens it prepared once with `model_frame` and `encode_prompt`. `collate` stacks single-observation inputs
into one batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from policy_norm.image_fit import check_resize_method, fit_image, fit_image_unit, result_is_uint8
from policy_norm.pipeline import NormalizationPipeline
from policy_norm.report import NormReport
from policy_server.model.config import Pi05Config
from policy_server.model.pi05 import ModelInputs
from policy_server.policy_config import Pi05PolicyConfig
from policy_server.tokenizer import PromptTokenizer

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Bools = npt.NDArray[np.bool_]


class Observation(Protocol):
    """What the transform reads from an observation (the server's `ObservationInput` is one)."""

    @property
    def images(self) -> Mapping[str, U8]: ...

    @property
    def state(self) -> F32: ...

    @property
    def prompt(self) -> str: ...


@dataclass(frozen=True)
class EncodedPrompt:
    """The state side of one observation: prompt tokens with the state bins, and the normalized state.

    tokens / token_mask: int64 / bool [max_token_len]; truncated_tokens: tokens dropped to fit (0 unless the
    prompt was too long). state: normalized and zero-padded, float32 [model_state_dim]; state_bins: int64
    [state_dim]; robot_state: the selected state in robot units, float32 [state_dim] (what the output steps and
    action encoding take); report: the normalization steps' report of this state.
    """

    tokens: I64
    token_mask: Bools
    num_tokens: int
    truncated_tokens: int
    state: F32
    state_bins: I64
    robot_state: F32
    report: NormReport


@dataclass(frozen=True)
class Pi05Sample:
    """One observation, transformed: the model's inputs (a batch of one, on the transform's device) and the
    encoded prompt they were built from."""

    inputs: ModelInputs
    prompt: EncodedPrompt

    @property
    def robot_state(self) -> F32:
        return self.prompt.robot_state


def model_pixels(frames: torch.Tensor) -> torch.Tensor:
    """RGB [B, H, W, 3] -> float32 [B, 3, H, W] in [-1, 1], channels first: Pi0.5's `x / 255 * 2 - 1` for uint8
    frames, `x * 2 - 1` for float32 frames already in [0, 1] (the torch fitting method's unrounded result)."""
    if frames.dtype not in (torch.uint8, torch.float32) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"camera frames: expected uint8 or float32 [B, H, W, 3], got {frames.dtype} "
                         f"{list(frames.shape)}")
    unit = frames.to(torch.float32) / 255.0 if frames.dtype == torch.uint8 else frames
    return (unit * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()


class Pi05InputTransform:
    """Observation -> `ModelInputs` for one Pi0.5 model; built once per policy (see the module docstring)."""

    def __init__(
        self,
        cfg: Pi05Config,
        cameras: Mapping[str, str],
        tokenizer: PromptTokenizer,
        pipeline: NormalizationPipeline,
        *,
        image_resize: str = "resize_with_pad",
        default_prompt: str | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        """`cameras` maps robot camera -> model slot (policy_config.json "cameras")."""
        unknown = sorted(slot for slot in cameras.values() if slot not in cfg.image_keys)
        if unknown:
            raise ValueError(f"cameras: model slots {unknown} do not exist; this model's slots are "
                             f"{list(cfg.image_keys)}")
        if len(set(cameras.values())) != len(cameras):
            raise ValueError(f"cameras: two robot cameras feed the same model slot: {dict(cameras)}")
        if pipeline.config.state_bins <= 0:
            raise ValueError(f"normalization.state_bins is {pipeline.config.state_bins}; the Pi0.5 prompt carries "
                             "the state as bins (256)")
        self.cfg = cfg
        self.cameras: dict[str, str] = dict(cameras)
        self.tokenizer = tokenizer
        self.pipeline = pipeline
        self.image_resize = check_resize_method(image_resize)
        self.default_prompt = default_prompt
        self.device = torch.device(device)
        by_slot = {slot: cam for cam, slot in self.cameras.items()}
        # Model slot -> robot camera (None: no camera feeds it), in the model's slot order.
        self.slot_cameras: tuple[tuple[str, str | None], ...] = tuple(
            (slot, by_slot.get(slot)) for slot in cfg.image_keys)

    @classmethod
    def from_policy_config(cls, cfg: Pi05Config, config: Pi05PolicyConfig, tokenizer: PromptTokenizer,
                           pipeline: NormalizationPipeline, device: torch.device | str = "cpu", *,
                           layout: str = "openpi") -> Pi05InputTransform:
        """The transform a checkpoint's policy_config.json describes (cameras, image fitting, default prompt).
        `layout`: the checkpoint's ("openpi" | "lerobot"), whose trainer's image fitting applies when the config
        names none (training here writes openpi checkpoints)."""
        image_resize, _ = config.resolve_image_resize(layout)
        return cls(cfg, config.cameras, tokenizer, pipeline, image_resize=image_resize,
                   default_prompt=config.default_prompt, device=device)

    @property
    def image_size(self) -> int:
        return self.cfg.vision.image_size

    # ---- pieces ---------------------------------------------------------------------------------------------

    @property
    def frame_dtype(self) -> type[np.uint8] | type[np.float32]:
        """The dtype of `model_frame`'s frames: uint8 when the method's result is whole levels, else float32."""
        return np.uint8 if result_is_uint8(self.image_resize) else np.float32

    @staticmethod
    def _check_frame(rgb: U8, camera: str) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ValueError(f"camera '{camera}': expected uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")

    def fit(self, rgb: U8, camera: str = "image") -> U8:
        """One camera frame uint8 [S, S, 3] at the model's size as a client sends it (`fit_image`; unchanged when
        it already is). For "resize_with_pad_torch" it is the model's frame rounded to uint8 levels."""
        self._check_frame(rgb, camera)
        s = self.image_size
        return fit_image(rgb, s, s, self.image_resize)

    def model_frame(self, rgb: U8, camera: str = "image") -> U8 | F32:
        """One camera frame [S, S, 3] as the model takes it, the same for serving and training: uint8 levels for
        the methods whose result is whole levels (`fit`; `model_pixels` scales them), float32 in [0, 1] for the
        others (`fit_image_unit`: LeRobot's unrounded float result, even for a frame already at the size, so one
        policy's frames share one dtype). Either way the pixels are `fit_image_unit(...) * 2 - 1`."""
        if self.frame_dtype == np.uint8:
            return self.fit(rgb, camera)
        self._check_frame(rgb, camera)
        s = self.image_size
        return fit_image_unit(rgb, s, s, self.image_resize)

    def encode_prompt(self, state: object, prompt: str, *, strict: bool = False) -> EncodedPrompt:
        """Normalize the state and tokenize the prompt with its bins. `strict` refuses a prompt that would be
        truncated (training) instead of cutting it (serving reports the cut). Raises NormalizationError when
        the pipeline refuses the state."""
        prepared, report = self.pipeline.prepare(state)
        assert prepared.state_bins is not None  # state_bins > 0, checked at construction
        text = prompt.strip() or (self.default_prompt or "")
        cfg = self.cfg
        tokenized = self.tokenizer.tokenize_pi05(text, prepared.state_bins, max_len=cfg.max_token_len, strict=strict)
        self.tokenizer.check_ids_in_vocab(tokenized.tokens, cfg.vocab_size)
        return EncodedPrompt(
            tokens=tokenized.tokens, token_mask=tokenized.mask, num_tokens=tokenized.num_tokens,
            truncated_tokens=tokenized.truncated_tokens, state=prepared.state, state_bins=prepared.state_bins,
            robot_state=prepared.robot_state, report=report,
        )

    def assemble(self, frames: Sequence[torch.Tensor | None], tokens: torch.Tensor,
                 token_masks: torch.Tensor) -> ModelInputs:
        """A batch of model inputs on the transform's device. `frames`: per model slot (the model's order),
        `model_frame`'s frames [B, S, S, 3] (uint8, or float32 in [0, 1]) or None for a slot no camera feeds
        (zeros, masked); tokens / token_masks [B, L]."""
        if len(frames) != len(self.cfg.image_keys):
            raise ValueError(f"frames: expected one entry per model slot {list(self.cfg.image_keys)}, "
                             f"got {len(frames)}")
        b, s = int(tokens.shape[0]), self.image_size
        images, masks = [], []
        for slot, batch in zip(self.cfg.image_keys, frames, strict=True):
            if batch is None:
                images.append(torch.zeros(b, 3, s, s, dtype=torch.float32, device=self.device))
                masks.append(torch.zeros(b, dtype=torch.bool, device=self.device))
                continue
            if tuple(batch.shape) != (b, s, s, 3):
                raise ValueError(f"image slot '{slot}': expected uint8 or float32 [{b}, {s}, {s}, 3], got "
                                 f"{batch.dtype} {list(batch.shape)}")
            images.append(model_pixels(batch).to(self.device))
            masks.append(torch.ones(b, dtype=torch.bool, device=self.device))
        return ModelInputs(images=images, image_masks=masks, tokens=tokens.to(self.device),
                           token_masks=token_masks.to(self.device))

    # ---- one observation, batches ---------------------------------------------------------------------------

    def __call__(self, obs: Observation, *, strict: bool = False) -> Pi05Sample:
        """One observation as a batch of one. Cameras the policy does not map are ignored; a mapped camera the
        observation lacks leaves its slot masked. Raises NormalizationError when the pipeline refuses the state."""
        prompt = self.encode_prompt(obs.state, obs.prompt, strict=strict)
        frames: list[torch.Tensor | None] = []
        for _slot, camera in self.slot_cameras:
            if camera is None or camera not in obs.images:
                frames.append(None)
                continue
            # np.array: a writable copy (wire buffers are read-only, torch wants writable memory).
            frames.append(torch.from_numpy(np.array(self.model_frame(obs.images[camera], camera)))[None])
        inputs = self.assemble(frames, torch.from_numpy(prompt.tokens)[None], torch.from_numpy(prompt.token_mask)[None])
        return Pi05Sample(inputs=inputs, prompt=prompt)

    @staticmethod
    def collate(parts: Sequence[ModelInputs]) -> ModelInputs:
        """Inputs of several observations as one batch, in order (each part's batch rows stay together)."""
        if not parts:
            raise ValueError("collate: no inputs to batch")
        return ModelInputs(
            images=[torch.cat(slot) for slot in zip(*(p.images for p in parts), strict=True)],
            image_masks=[torch.cat(slot) for slot in zip(*(p.image_masks for p in parts), strict=True)],
            tokens=torch.cat([p.tokens for p in parts]),
            token_masks=torch.cat([p.token_masks for p in parts]),
        )


def inputs_difference(a: ModelInputs, b: ModelInputs) -> str | None:
    """None when two model inputs are equal tensor for tensor (values, dtypes, shapes); otherwise the first field
    that differs. The parity check between two paths that must feed the model the same thing."""
    if len(a.images) != len(b.images) or len(a.image_masks) != len(b.image_masks):
        return f"image slots: {len(a.images)} vs {len(b.images)}"
    pairs = [(f"images[{i}]", x, y) for i, (x, y) in enumerate(zip(a.images, b.images, strict=True))]
    pairs += [(f"image_masks[{i}]", x, y) for i, (x, y) in enumerate(zip(a.image_masks, b.image_masks, strict=True))]
    pairs += [("tokens", a.tokens, b.tokens), ("token_masks", a.token_masks, b.token_masks)]
    for name, x, y in pairs:
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"{name}: {x.dtype} {list(x.shape)} vs {y.dtype} {list(y.shape)}"
        if not torch.equal(x.cpu(), y.cpu()):
            diff = (x.cpu().double() - y.cpu().double()).abs().max()
            return f"{name}: values differ (max |difference| {float(diff):.3g})"
    return None
