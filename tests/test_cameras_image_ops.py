"""Pixel operations: channel order, and resize-with-pad parity with openpi-client (what the policy trained on)."""

from __future__ import annotations

import numpy as np
import pytest
from openpi_client import image_tools

from policy_norm.image_fit import (
    DEFAULT_RESIZE_METHOD,
    RESIZE_METHODS,
    center_crop,
    check_resize_method,
    fit_image,
    resize_method_from_metadata,
    resize_with_center_crop,
    resize_with_pad,
)
from robot_client.cameras import ResizeSpec, bgr_to_rgb


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_bgr_to_rgb_swaps_channels() -> None:
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 250  # red
    rgb = bgr_to_rgb(bgr)
    assert rgb[0, 0].tolist() == [250, 0, 10]
    assert rgb.flags.c_contiguous


def test_bgr_to_rgb_refuses_non_colour() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        bgr_to_rgb(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize(("src", "dst"), [
    ((480, 640), (224, 224)),   # 4:3 landscape, downscale, pad top/bottom
    ((720, 1280), (224, 224)),  # 16:9
    ((640, 480), (224, 224)),   # portrait, pad left/right
    ((240, 320), (224, 224)),
    ((100, 50), (224, 224)),    # upscale
    ((481, 637), (224, 224)),   # odd sizes: truncation and offset rounding
    ((480, 640), (240, 320)),   # same aspect: no padding
    ((480, 640), (180, 320)),   # wide target
    ((333, 777), (97, 211)),
    ((224, 224), (224, 224)),   # already the size: returned as is
])
def test_resize_with_pad_is_pixel_identical_to_openpi_client(src: tuple[int, int], dst: tuple[int, int]) -> None:
    image = _noise(*src, seed=src[0] * 7 + src[1])
    ours = resize_with_pad(image, *dst)
    theirs = image_tools.resize_with_pad(image, *dst)
    assert ours.shape == theirs.shape == (*dst, 3)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, theirs)


def test_resize_with_pad_unchanged_when_already_sized() -> None:
    image = _noise(224, 224, seed=1)
    assert resize_with_pad(image, 224, 224) is image


def test_resize_with_pad_pads_black_and_centres() -> None:
    image = np.full((240, 320, 3), 200, np.uint8)
    out = resize_with_pad(image, 224, 224)
    assert (out[:28] == 0).all() and (out[-28:] == 0).all() and (out[28:-28] == 200).all()


def test_center_crop_takes_the_middle() -> None:
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    np.testing.assert_array_equal(center_crop(image, 2, 4), image[2:4, 2:6])
    with pytest.raises(ValueError, match="cannot crop"):
        center_crop(image, 7, 4)


def test_resize_with_center_crop_fills_without_padding() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, 80:560] = 255  # the central 480x480 square is white, the sides black
    out = resize_with_center_crop(image, 224, 224)
    assert out.shape == (224, 224, 3)
    assert (out == 255).all()


def test_resize_spec_methods() -> None:
    image = _noise(480, 640, seed=3)
    np.testing.assert_array_equal(ResizeSpec(224, 224).apply(image), image_tools.resize_with_pad(image, 224, 224))
    crop = ResizeSpec(224, 224, method="center_crop").apply(image)
    assert crop.shape == (224, 224, 3)
    np.testing.assert_array_equal(crop, resize_with_center_crop(image, 224, 224))
    assert ResizeSpec(224, 224, method="none").apply(image) is image
    with pytest.raises(ValueError, match="resize method"):
        ResizeSpec(224, 224, method="stretch")


def test_resize_spec_speaks_the_policy_metadata_vocabulary() -> None:
    """The camera-side fit and the policy-side fit name the same methods the same way, and agree pixel for pixel."""
    image = _noise(480, 640, seed=4)
    for method in RESIZE_METHODS:
        np.testing.assert_array_equal(ResizeSpec(224, 224, method).apply(image), fit_image(image, 224, 224, method))
    for old_word in ("pad", "crop"):
        with pytest.raises(ValueError, match="resize method"):
            ResizeSpec(224, 224, old_word)


def test_an_unset_metadata_method_is_resolved_when_read_not_when_fitting() -> None:
    """proto3 sends an unset `preprocessing.image_resize` as "": it means resize_with_pad, decided in one place."""
    image = _noise(48, 64, seed=5)
    assert resize_method_from_metadata("") == DEFAULT_RESIZE_METHOD == "resize_with_pad"
    assert resize_method_from_metadata("center_crop") == "center_crop"
    with pytest.raises(ValueError, match="image resize method"):
        fit_image(image, 32, 32, "")
    listed = r"\['resize_with_pad', 'resize_with_pad_torch', 'center_crop', 'none'\]"
    with pytest.raises(ValueError, match=rf"must be one of {listed}, got 'pad'"):
        check_resize_method("pad")

