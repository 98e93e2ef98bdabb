"""Pixel operations between the sensor and the policy: colour order, and fitting inside the camera.

The fitting functions themselves live in `policy_norm.image_fit` (shared with the server and the tools); this
module only adds the BGR->RGB swap and the camera-side `ResizeSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from policy_norm.image_fit import resize_with_center_crop, resize_with_pad
from robot_client.cameras.frame import U8Image

ResizeMode = Literal["pad", "crop"]


def bgr_to_rgb(bgr: U8Image) -> U8Image:
    """OpenCV delivers BGR; everything downstream (datasets, policies) expects RGB.

    This is the only place the channel order is swapped, so a frame can never be converted twice.
    """
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 BGR image, got shape {bgr.shape} dtype {bgr.dtype}")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


@dataclass(frozen=True)
class ResizeSpec:
    """Fit frames to the policy's input size inside the camera, so the control loop only sees final images."""

    height: int
    width: int
    mode: ResizeMode = "pad"

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"resize size must be positive, got {self.height}x{self.width}")
        if self.mode not in ("pad", "crop"):
            raise ValueError(f"resize mode must be 'pad' or 'crop', got {self.mode!r}")

    def apply(self, image: U8Image) -> U8Image:
        if self.mode == "pad":
            return resize_with_pad(image, self.height, self.width)
        return resize_with_center_crop(image, self.height, self.width)
