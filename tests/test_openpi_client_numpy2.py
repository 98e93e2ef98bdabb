"""The parts of openpi-client 0.1.2 we use, exercised under numpy 2 (it is installed without its numpy<2 pin)."""

from __future__ import annotations

import numpy as np
from openpi_client import base_policy, image_tools, msgpack_numpy

from robot_client.policy_client import GrpcPolicy


def test_numpy_is_2() -> None:
    assert int(np.__version__.split(".")[0]) >= 2


def test_msgpack_numpy_round_trip_under_numpy2() -> None:
    obs = {
        "state": np.linspace(-1, 1, 14, dtype=np.float32),
        "images": {"top": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)},
        "scalar": np.float64(2.5),
        "prompt": "pick",
    }
    back = msgpack_numpy.unpackb(msgpack_numpy.packb(obs))
    np.testing.assert_array_equal(back["state"], obs["state"])
    assert back["state"].dtype == np.float32
    np.testing.assert_array_equal(back["images"]["top"], obs["images"]["top"])
    assert back["scalar"] == 2.5 and back["prompt"] == "pick"
    assert not back["state"].flags.writeable  # decoded arrays are read-only views: copy before mutating


def test_resize_with_pad_geometry_under_numpy2() -> None:
    img = np.full((240, 320, 3), 200, np.uint8)
    out = image_tools.resize_with_pad(img, 224, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # 320x240 -> 224x168, padded top/bottom by 28 rows of black.
    assert (out[:28] == 0).all() and (out[-28:] == 0).all()
    assert (out[28:-28] == 200).all()
    batch = image_tools.resize_with_pad(np.stack([img, img]), 112, 112)
    assert batch.shape == (2, 112, 112, 3)


def test_grpc_policy_is_an_openpi_base_policy() -> None:
    assert issubclass(GrpcPolicy, base_policy.BasePolicy)
