"""numpy <-> wire conversions: exact round trips, and refusals that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from protos import policy_pb2 as pb
from protos.codec import WireError, decode_image, encode_image, numpy_to_tensor, tensor_to_numpy
from protos.dicts import request_from_dict, response_to_dict

ALL_DTYPES = [np.float32, np.float64, np.float16, np.uint8, np.int8, np.int16, np.int32, np.int64, np.bool_]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_tensor_round_trip_is_exact(dtype: type) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(3, 4, 5)) * 10).astype(dtype)
    back = tensor_to_numpy(numpy_to_tensor(arr), "t")
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_big_endian_input_is_sent_little_endian() -> None:
    arr = np.arange(6, dtype=">f4").reshape(2, 3)
    t = numpy_to_tensor(arr)
    assert t.data == np.arange(6, dtype="<f4").tobytes()
    np.testing.assert_array_equal(tensor_to_numpy(t, "t"), arr)


def test_bfloat16_decodes_to_float32() -> None:
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    t = pb.Tensor(dtype=pb.DTYPE_BFLOAT16, shape=[3], data=bits.tobytes())
    np.testing.assert_array_equal(tensor_to_numpy(t, "t"), values)


def test_byte_count_mismatch_names_field() -> None:
    t = numpy_to_tensor(np.zeros(14, np.float32))
    t.data = t.data[:-4]
    with pytest.raises(WireError) as err:
        tensor_to_numpy(t, "observation.state")
    assert err.value.field == "observation.state.data"
    assert "needs 56 bytes, got 52" in str(err.value)


def test_unknown_dtype_and_negative_shape_are_refused() -> None:
    with pytest.raises(WireError, match=r"observation.state.dtype: unknown or unspecified dtype"):
        tensor_to_numpy(pb.Tensor(dtype=pb.DTYPE_UNSPECIFIED, shape=[1], data=b"\0" * 4), "observation.state")
    with pytest.raises(WireError, match=r"observation.state.shape: dimensions must be >= 0"):
        tensor_to_numpy(pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[-1], data=b""), "observation.state")
    with pytest.raises(WireError, match="exceeds the limit"):
        tensor_to_numpy(pb.Tensor(dtype=pb.DTYPE_UINT8, shape=[1 << 20, 1 << 20], data=b""), "x")


def test_unsupported_numpy_dtype_is_refused() -> None:
    with pytest.raises(WireError, match="no wire representation"):
        numpy_to_tensor(np.zeros(2, np.complex64))


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_lossless_image_round_trip(encoding: str) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    msg = encode_image(rgb, encoding, capture_timestamp=12.5)
    out = decode_image(msg, "img")
    np.testing.assert_array_equal(out.rgb, rgb)
    assert out.capture_timestamp == 12.5


def test_jpeg_round_trip_keeps_colour_order() -> None:
    # A pure-red image must come back red (catches BGR/RGB swaps in the encode/decode pair).
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 220
    out = decode_image(encode_image(rgb, "jpeg", jpeg_quality=95), "img").rgb
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 20


def test_image_declared_size_must_match_payload() -> None:
    rgb = np.zeros((10, 20, 3), np.uint8)
    msg = encode_image(rgb, "jpeg")
    msg.height = 11
    with pytest.raises(WireError, match=r"cam.data: declared 11x20 but the encoded image is 10x20"):
        decode_image(msg, "cam")
    raw = encode_image(rgb, "raw")
    raw.width = 21
    with pytest.raises(WireError, match=r"cam.data: raw RGB8 10x21 needs 630 bytes, got 600"):
        decode_image(raw, "cam")


def test_garbage_jpeg_is_refused() -> None:
    msg = pb.Image(encoding=pb.IMAGE_ENCODING_JPEG, height=4, width=4, data=b"not a jpeg")
    with pytest.raises(WireError, match=r"cam.data: not a decodable JPEG/PNG"):
        decode_image(msg, "cam")


def test_request_dict_accepts_openpi_and_lerobot_key_styles() -> None:
    img = np.zeros((3, 8, 8), np.uint8)  # CHW as openpi's ALOHA client sends
    a = request_from_dict({"state": np.zeros(4), "images": {"top": img}, "prompt": "x"})
    b = request_from_dict({"observation.state": np.zeros(4, np.float32),
                           "observation.images.top": np.zeros((8, 8, 3), np.uint8), "task": "x"})
    assert a.observation.images["top"].height == 8 and a.observation.images["top"].width == 8
    assert a.observation.state.dtype == pb.DTYPE_FLOAT32  # float64 was cast, explicitly
    assert a.observation.images["top"].data == b.observation.images["top"].data
    assert a.observation.prompt == b.observation.prompt == "x"


def test_request_dict_prepares_each_checked_frame_once_before_encoding() -> None:
    seen: list[tuple[str, tuple[int, ...]]] = []

    def halve(name: str, rgb: np.ndarray) -> np.ndarray:
        seen.append((name, rgb.shape))
        return np.ascontiguousarray(rgb[::2, ::2])

    obs = {"state": np.zeros(2), "images": {"top": np.zeros((3, 8, 6), np.uint8)},  # CHW: checked and transposed
           "observation.images.wrist": np.full((4, 4, 3), 7, np.uint8)}
    req = request_from_dict(obs, prepare_image=halve)
    assert sorted(seen) == [("top", (8, 6, 3)), ("wrist", (4, 4, 3))]
    assert (req.observation.images["top"].height, req.observation.images["top"].width) == (4, 3)
    np.testing.assert_array_equal(decode_image(req.observation.images["wrist"], "w").rgb, np.full((2, 2, 3), 7))

    def refuse(name: str, rgb: np.ndarray) -> np.ndarray:
        raise WireError(f"images[{name}]", "cannot fit")

    with pytest.raises(WireError) as err:
        request_from_dict({"state": np.zeros(2), "images": {"top": np.zeros((4, 4, 3), np.uint8)}},
                          prepare_image=refuse)
    assert err.value.field == "images[top]"


@pytest.mark.parametrize(
    ("obs", "field"),
    [
        ({}, "state"),
        ({"state": np.zeros(3, np.int64)}, "state"),
        ({"state": np.zeros((2, 2))}, "state"),
        ({"state": np.zeros(2), "observation.state": np.zeros(2)}, "observation.state"),
        ({"state": np.zeros(2), "images": {"top": np.zeros((4, 4), np.uint8)}}, "images[top]"),
        ({"state": np.zeros(2), "images": {"top": np.zeros((4, 4, 3), np.float32)}}, "images[top]"),
        ({"state": np.zeros(2), "prompt": 3}, "prompt"),
        ({"state": np.zeros(2), "episode_index": 1.5}, "episode_index"),
        ({"state": np.zeros(2), "noise_seed": -1}, "noise_seed"),
        ({"state": np.zeros(2), "rtc": {"x": 1}}, "rtc"),
    ],
)
def test_request_dict_errors_name_the_key(obs: dict, field: str) -> None:
    with pytest.raises(WireError) as err:
        request_from_dict(obs)
    assert err.value.field == field


def test_response_dict_has_openpi_keys() -> None:
    actions = np.arange(6, dtype=np.float32).reshape(3, 2)
    resp = pb.InferResponse(actions=numpy_to_tensor(actions), observation_timestamp=1.5,
                            timing=pb.ServerTiming(model_ms=2.0))
    out = response_to_dict(resp)
    np.testing.assert_array_equal(out["actions"], actions)
    assert out["actions"].flags.writeable  # callers may modify the chunk in place
    assert out["policy_timing"]["infer_ms"] == 2.0
    assert out["observation_timestamp"] == 1.5


def test_rtc_fields_travel_in_the_request() -> None:
    remainder = np.arange(6, dtype=np.float64).reshape(3, 2)
    req = request_from_dict({"state": np.zeros(2), "rtc": {"previous_chunk_remainder": remainder,
                                                           "inference_delay_steps": 2, "execution_horizon": 5}})
    assert req.observation.HasField("rtc")
    rtc = req.observation.rtc
    np.testing.assert_array_equal(tensor_to_numpy(rtc.previous_chunk_remainder, "r"), remainder.astype(np.float32))
    assert (rtc.inference_delay_steps, rtc.execution_horizon) == (2, 5)
    assert not request_from_dict({"state": np.zeros(2)}).observation.HasField("rtc")
