"""Image fitting as each trainer did it, held against numbers our own functions did not make.

- LeRobot 0.6.1 (pi05 resizes inside the policy): golden model images written by LeRobot itself
  (tests/golden/lerobot/pi05_images.npz, made by tests/golden/lerobot/make_golden.py), and its documented
  computation written out here with `torch.nn.functional.interpolate`: float frame x / 255, ratio = max(w / W, h / H),
  size (int(h / ratio), int(w / ratio)), bilinear, align_corners=False, no antialias, clamp to [0, 1], zero padding
  with the odd pixel at the bottom / right, then `* 2 - 1`.
- openpi (PIL resize_with_pad on uint8 in the client / data pipeline): `openpi_client.image_tools.resize_with_pad`.
- The server: a checkpoint's layout picks its trainer's method unless policy_config.json names one, the metadata
  announces the method it serves with, and a frame sent at full size reaches the model exactly as its trainer
  fitted it (captured at the input transform, through the server's own request validation).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as functional
from openpi_client import image_tools

from policy_norm.image_fit import RESIZE_METHODS, fit_image, fit_image_unit, resize_method_from_metadata
from policy_norm.spec import CameraSpec, PolicySpec, PreprocessingSpec
from policy_server.pi05_inputs import Pi05InputTransform, inputs_difference, model_pixels
from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
from policy_server.policy_config import FILE_NAME, Pi05PolicyConfig, PolicyConfigError
from policy_server.validate import validate_images, validate_request
from protos.codec import WireError, encode_image
from protos.dicts import request_from_dict
from tests.pi05_helpers import make_servable_checkpoint
from tests.wire_helpers import observation_for, sample_dataset
from training.data import build_samples

GOLDEN = Path(__file__).parent / "golden" / "lerobot" / "pi05_images.npz"
GOLDEN_SIZES = ["480x640", "481x641", "96x128", "97x131", "224x224"]
ONE_LEVEL = 2.0 / 255.0  # one uint8 level in the model's [-1, 1] pixels
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


def frame(height: int, width: int, seed: int) -> U8:
    """A frame with smooth regions and sharp edges, values 1..255 (never 0, so padding is told apart)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    smooth = 128 + 100 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    stripes = 250.0 * ((x // 3 + y // 4) % 2)
    noise = rng.integers(1, 256, (height, width))
    out = np.stack([smooth, stripes, noise], axis=-1)
    return np.clip(np.round(out), 1, 255).astype(np.uint8)


def lerobot_formula(image: U8, height: int, width: int) -> F32:
    """LeRobot 0.6.1's `resize_with_pad_torch` on `x / 255`, written out: float32 [height, width, 3] in [0, 1]."""
    img = torch.from_numpy(image).to(torch.float32)[None] / 255.0  # [1, h, w, 3], as its dataset loads frames
    img = img.permute(0, 3, 1, 2)  # [1, 3, h, w]
    cur_height, cur_width = image.shape[:2]
    ratio = max(cur_width / width, cur_height / height)
    resized_height, resized_width = int(cur_height / ratio), int(cur_width / ratio)
    resized = functional.interpolate(img, size=(resized_height, resized_width), mode="bilinear",
                                     align_corners=False).clamp(0.0, 1.0)
    pad_h0, remainder_h = divmod(height - resized_height, 2)
    pad_w0, remainder_w = divmod(width - resized_width, 2)
    padded = functional.pad(resized, (pad_w0, pad_w0 + remainder_w, pad_h0, pad_h0 + remainder_h), mode="constant",
                            value=0.0)
    out: F32 = padded[0].permute(1, 2, 0).numpy()
    return out


# ---- the functions ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("size", GOLDEN_SIZES)
def test_torch_method_equals_lerobots_own_model_images(golden: dict[str, np.ndarray], size: str) -> None:
    image, model = golden[f"frame_{size}"], golden[f"model_{size}"]
    assert image.dtype == np.uint8 and model.shape == (224, 224, 3) and model.dtype == np.float32
    unit = fit_image_unit(image, 224, 224, "resize_with_pad_torch")
    assert unit.dtype == np.float32 and unit.shape == (224, 224, 3)
    np.testing.assert_allclose(unit * 2.0 - 1.0, model, rtol=0, atol=1e-6)
    sent = fit_image(image, 224, 224, "resize_with_pad_torch")  # what a client sends: one level at most away
    assert sent.dtype == np.uint8 and sent.shape == (224, 224, 3)
    np.testing.assert_allclose(sent.astype(np.float32) / 255.0 * 2.0 - 1.0, model, rtol=0, atol=ONE_LEVEL + 1e-6)


def test_the_golden_references_tell_the_two_conventions_apart(golden: dict[str, np.ndarray]) -> None:
    """The openpi fit of the same 480x640 frame is far from LeRobot's model image: the test above could not pass
    with the wrong convention."""
    image, model = golden["frame_480x640"], golden["model_480x640"]
    pil = image_tools.resize_with_pad(image, 224, 224).astype(np.float32) / 255.0 * 2.0 - 1.0
    assert float(np.abs(pil - model).max()) > 0.3


@pytest.mark.parametrize(("src", "dst"), [
    ((480, 640), (224, 224)),  # shrink, even, pad top and bottom
    ((481, 641), (224, 224)),  # shrink, odd
    ((97, 131), (224, 224)),   # grow, odd: odd padding row at the bottom
    ((64, 48), (224, 224)),    # grow, portrait: pad left and right
    ((131, 97), (224, 224)),   # grow, odd portrait: odd padding column at the right
    ((480, 640), (180, 320)),  # non-square target, wide
    ((333, 777), (97, 211)),   # non-square, odd everything
    ((50, 70), (120, 61)),     # grow into a tall target
])
def test_torch_method_is_the_documented_computation(src: tuple[int, int], dst: tuple[int, int]) -> None:
    image = frame(*src, seed=src[0] + src[1])
    expected = lerobot_formula(image, *dst)
    unit = fit_image_unit(image, *dst, "resize_with_pad_torch")
    assert unit.shape == (*dst, 3) and unit.dtype == np.float32
    np.testing.assert_allclose(unit, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fit_image(image, *dst, "resize_with_pad_torch"),
                                  np.clip(np.rint(expected * 255.0), 0, 255).astype(np.uint8))
    # The padding, read off the picture: zero outside the resized frame, the odd line at the bottom / right.
    content = np.any(unit > 0, axis=2)
    rows, cols = np.flatnonzero(np.any(content, axis=1)), np.flatnonzero(np.any(content, axis=0))
    top, bottom = rows[0], dst[0] - 1 - rows[-1]
    left, right = cols[0], dst[1] - 1 - cols[-1]
    assert bottom - top in (0, 1) and right - left in (0, 1), (top, bottom, left, right)
    ratio = max(src[1] / dst[1], src[0] / dst[0])
    assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == (int(src[0] / ratio), int(src[1] / ratio))


def test_torch_method_has_no_antialias_and_no_corner_alignment() -> None:
    """Values by hand: growing 2 -> 4 samples at (i + 0.5) / 2 - 0.5 (edge-clamped); shrinking 4 -> 2 samples at
    (i + 0.5) * 2 - 0.5, the mean of two neighbours only (an antialiasing filter would reach further)."""
    grow = np.zeros((2, 2, 3), np.uint8)
    grow[:, 0], grow[:, 1] = 40, 200
    row = fit_image_unit(grow, 4, 4, "resize_with_pad_torch")[0, :, 0] * 255.0
    np.testing.assert_allclose(row, [40.0, 80.0, 160.0, 200.0], rtol=0, atol=1e-4)
    shrink = np.zeros((4, 4, 3), np.uint8)
    shrink[:] = np.array([0, 60, 120, 240], np.uint8)[None, :, None]
    row = fit_image_unit(shrink, 2, 2, "resize_with_pad_torch")[0, :, 0] * 255.0
    np.testing.assert_allclose(row, [30.0, 180.0], rtol=0, atol=1e-4)
    pil = fit_image_unit(shrink, 2, 2, "resize_with_pad")[0, :, 0] * 255.0
    assert not np.allclose(pil, [30.0, 180.0], atol=1.0)  # PIL's antialiased shrink averages more pixels


@pytest.mark.parametrize(("src", "dst"), [((480, 640), (224, 224)), ((481, 641), (224, 224)), ((97, 131), (224, 224)),
                                          ((333, 777), (97, 211)), ((240, 320), (28, 28))])
def test_pil_method_is_openpi_client_exactly(src: tuple[int, int], dst: tuple[int, int]) -> None:
    image = frame(*src, seed=7)
    theirs = image_tools.resize_with_pad(image, *dst)
    np.testing.assert_array_equal(fit_image(image, *dst, "resize_with_pad"), theirs)
    np.testing.assert_array_equal(fit_image_unit(image, *dst, "resize_with_pad"),
                                  theirs.astype(np.float32) / np.float32(255.0))


def test_a_frame_at_the_model_size_passes_untouched_in_every_method() -> None:
    image = frame(28, 28, seed=3)
    image.flags.writeable = False  # as a wire buffer arrives
    for method in RESIZE_METHODS:
        assert fit_image(image, 28, 28, method) is image, method
        unit = fit_image_unit(image, 28, 28, method)
        np.testing.assert_array_equal(unit, image.astype(np.float32) / np.float32(255.0))
    # Model pixels from the unit frame are bit for bit those of the uint8 frame, for every level.
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    from_u8 = model_pixels(torch.from_numpy(levels)[None])
    from_unit = model_pixels(torch.from_numpy(fit_image_unit(levels, 16, 16, "resize_with_pad_torch"))[None])
    assert torch.equal(from_u8, from_unit)


# ---- the server --------------------------------------------------------------------------------------------------

MODEL_CHANGES: dict[str, object] = {"image_keys": ("base_0_rgb", "left_wrist_0_rgb"), "max_token_len": 96}


@pytest.fixture(scope="module")
def lerobot_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_servable_checkpoint(tmp_path_factory.mktemp("lerobot") / "pi05", layout="lerobot",
                                    model_changes=MODEL_CHANGES)


@pytest.fixture(scope="module")
def lerobot_policy(lerobot_checkpoint: Path) -> Iterator[Pi05Policy]:
    policy = Pi05Policy(Pi05ServeOptions(checkpoint=lerobot_checkpoint, device="cpu", warmup=False))
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def openpi_policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pi05Policy]:
    checkpoint = make_servable_checkpoint(tmp_path_factory.mktemp("openpi") / "pi05", model_changes=MODEL_CHANGES)
    policy = Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device="cpu", warmup=False))
    yield policy
    policy.close()


