"""Fitting a camera frame to a policy's input size, the way the policy's trainer did it.

Why on the ground floor: the robot client, the server, the oracle, the doctor, arm replay and training must all
prepare images with the same function, or the deploy path silently differs from training. openpi's data pipeline
uses `openpi_client.image_tools.resize_with_pad` (PIL bilinear, black padding, centred), so `resize_with_pad` here
uses the same geometry and the same PIL resampler, which makes it pixel-identical rather than merely close.
LeRobot's pi05 resizes inside the policy instead, on float frames in [0, 1] with torch bilinear and no antialias
(`vla_utils.resize_with_pad_torch`); "resize_with_pad_torch" here is that computation. The two conventions differ by
up to 0.8 in the model's [-1, 1] pixels on a 480x640 frame, so a checkpoint must be fed by its own trainer's one.

Two entry points, one per consumer: `fit_image` is what a client sends (uint8; the torch method's float result
rounded to the nearest level), `fit_image_unit` is what the model takes (float32 in [0, 1]; the torch method's
result unrounded, the uint8 methods' result / 255).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

U8Image = npt.NDArray[np.uint8]
UnitImage = npt.NDArray[np.float32]

# The fitting methods a policy's metadata may name; the one list of them.
RESIZE_METHODS: tuple[str, ...] = ("resize_with_pad", "resize_with_pad_torch", "center_crop", "none")
# Methods whose result lies between uint8 levels (float arithmetic): the model takes their float result, which a
# uint8 frame can only approximate to half a level. The other methods' results are whole uint8 levels.
FLOAT_RESULT_METHODS: tuple[str, ...] = ("resize_with_pad_torch",)
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


def padded_fit_size(cur_height: int, cur_width: int, height: int, width: int) -> tuple[int, int]:
    """The scaled size both trainers' resize-with-pad use (openpi's PIL one and LeRobot's torch one alike):
    ratio = max(w / W, h / H), size (int(h / ratio), int(w / ratio)). Refuses a frame that would vanish."""
    ratio = max(cur_width / width, cur_height / height)
    resized_height = int(cur_height / ratio)
    resized_width = int(cur_width / ratio)
    if resized_height < 1 or resized_width < 1:
        raise ValueError(f"cannot fit a {cur_height}x{cur_width} image into {height}x{width}: it would vanish")
    return resized_height, resized_width


def resize_with_pad(image: U8Image, height: int, width: int) -> U8Image:
    """Scale to fit inside height x width keeping the aspect ratio, then centre on a black canvas.

    Same geometry as openpi-client: ratio = max(w / W, h / H), scaled size truncated with int(), offsets
    int((W - w') / 2) and int((H - h') / 2); an image already at the target size is returned unchanged.
    """
    cur_height, cur_width = image.shape[:2]
    if (cur_height, cur_width) == (height, width):
        return image
    resized_height, resized_width = padded_fit_size(cur_height, cur_width, height, width)
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


def resize_with_pad_torch_unit(image: U8Image, height: int, width: int) -> UnitImage:
    """LeRobot pi05's fit, float32 [height, width, C] in [0, 1]: what its model sees of a uint8 frame.

    As `PI05Policy._preprocess_images` does it: the frame as float32 `x / 255`, channels first; ratio =
    max(w / W, h / H), scaled size truncated with int(); `torch.nn.functional.interpolate` bilinear with
    align_corners=False and no antialias (so a shrink samples rather than averages, unlike PIL); clamp to [0, 1];
    pad with 0.0, the odd pixel of padding at the bottom and right. An image already at the target size is only
    scaled to [0, 1].
    """
    if image.ndim != 3:
        raise ValueError(f"expected an HxWxC image, got shape {list(image.shape)}")
    cur_height, cur_width = image.shape[:2]
    unit = image.astype(np.float32) / np.float32(255.0)
    if (cur_height, cur_width) == (height, width):
        return unit
    resized_height, resized_width = padded_fit_size(cur_height, cur_width, height, width)
    import torch  # only this method needs torch; the PIL methods stay importable without it
    import torch.nn.functional as functional

    frame = torch.from_numpy(unit).permute(2, 0, 1)[None]  # [1, C, H, W], as LeRobot permutes its [B, H, W, C]
    resized = functional.interpolate(frame, size=(resized_height, resized_width), mode="bilinear",
                                     align_corners=False).clamp(0.0, 1.0)
    top, extra_height = divmod(height - resized_height, 2)
    left, extra_width = divmod(width - resized_width, 2)
    padded = functional.pad(resized, (left, left + extra_width, top, top + extra_height), mode="constant", value=0.0)
    result: UnitImage = padded[0].permute(1, 2, 0).contiguous().numpy()
    return result


def unit_to_uint8(unit: UnitImage) -> U8Image:
    """A float image in [0, 1] as the nearest uint8 levels (round half to even), clipped to 0..255."""
    levels: U8Image = np.clip(np.rint(unit * np.float32(255.0)), 0, 255).astype(np.uint8)
    return levels


def fit_image(image: U8Image, height: int, width: int, method: str) -> U8Image:
    """Bring a camera frame to a policy's input size with the method its metadata names: what a client sends.

    "resize_with_pad" (openpi training parity, the default), "resize_with_pad_torch" (LeRobot's, rounded to the
    nearest uint8 level: within half a level of what the model takes, see `fit_image_unit`), "center_crop", or
    "none" (unchanged). The one place the client, the camera, the replay tools and the doctor prepare images, so
    they cannot disagree. A frame already at the size is returned as it is, whatever the method. Metadata's unset
    "" is not a method here: resolve it with `resize_method_from_metadata` when reading the metadata.
    """
    if image.shape[:2] == (height, width) or method == "none":
        return image
    if method == "center_crop":
        return resize_with_center_crop(image, height, width)
    if method == "resize_with_pad_torch":
        return unit_to_uint8(resize_with_pad_torch_unit(image, height, width))
    check_resize_method(method, "image resize method")
    return resize_with_pad(image, height, width)


def fit_image_unit(image: U8Image, height: int, width: int, method: str) -> UnitImage:
    """The frame as the model takes it, float32 [H, W, C] in [0, 1]: what a server feeds its model.

    "resize_with_pad_torch": LeRobot's float result, unrounded; the other methods: `fit_image`'s uint8 result / 255
    (their trainers fitted uint8 frames). A frame already at the size (or any frame with "none") is only scaled.
    """
    if image.shape[:2] == (height, width) or method == "none":
        return image.astype(np.float32) / np.float32(255.0)
    if method == "resize_with_pad_torch":
        return resize_with_pad_torch_unit(image, height, width)
    return fit_image(image, height, width, method).astype(np.float32) / np.float32(255.0)


def result_is_uint8(method: str) -> bool:
    """Whether `method`'s result is whole uint8 levels, so `fit_image` loses nothing of `fit_image_unit`'s."""
    return method not in FLOAT_RESULT_METHODS
