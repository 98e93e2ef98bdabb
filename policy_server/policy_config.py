"""`policy_config.json`: how a checkpoint is served on this robot.

Neither public checkpoint layout says which robot camera feeds which model slot, which action dims are deltas,
or (for openpi) whether stats are quantile or z-score: openpi keeps that in training code. We keep it in one
explicit, validated file next to the weights (or passed with `--policy-config`):

    {
      "format": "yam-policy-config", "version": 1,
      "cameras": {"top": "base_0_rgb", "left_wrist": "left_wrist_0_rgb"},   # robot camera -> model slot
      "control_fps": 30,
      "image_resize": "resize_with_pad",     # optional: omitted, the checkpoint layout's trainer decides
      "default_prompt": null,              # used when an observation has no prompt (null = prompt required)
      "tokenizer": "assets/tokenizer.model",   # relative to the checkpoint; null = search the usual places
      "rtc": {"max_guidance": 5.0, "schedule": "linear"},
      "normalization": { ... policy_norm NormalizationConfig ... }
    }
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_norm.config import NormalizationConfig
from policy_norm.image_fit import RESIZE_METHODS
from policy_server.checkpoint.layouts import layout_image_resize

FORMAT = "yam-policy-config"
VERSION = 1
FILE_NAME = "policy_config.json"
RTC_SCHEDULES = ("linear", "exp", "zeros")


class PolicyConfigError(ValueError):
    """policy_config.json is missing or invalid; the message names the key and what was expected."""


@dataclass(frozen=True)
class RtcSettings:
    max_guidance: float = 5.0
    schedule: str = "linear"

    def __post_init__(self) -> None:
        if not self.max_guidance >= 0:
            raise PolicyConfigError(f"rtc.max_guidance must be >= 0, got {self.max_guidance}")
        if self.schedule not in RTC_SCHEDULES:
            raise PolicyConfigError(f"rtc.schedule must be one of {RTC_SCHEDULES}, got '{self.schedule}'")


@dataclass(frozen=True)
class Pi05PolicyConfig:
    cameras: Mapping[str, str]
    normalization: NormalizationConfig
    control_fps: float
    # How camera frames are fitted to the model's input (a policy_norm.image_fit method). None: as the trainer of
    # the checkpoint's layout did (see `resolve_image_resize`); named, it wins over the layout.
    image_resize: str | None = None
    default_prompt: str | None = None
    tokenizer: str | None = None
    rtc: RtcSettings = field(default_factory=RtcSettings)

    def __post_init__(self) -> None:
        if not self.cameras:
            raise PolicyConfigError("cameras: map at least one robot camera to a model image slot")
        slots = list(self.cameras.values())
        if len(set(slots)) != len(slots):
            raise PolicyConfigError(f"cameras: two robot cameras feed the same model slot: {dict(self.cameras)}")
        if not self.control_fps > 0:
            raise PolicyConfigError(f"control_fps must be > 0, got {self.control_fps}")
        if self.image_resize is not None and self.image_resize not in RESIZE_METHODS:
            raise PolicyConfigError(f"image_resize must be one of {list(RESIZE_METHODS)}, got '{self.image_resize}'")
        if self.image_resize == "none":
            # The model takes one fixed square size and the server and clients fit frames with the method named
            # here: "none" names no fit, so every frame of another size would be refused instead of prepared as in
            # training.
            fitting = [m for m in RESIZE_METHODS if m != "none"]
            raise PolicyConfigError(f"image_resize: 'none' cannot serve a model with a fixed image size; name how its "
                                    f"training fitted frames, one of {fitting}")

    def resolve_image_resize(self, layout: str) -> tuple[str, str]:
        """The fitting method a checkpoint of `layout` ("openpi" | "lerobot") is served with, and why (for the
        startup log): this file's `image_resize` when it names one, else the layout's trainer convention."""
        trainers = layout_image_resize(layout)
        if self.image_resize is None:
            return trainers, f"the {layout} layout's training convention ({FILE_NAME} names no image_resize)"
        if self.image_resize == trainers:
            return self.image_resize, f"{FILE_NAME} image_resize, as the {layout} layout's training convention"
        return self.image_resize, (f"{FILE_NAME} image_resize, overriding the {layout} layout's training "
                                   f"convention {trainers!r}")

    def check_slots(self, model_slots: tuple[str, ...]) -> None:
        unknown = sorted(s for s in self.cameras.values() if s not in model_slots)
        if unknown:
            raise PolicyConfigError(f"cameras: model slots {unknown} do not exist; this model's slots are "
                                    f"{list(model_slots)}")

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON object; `image_resize` only when it names a method (absent, the layout decides)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "cameras": dict(self.cameras),
            "control_fps": self.control_fps,
            "image_resize": self.image_resize,
            "default_prompt": self.default_prompt,
            "tokenizer": self.tokenizer,
            "rtc": {"max_guidance": self.rtc.max_guidance, "schedule": self.rtc.schedule},
            "normalization": self.normalization.to_dict(),
        }
        if self.image_resize is None:
            del out["image_resize"]
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = FILE_NAME) -> Pi05PolicyConfig:
        if not isinstance(raw, Mapping):
            raise PolicyConfigError(f"{where}: expected a JSON object")
        if raw.get("format") != FORMAT or raw.get("version") != VERSION:
            raise PolicyConfigError(f"{where}: expected \"format\": \"{FORMAT}\" and \"version\": {VERSION}, got "
                                    f"{raw.get('format')!r} / {raw.get('version')!r}")
        allowed = {"format", "version", "cameras", "control_fps", "image_resize", "default_prompt", "tokenizer",
                   "rtc", "normalization"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise PolicyConfigError(f"{where}: unknown keys {unknown}; allowed {sorted(allowed)}")
        for key in ("cameras", "control_fps", "normalization"):
            if key not in raw:
                raise PolicyConfigError(f"{where}: missing required key '{key}'")
        cameras = raw["cameras"]
        if not isinstance(cameras, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in cameras.items()):
            raise PolicyConfigError(f"{where}.cameras: expected {{robot camera: model slot}} strings")
        rtc = raw.get("rtc") or {}
        if not isinstance(rtc, Mapping) or set(rtc) - {"max_guidance", "schedule"}:
            raise PolicyConfigError(f"{where}.rtc: expected {{\"max_guidance\": float, \"schedule\": str}}")
        try:
            fps = float(raw["control_fps"])
        except (TypeError, ValueError):
            raise PolicyConfigError(f"{where}.control_fps: expected a number") from None
        image_resize = raw.get("image_resize")
        if image_resize is not None and not isinstance(image_resize, str):
            raise PolicyConfigError(f"{where}.image_resize: expected one of {list(RESIZE_METHODS)} or null (the "
                                    f"checkpoint layout decides), got {image_resize!r}")
        return cls(
            cameras=dict(cameras),
            normalization=NormalizationConfig.from_dict(raw["normalization"], f"{where}.normalization"),
            control_fps=fps,
            image_resize=image_resize,
            default_prompt=raw.get("default_prompt"),
            tokenizer=raw.get("tokenizer"),
            rtc=RtcSettings(float(rtc.get("max_guidance", 5.0)), str(rtc.get("schedule", "linear"))),
        )

    @classmethod
    def load(cls, path: Path) -> Pi05PolicyConfig:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise PolicyConfigError(
                f"{path} not found: a checkpoint needs a {FILE_NAME} saying which robot camera feeds which model "
                "slot, the joint names and the delta mask (see policy_server/policy_config.py), or pass "
                "--policy-config FILE"
            ) from None
        except json.JSONDecodeError as exc:
            raise PolicyConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(raw, str(path))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