def top_pixels(policy: Pi05Policy, top: U8, step: int = 4) -> torch.Tensor:
    """The model pixels of camera `top` for a request carrying `top` as sent: the server's validation of the wire
    request, then the policy's input transform. [3, S, S] in [-1, 1]."""
    obs = observation_for(sample_dataset(), 0, step)
    obs["images"] = {"top": top, "left_wrist": obs["images"]["left_wrist"]}
    inputs = policy._prepare(validate_request(request_from_dict(obs), policy.spec)).inputs
    slot = [cam for _, cam in policy.transform.slot_cameras].index("top")
    return inputs.images[slot][0]


def as_model(unit: F32) -> torch.Tensor:
    return torch.from_numpy(unit).permute(2, 0, 1) * 2.0 - 1.0


def test_each_layout_serves_with_its_trainers_method(lerobot_policy: Pi05Policy, openpi_policy: Pi05Policy) -> None:
    for policy, layout, method in ((lerobot_policy, "lerobot", "resize_with_pad_torch"),
                                   (openpi_policy, "openpi", "resize_with_pad")):
        assert policy.load_report.layout == layout
        assert policy.config.image_resize is None  # policy_config.json names none: the layout decides
        assert policy.transform.image_resize == method
        metadata = policy.spec.to_proto(server_version="test", max_request_bytes=1 << 20)
        assert metadata.preprocessing.image_resize == method
        assert (metadata.preprocessing.image_height, metadata.preprocessing.image_width) == (28, 28)


