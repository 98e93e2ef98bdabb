"""Small random Pi0.5 models and inputs for tests (real model code, random weights)."""

from __future__ import annotations

import torch

from policy_server.checkpoint.writer import randomize
from policy_server.model.config import Pi05Config, preset
from policy_server.model.pi05 import ModelInputs, Pi05Model


def random_model(name: str = "dummy", seed: int = 0, **changes: object) -> Pi05Model:
    cfg = preset(name).with_(**changes) if changes else preset(name)
    return randomize(Pi05Model(cfg), seed).eval()


def random_inputs(cfg: Pi05Config, batch: int = 2, seed: int = 1, prompt_lengths: tuple[int, ...] = (9, 17),
                  present: tuple[bool, ...] | None = None) -> ModelInputs:
    gen = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images = [torch.rand(batch, 3, s, s, generator=gen) * 2 - 1 for _ in cfg.image_keys]
    present = present or (True,) * len(cfg.image_keys)
    masks = [torch.full((batch,), p, dtype=torch.bool) for p in present]
    tokens = torch.randint(1, cfg.vocab_size, (batch, cfg.max_token_len), generator=gen)
    token_masks = torch.zeros(batch, cfg.max_token_len, dtype=torch.bool)
    for b in range(batch):
        token_masks[b, : prompt_lengths[b % len(prompt_lengths)]] = True
    tokens[~token_masks] = 0
    tokens[:, 0] = 2  # BOS
    return ModelInputs(images, masks, tokens, token_masks)
