"""Golden Pi0.5 input references produced by LeRobot 0.6.1's own code (run in its own environment).

    tests/golden/lerobot/setup_oracle_env.sh /tmp/lerobot-oracle
    /tmp/lerobot-oracle/bin/python tests/golden/lerobot/make_golden.py tests/golden/lerobot

Writes:
- `pi05_images.npz`: camera frames (uint8 HxWx3, smooth synthetic scenes of odd and even sizes, shrinking and
  growing) and, for each, the image the LeRobot pi05 model feeds SigLIP: float frame / 255 ->
  `vla_utils.resize_with_pad_torch(img, 224, 224)` -> `* 2 - 1` (what `PI05Policy._preprocess_images` does).
- `pi05_state_prompts.json`: normalized states below, at and above [-1, 1] and the prompt text that
  `Pi05PrepareStateTokenizerProcessorStep` builds from them (the state bins as the model reads them).
- `pi05_config_fields.json`: the fields of LeRobot's `PI05Config` (what its config.json carries, with "type"), so
  the loader's config-key typo check is held against the real field list.
Nothing here imports the project: the numbers are LeRobot's alone.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.lerobot_types import TransitionKey
from lerobot.policies.common.vla_utils import resize_with_pad_torch
from lerobot.policies.pi05.configuration_pi05 import PI05Config
from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep
from lerobot.utils.constants import OBS_STATE

FRAME_SIZES = [(480, 640), (481, 641), (96, 128), (97, 131), (224, 224)]
TARGET = (224, 224)


def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth frame with edges (gradients, a disc, stripes): compresses well, exercises interpolation."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 127 + 120 * np.sin(x / (7 + 5 * rng.random())) * np.cos(y / (11 + 5 * rng.random()))
    g = 255 * x / max(width - 1, 1)
    b = 255 * ((x // 9 + y // 13) % 2)
    cy, cx, rad = height * rng.random(), width * rng.random(), min(height, width) / 4
    disc = (y - cy) ** 2 + (x - cx) ** 2 < rad ** 2
    r[disc], g[disc], b[disc] = 250, 30, 90
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).round().astype(np.uint8)


def lerobot_model_image(frame: np.ndarray) -> np.ndarray:
    img = torch.from_numpy(frame).to(torch.float32)[None] / 255.0  # [1, H, W, 3] in [0, 1], as the dataset loads it
    if tuple(img.shape[1:3]) != TARGET:
        img = resize_with_pad_torch(img, *TARGET)
    return (img * 2.0 - 1.0)[0].numpy().astype(np.float32)


def prompts(states: np.ndarray, tasks: list[str]) -> list[str]:
    step = Pi05PrepareStateTokenizerProcessorStep()
    transition = {TransitionKey.OBSERVATION: {OBS_STATE: torch.from_numpy(states)},
                  TransitionKey.COMPLEMENTARY_DATA: {"task": tasks}}
    return list(step(transition)[TransitionKey.COMPLEMENTARY_DATA]["task"])


def main(out: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, (h, w) in enumerate(FRAME_SIZES):
        frame = scene(h, w, seed=i)
        arrays[f"frame_{h}x{w}"] = frame
        arrays[f"model_{h}x{w}"] = lerobot_model_image(frame)
    np.savez_compressed(out / "pi05_images.npz", **arrays)

    edge = 1.0 - 2.0 / 256.0  # the lower edge of the top bin
    states = np.array([
        [-1.5, -1.0 - 1e-6, -1.0, -1.0 + 1e-6, 0.0, 0.5, edge - 1e-6, edge, 1.0, 1.2, 3.0, -0.0078125, 0.0078125,
         -0.9921875],
        [-0.25, -0.999, 0.999, 0.1, 0.2, 0.3, -0.3, -0.2, -0.1, 0.0, 1.0 - 1e-9, -1.0 + 1e-9, 0.25, -7.0],
    ], dtype=np.float32)
    tasks = ["pick up the cube", "fold_the towel\nneatly "]
    cases = [{"state": [float(v) for v in s], "task": t, "prompt": p}
             for s, t, p in zip(states, tasks, prompts(states, tasks), strict=True)]
    (out / "pi05_state_prompts.json").write_text(json.dumps(
        {"made_by": "lerobot 0.6.1 Pi05PrepareStateTokenizerProcessorStep", "cases": cases}, indent=1) + "\n")
    fields = sorted(f.name for f in dataclasses.fields(PI05Config))
    (out / "pi05_config_fields.json").write_text(json.dumps(
        {"made_by": "lerobot 0.6.1 dataclasses.fields(PI05Config)", "fields": fields}, indent=1) + "\n")
    print(f"wrote {out / 'pi05_images.npz'}, {out / 'pi05_state_prompts.json'} and {out / 'pi05_config_fields.json'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