def test_a_full_frame_reaches_a_lerobot_model_as_lerobot_fits_it(lerobot_policy: Pi05Policy) -> None:
    full = frame(480, 640, seed=11)
    expected = as_model(lerobot_formula(full, 28, 28))
    served = top_pixels(lerobot_policy, full)
    assert served.dtype == torch.float32 and tuple(served.shape) == (3, 28, 28)
    torch.testing.assert_close(served, expected, rtol=0, atol=1e-6)
    # A client that fits first (with the method the metadata names) sends uint8: one level away at most.
    method = resize_method_from_metadata(lerobot_policy.spec.preprocessing.image_resize)
    client_fitted = top_pixels(lerobot_policy, fit_image(full, 28, 28, method))
    torch.testing.assert_close(client_fitted, expected, rtol=0, atol=ONE_LEVEL + 1e-6)
    # PIL's antialiased fit of the same frame is far from it: the model would see another picture.
    pil = as_model(image_tools.resize_with_pad(full, 28, 28).astype(np.float32) / 255.0)
    assert float((pil - expected).abs().max()) > 0.1


def test_a_full_frame_reaches_an_openpi_model_as_openpi_fits_it(openpi_policy: Pi05Policy) -> None:
    full = frame(480, 640, seed=12)
    fitted = torch.from_numpy(image_tools.resize_with_pad(full, 28, 28))
    expected = (fitted.to(torch.float32) / 255.0 * 2.0 - 1.0).permute(2, 0, 1)
    assert torch.equal(top_pixels(openpi_policy, full), expected)
    assert torch.equal(top_pixels(openpi_policy, fitted.numpy()), expected)  # the client fitted it: the same


