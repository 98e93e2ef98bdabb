"""What every camera hands the control loop, and the errors it raises instead of handing over a bad frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U8Image = npt.NDArray[np.uint8]


class CameraError(RuntimeError):
    """A camera cannot deliver frames (not openable, stopped, wrong format). `camera` names it."""

    def __init__(self, camera: str, message: str) -> None:
        super().__init__(f"camera {camera!r}: {message}")
        self.camera = camera
        self.detail = message


class StaleFrameError(CameraError):
    """The newest frame is too old or the camera has frozen; acting on it would act on the past."""


@dataclass(frozen=True, eq=False)
class CameraFrame:
    """One RGB image and when it was grabbed.

    `capture_timestamp` is on the `time.monotonic()` clock, the same clock robot state is stamped with, so
    image/state skew can be computed by subtraction. `sequence` increases by one (at least) per new frame from
    the same camera; a repeated sequence means the control loop is reading faster than the camera delivers.
    """

    rgb: U8Image
    capture_timestamp: float
    sequence: int
    name: str

    def __post_init__(self) -> None:
        check_rgb(self.rgb, self.name)


def check_rgb(image: U8Image, camera: str) -> None:
    """Refuse anything but uint8 HxWx3: datasets and policies are trained on exactly that."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise CameraError(camera, f"expected a uint8 HxWx3 RGB image, got shape {shape} dtype {dtype}")
