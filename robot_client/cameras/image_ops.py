"""Pixel operations between the sensor and the policy: colour order, and fitting inside the camera.

The fitting itself is `policy_norm.image_fit.fit_image` (shared with the policy client, the server and the tools);
this module only adds the BGR->RGB swap and the camera-side `ResizeSpec`, which names its method with the same
words as a policy's metadata (`RESIZE_METHODS`), so a camera and a policy that fit "the same way" say so alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from policy_norm.image_fit import DEFAULT_RESIZE_METHOD, check_resize_method, fit_image
from robot_client.cameras.frame import U8Image


def bgr_to_rgb(bgr: U8Image) -> U8Image:
    """OpenCV delivers BGR; everything downstream (datasets, policies) expects RGB.

    This is the only place the channel order is swapped, so a frame can never be converted twice.
    """
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 BGR image, got shape {bgr.shape} dtype {bgr.dtype}")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


@dataclass(frozen=True)
class ResizeSpec:
    """Fit frames to the policy's input size inside the camera, so the control loop only sees final images.

    `method` is one of `policy_norm.image_fit.RESIZE_METHODS`, as a policy's metadata names it.
    """

    height: int
    width: int
    method: str = DEFAULT_RESIZE_METHOD

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"resize size must be positive, got {self.height}x{self.width}")
        check_resize_method(self.method, "resize method")

    def apply(self, image: U8Image) -> U8Image:
        return fit_image(image, self.height, self.width, self.method)