def test_a_frame_at_the_model_size_gives_the_same_pixels_in_both_layouts(lerobot_policy: Pi05Policy,
                                                                          openpi_policy: Pi05Policy) -> None:
    small = frame(28, 28, seed=13)
    expected = (torch.from_numpy(small).to(torch.float32) / 255.0 * 2.0 - 1.0).permute(2, 0, 1)
    for policy in (lerobot_policy, openpi_policy):
        assert torch.equal(top_pixels(policy, small), expected)


def test_training_feeds_a_lerobot_model_what_serving_feeds_it(lerobot_checkpoint: Path,
                                                               lerobot_policy: Pi05Policy) -> None:
    """Training's samples of raw 240x320 dataset frames equal, tensor for tensor, the served full frames."""
    t = lerobot_policy.transform
    config = Pi05PolicyConfig.load(lerobot_checkpoint / FILE_NAME)
    transform = Pi05InputTransform.from_policy_config(t.cfg, config, t.tokenizer, t.pipeline, layout="lerobot")
    assert transform.frame_dtype == np.float32
    samples = build_samples(sample_dataset(), [1], transform)
    assert samples.images[0].dtype == torch.float32
    for step in (0, 9):
        obs = observation_for(sample_dataset(), 1, step)
        assert obs["images"]["top"].shape == (240, 320, 3)  # sent as recorded: the server fits
        served = lerobot_policy._prepare(validate_request(request_from_dict(obs), lerobot_policy.spec)).inputs
        assert inputs_difference(served, samples.inputs([step])) is None


