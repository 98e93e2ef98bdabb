"""Fitting a camera frame to a policy's input size, the way the policy's trainer did it.

Why on the ground floor: the robot client, the server, the oracle, the doctor, arm replay and training must all
prepare images with the same function, or the deploy path silently differs from training. openpi's data pipeline
uses `openpi_client.image_tools.resize_with_pad` (PIL bilinear, black padding, centred), so `resize_with_pad` here
uses the same geometry and the same PIL resampler, which makes it pixel-identical rather than merely close.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

U8Image = npt.NDArray[np.uint8]

# The fitting methods a policy's metadata may name; the one list of them.
RESIZE_METHODS: tuple[str, ...] = ("resize_with_pad", "center_crop", "none")
# What a policy that names no method gets: openpi's training convention.
DEFAULT_RESIZE_METHOD = "resize_with_pad"


def check_resize_method(method: str, field: str = "image_resize") -> str:
    """`method` if it is one of RESIZE_METHODS; otherwise a ValueError naming `field` and the accepted names."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"{field} must be one of {list(RESIZE_METHODS)}, got {method!r}")
    return method


def resize_method_from_metadata(image_resize: str) -> str:
    """The method a `PolicyMetadata.preprocessing.image_resize` names, with the wire's unset value made explicit.

    A proto3 string has no "unset": a server that never fills the field sends "", which means the default
    (DEFAULT_RESIZE_METHOD). Readers of metadata resolve it here, once, so `fit_image` only ever sees real names.
    An unknown name is passed through: `fit_image` refuses it when a frame actually needs fitting.
    """
    return image_resize or DEFAULT_RESIZE_METHOD


def _pil_resize(image: U8Image, height: int, width: int) -> U8Image:
    resized = Image.fromarray(image).resize((width, height), resample=Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def resize_with_pad(image: U8Image, height: int, width: int) -> U8Image:
    """Scale to fit inside height x width keeping the aspect ratio, then centre on a black canvas.

    Same geometry as openpi-client: ratio = max(w / W, h / H), scaled size truncated with int(), offsets
    int((W - w') / 2) and int((H - h') / 2); an image already at the target size is returned unchanged.
    """
    cur_height, cur_width = image.shape[:2]
    if (cur_height, cur_width) == (height, width):
        return image
    ratio = max(cur_width / width, cur_height / height)
    resized_height = int(cur_height / ratio)
    resized_width = int(cur_width / ratio)
    if resized_height < 1 or resized_width < 1:
        raise ValueError(f"cannot fit a {cur_height}x{cur_width} image into {height}x{width}: it would vanish")
    resized = _pil_resize(image, resized_height, resized_width)
    canvas = np.zeros((height, width, *image.shape[2:]), dtype=np.uint8)
    top = max(0, int((height - resized_height) / 2))
    left = max(0, int((width - resized_width) / 2))
    canvas[top:top + resized_height, left:left + resized_width] = resized
    return canvas


def center_crop(image: U8Image, height: int, width: int) -> U8Image:
    """The central height x width window (no scaling); offsets rounded down like resize_with_pad's padding."""
    cur_height, cur_width = image.shape[:2]
    if height > cur_height or width > cur_width:
        raise ValueError(f"cannot crop {height}x{width} from a {cur_height}x{cur_width} image")
    top = (cur_height - height) // 2
    left = (cur_width - width) // 2
    return image[top:top + height, left:left + width]


def resize_with_center_crop(image: U8Image, height: int, width: int) -> U8Image:
    """Fill height x width with no padding: crop the centre to the target aspect ratio, then scale.

    The alternative to padding when the policy was trained on full-frame images; loses the frame's edges.
    """
    cur_height, cur_width = image.shape[:2]
    if (cur_height, cur_width) == (height, width):
        return image
    scale = min(cur_width / width, cur_height / height)
    crop_height = min(cur_height, max(1, round(height * scale)))
    crop_width = min(cur_width, max(1, round(width * scale)))
    return _pil_resize(np.ascontiguousarray(center_crop(image, crop_height, crop_width)), height, width)


def fit_image(image: U8Image, height: int, width: int, method: str) -> U8Image:
    """Bring a camera frame to a policy's input size with the method its metadata names.

    "resize_with_pad" (openpi training parity, the default), "center_crop", or "none" (unchanged). The one place
    the client, the camera, the replay tools and the doctor prepare images, so they cannot disagree. Metadata's
    unset "" is not a method here: resolve it with `resize_method_from_metadata` when reading the metadata.
    """
    if image.shape[:2] == (height, width) or method == "none":
        return image
    if method == "center_crop":
        return resize_with_center_crop(image, height, width)
    check_resize_method(method, "image resize method")
    return resize_with_pad(image, height, width)
