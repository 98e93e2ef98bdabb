"""Requests that must be refused INVALID_ARGUMENT naming the field: images that misstate their encoding or
channels, impossible states, and out-of-range or unconvertible values on the websocket."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from openpi_client import msgpack_numpy
from PIL import Image as PILImage
from websockets.sync.client import connect

from policy_norm.spec import CameraSpec, PolicySpec, SpecError
from policy_server.server import PolicyServer
from policy_server.validate import STATE_ABS_BOUND, state_bounds, validate_state
from protos import policy_pb2 as pb
from protos import policy_pb2_grpc as pb_grpc
from protos.codec import WireError, decode_image, encode_image, numpy_to_tensor
from protos.dicts import request_from_dict
from robodata.dataset import Dataset
from tests.wire_helpers import observation_for, running_server, sample_dataset


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sample_dataset()


@pytest.fixture(scope="module")
def server() -> Iterator[PolicyServer]:
    with running_server(websocket_port=0) as srv:
        yield srv


# -- images ---------------------------------------------------------------------------------------------------

def _pil_bytes(mode: str, fmt: str, h: int = 6, w: int = 8) -> bytes:
    buf = io.BytesIO()
    image = PILImage.new(mode, (w, h), color=(10, 200, 30) if mode == "RGB" else None)
    image.save(buf, format=fmt)
    return buf.getvalue()


def _image(encoding: pb.ImageEncoding.ValueType, data: bytes, h: int = 6, w: int = 8) -> pb.Image:
    return pb.Image(encoding=encoding, height=h, width=w, data=data)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (_image(pb.IMAGE_ENCODING_PNG, _pil_bytes("L", "PNG")), r"cam\.data: expected a 3-channel RGB PNG, got 1 "),
        (_image(pb.IMAGE_ENCODING_PNG, _pil_bytes("RGBA", "PNG")), r"cam\.data: expected a 3-channel RGB PNG, got 4"),
        (_image(pb.IMAGE_ENCODING_PNG, _pil_bytes("P", "PNG")), r"cam\.data: .*\(mode P\)"),
        (_image(pb.IMAGE_ENCODING_JPEG, _pil_bytes("L", "JPEG")), r"cam\.data: expected a 3-channel RGB JPEG, got 1"),
        (_image(pb.IMAGE_ENCODING_PNG, _pil_bytes("RGB", "JPEG")),
         r"cam\.encoding: declared PNG but the data is a JPEG image"),
        (_image(pb.IMAGE_ENCODING_JPEG, _pil_bytes("RGB", "PNG")),
         r"cam\.encoding: declared JPEG but the data is a PNG image"),
        (_image(pb.IMAGE_ENCODING_JPEG, _pil_bytes("RGB", "GIF")), r"cam\.data: not a decodable JPEG/PNG image"),
        (_image(pb.IMAGE_ENCODING_PNG, _pil_bytes("RGB", "PNG", h=5)), r"cam\.data: declared 6x8 but the encoded "
                                                                        r"image is 5x8"),
    ],
)
def test_images_that_misstate_their_encoding_channels_or_size_are_refused(image: pb.Image, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode_image(image, "cam")


def test_rgb_png_and_jpeg_still_decode() -> None:
    for fmt, encoding in (("PNG", pb.IMAGE_ENCODING_PNG), ("JPEG", pb.IMAGE_ENCODING_JPEG)):
        rgb = decode_image(_image(encoding, _pil_bytes("RGB", fmt)), "cam").rgb
        assert rgb.shape == (6, 8, 3) and abs(int(rgb[0, 0, 1]) - 200) < 8


def _grpc_error(server: PolicyServer, request: pb.InferRequest) -> grpc.RpcError:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.PolicyServiceStub(channel).Infer(request, timeout=30)
    return err.value


def _request(dataset: Dataset, **changes: Any) -> pb.InferRequest:
    return request_from_dict({**observation_for(dataset, 0, 3), **changes})


def test_grayscale_png_over_grpc_is_invalid_argument_naming_the_camera(server: PolicyServer,
                                                                       dataset: Dataset) -> None:
    cam = dataset.info.cameras[0]
    request = _request(dataset)
    gray = np.zeros((cam.height, cam.width), np.uint8)
    ok, png = cv2.imencode(".png", gray)
    assert ok
    request.observation.images[cam.name].CopyFrom(_image(pb.IMAGE_ENCODING_PNG, png.tobytes(), cam.height, cam.width))
    err = _grpc_error(server, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith(f"observation.images[{cam.name}].data: expected a 3-channel RGB PNG, got 1")


# -- states ---------------------------------------------------------------------------------------------------

def _spec(limits: tuple[tuple[str, float, float], ...] = ()) -> PolicySpec:
    return PolicySpec(policy_type="t", model_id="t", weight_hash="", action_horizon=2,
                      state_names=("j1", "gripper"), action_names=("j1", "gripper"),
                      cameras=(CameraSpec("top", 4, 4),), control_fps=10.0, action_delta_mask=(False, False),
                      action_gripper_mask=(False, True), joint_limits=limits)


LIMITS = (("j1", -2.0, 3.0), ("gripper", 0.0, 1.0))


@pytest.mark.parametrize(
    ("state", "accepted"),
    [
        ((3.49, 1.49), True),  # within limits + margin (10% of 5 rad = 0.5; gripper: the 0.5 floor)
        ((-2.49, -0.49), True),
        ((3.6, 0.5), False),  # a joint read in the wrong units or order
        ((0.0, 1.6), False),
        ((1e30, 0.0), False),  # finite but impossible: answered with warnings before
    ],
)
def test_states_beyond_joint_limits_and_margin_are_refused(state: tuple[float, float], accepted: bool) -> None:
    tensor = numpy_to_tensor(np.asarray(state, np.float32))
    if accepted:
        np.testing.assert_array_equal(validate_state(tensor, _spec(LIMITS)), np.asarray(state, np.float32))
        return
    with pytest.raises(WireError, match=r"^observation\.state\[\d\] \((j1|gripper)\): .* is outside \["):
        validate_state(tensor, _spec(LIMITS))


def test_state_bounds_and_the_absolute_bound_without_limits() -> None:
    assert state_bounds(_spec(LIMITS), "j1") == (-2.5, 3.5)
    assert state_bounds(_spec(LIMITS), "gripper") == (-0.5, 1.5)
    assert state_bounds(_spec(), "j1") == (-STATE_ABS_BOUND, STATE_ABS_BOUND)
    validate_state(numpy_to_tensor(np.asarray([9e3, -9e3], np.float32)), _spec())
    with pytest.raises(WireError, match=r"observation\.state\[1\] \(gripper\): -100000 is outside \[-10000, 10000\]"):
        validate_state(numpy_to_tensor(np.asarray([0.0, -1e5], np.float32)), _spec())
    with pytest.raises(SpecError, match="joint_limits.j1: expected finite lower < upper"):
        _spec((("j1", 1.0, 1.0),))


def test_impossible_state_over_grpc_is_invalid_argument(server: PolicyServer, dataset: Dataset) -> None:
    state = observation_for(dataset, 0, 3)["state"].copy()
    state[2] = 1e30
    err = _grpc_error(server, _request(dataset, state=state))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith(f"observation.state[2] ({dataset.info.state_names[2]}): 1e+30 is outside")


# -- websocket conversions ------------------------------------------------------------------------------------

def _ws_reply(server: PolicyServer, obs: dict[str, Any]) -> Any:
    assert server.websocket is not None
    with connect(f"ws://127.0.0.1:{server.websocket.port}", compression=None, max_size=None) as ws:
        ws.recv()  # metadata
        ws.send(msgpack_numpy.packb(obs))
        return ws.recv()


WS_CASES: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (lambda o: o.__setitem__("episode_index", 2**64 - 1), "episode_index: 18446744073709551615 is outside"),
    (lambda o: o.__setitem__("step_index", 2**63), "step_index: 9223372036854775808 is outside"),
    (lambda o: o.__setitem__("noise_seed", -1), "noise_seed: -1 is outside"),
    (lambda o: o.__setitem__("prompt", b"\xff\xfe pick"), "prompt: not valid UTF-8"),
    (lambda o: o.__setitem__("rtc", {"previous_chunk_remainder": np.zeros((2, 14)), "inference_delay_steps": 2**40}),
     "rtc.inference_delay_steps: 1099511627776 is outside"),
    (lambda o: o.__setitem__("state", [[1.0, 2.0], [3.0]]), "state: not convertible to an array"),
]


@pytest.mark.parametrize(("mutate", "message"), WS_CASES)
def test_websocket_hostile_values_are_invalid_argument(server: PolicyServer, dataset: Dataset,
                                                       mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    obs = observation_for(dataset, 0, 3)
    mutate(obs)
    reply = _ws_reply(server, obs)
    assert isinstance(reply, str) and reply.startswith("INVALID_ARGUMENT: " + message), reply


def test_float_conversion_overflow_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="timestamp: not representable as a float"):
        request_from_dict({"state": np.zeros(2), "timestamp": 10**400})
    with pytest.raises(WireError, match=r"image_timestamps\[top\]: not representable"):
        request_from_dict({"state": np.zeros(2), "images": {"top": np.zeros((2, 2, 3), np.uint8)},
                           "image_timestamps": {"top": 10**400}})


def test_encode_image_output_still_passes_the_new_checks() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    for encoding in ("png", "jpeg"):
        assert decode_image(encode_image(rgb, encoding), "cam").rgb.shape == (6, 8, 3)


def test_pi05_policy_spec_carries_its_joint_limits(tmp_path: Path) -> None:
    from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
    from tests.pi05_helpers import make_servable_checkpoint

    policy = Pi05Policy(Pi05ServeOptions(checkpoint=make_servable_checkpoint(tmp_path / "ckpt"), device="cpu",
                                         warmup=False))
    limits = dict(policy.config.normalization.joint_limits or {})
    assert limits and {name: (lo, hi) for name, lo, hi in policy.spec.joint_limits} == limits
    name = policy.spec.state_names[0]
    state = np.zeros(policy.spec.state_dim, np.float32)
    state[0] = limits[name][1] + 2.0
    with pytest.raises(WireError, match=rf"^observation\.state\[0\] \({name}\): "):
        validate_state(numpy_to_tensor(state), policy.spec)