def test_policy_config_image_resize_wins_over_the_layout(lerobot_checkpoint: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    config = Pi05PolicyConfig.load(lerobot_checkpoint / FILE_NAME)
    path = tmp_path / FILE_NAME
    dataclasses.replace(config, image_resize="resize_with_pad").save(path)
    with caplog.at_level(logging.INFO, logger="policy_server.pi05_policy"):
        policy = Pi05Policy(Pi05ServeOptions(checkpoint=lerobot_checkpoint, policy_config=path, device="cpu",
                                             warmup=False))
    try:
        assert policy.spec.preprocessing.image_resize == "resize_with_pad"
        full = frame(480, 640, seed=14)
        expected = as_model(image_tools.resize_with_pad(full, 28, 28).astype(np.float32) / np.float32(255.0))
        assert torch.equal(top_pixels(policy, full), expected)
    finally:
        policy.close()
    assert "resize_with_pad: policy_config.json image_resize, overriding the lerobot layout's training " \
           "convention 'resize_with_pad_torch'" in caplog.text


def test_policy_config_image_resize_is_optional_and_round_trips(lerobot_checkpoint: Path) -> None:
    config = Pi05PolicyConfig.load(lerobot_checkpoint / FILE_NAME)
    assert config.image_resize is None and "image_resize" not in config.to_dict()
    assert config.resolve_image_resize("lerobot")[0] == "resize_with_pad_torch"
    assert config.resolve_image_resize("openpi")[0] == "resize_with_pad"
    named = dataclasses.replace(config, image_resize="resize_with_pad_torch")
    assert Pi05PolicyConfig.from_dict(named.to_dict()).image_resize == "resize_with_pad_torch"
    assert named.resolve_image_resize("openpi")[0] == "resize_with_pad_torch"
    with pytest.raises(PolicyConfigError, match=r"image_resize: expected one of .* or null"):
        Pi05PolicyConfig.from_dict({**config.to_dict(), "image_resize": 3})
    with pytest.raises(ValueError, match=r"unknown checkpoint layout 'jax'"):
        config.resolve_image_resize("jax")


def _spec(image_resize: str, model_size: int) -> PolicySpec:
    return PolicySpec(policy_type="t", model_id="t", weight_hash="", action_horizon=2, state_names=("a",),
                      action_names=("a",), cameras=(CameraSpec("top", 28, 28, required=True),), control_fps=10.0,
                      action_delta_mask=(False,), action_gripper_mask=(False,),
                      preprocessing=PreprocessingSpec(image_resize=image_resize, image_height=model_size,
                                                      image_width=model_size))


def test_validation_takes_other_sizes_only_from_a_policy_that_fits_them() -> None:
    big = {"top": encode_image(frame(48, 64, seed=1))}
    rgb, _ = validate_images(big, _spec("resize_with_pad_torch", 28))
    assert rgb["top"].shape == (48, 64, 3)
    # No model size (the dataset policy) or no method: only the cameras' own size, as before.
    for spec in (_spec("resize_with_pad", 0), _spec("none", 28)):
        with pytest.raises(WireError, match=r"observation.images\[top\]: expected 28x28 \(HxW\), got 48x64"):
            validate_images(big, spec)
    # Absurd sizes are refused by name before anything is decoded.
    huge = {"top": encode_image(np.zeros((8193, 1, 3), np.uint8))}
    with pytest.raises(WireError, match=r"observation.images\[top\].height/width: each side must be 1..8192"):
        validate_images(huge, _spec("resize_with_pad", 28))
    # The payload must still match the declared size.
    lying = encode_image(frame(48, 64, seed=1))
    lying.height = 47
    with pytest.raises(WireError, match=r"observation.images\[top\].data: raw RGB8 47x64 needs"):
        validate_images({"top": lying}, _spec("resize_with_pad", 28))


def test_the_local_model_source_sends_what_the_robot_client_sends(lerobot_checkpoint: Path) -> None:
    from replay.oracle.sources import LocalModelSource

    source = LocalModelSource(lerobot_checkpoint, noise_seed=0)
    try:
        full = frame(240, 320, seed=15)
        sent = source._images({"top": full, "other": full})
        np.testing.assert_array_equal(sent["top"], fit_image(full, 28, 28, "resize_with_pad_torch"))
        assert sent["other"] is full
    finally:
        source.close()
