"""A stock openpi_client.WebsocketClientPolicy against our server's openpi-compatible endpoint (numpy 2)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from policy_server.server import PolicyServer
from robodata.dataset import Dataset
from robot_client.policy_client import GrpcPolicy
from tests.wire_helpers import observation_for, running_server, sample_dataset


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sample_dataset()


@pytest.fixture(scope="module")
def server() -> Iterator[PolicyServer]:
    with running_server(websocket_port=0) as srv:
        yield srv


def ws_port(server: PolicyServer) -> int:
    assert server.websocket is not None
    return server.websocket.port


def test_stock_openpi_client_round_trip(server: PolicyServer, dataset: Dataset) -> None:
    policy = WebsocketClientPolicy(host="127.0.0.1", port=ws_port(server))
    metadata = policy.get_server_metadata()
    assert metadata["policy_type"] == "dataset"
    assert metadata["state_names"] == list(dataset.info.state_names)
    assert metadata["action_horizon"] == 50
    ep = dataset.episode(2)
    obs = observation_for(dataset, 2, 11)
    obs["state"] = obs["state"].astype(np.float64)  # openpi clients often send float64
    out = policy.infer(obs)
    np.testing.assert_array_equal(out["actions"], ep.actions[11:61])
    assert {"infer_ms"} <= set(out["server_timing"]) and "infer_ms" in out["policy_timing"]
    second = policy.infer(observation_for(dataset, 2, 12))
    assert "prev_total_ms" in second["server_timing"]  # openpi's timing key, present from the 2nd request
    # Same chunk as over gRPC.
    with GrpcPolicy(target=f"127.0.0.1:{server.port}") as grpc_policy:
        np.testing.assert_array_equal(grpc_policy.infer(observation_for(dataset, 2, 11))["actions"], out["actions"])


def test_bad_input_gets_a_field_message_and_connection_survives(server: PolicyServer, dataset: Dataset) -> None:
    policy = WebsocketClientPolicy(host="127.0.0.1", port=ws_port(server))
    bad = observation_for(dataset, 0, 0)
    bad["state"] = bad["state"][:5]
    with pytest.raises(RuntimeError) as err:
        policy.infer(bad)
    assert "INVALID_ARGUMENT: observation.state.shape: expected [14], got [5]" in str(err.value)
    missing = observation_for(dataset, 0, 0)
    missing.pop("images")
    with pytest.raises(RuntimeError, match=r"observation.images\[.*required camera is missing"):
        policy.infer(missing)
    out = policy.infer(observation_for(dataset, 0, 0))  # same connection keeps working
    assert out["actions"].shape == (50, 14)


def test_garbage_frames_are_answered_not_crashing(server: PolicyServer, dataset: Dataset) -> None:
    with connect(f"ws://127.0.0.1:{ws_port(server)}", compression=None, max_size=None) as ws:
        ws.recv()  # metadata
        for frame in (b"\xc1", b"\x93\x01\x02", msgpack_numpy.packb([1, 2, 3]), "text frame",
                      msgpack_numpy.packb({"state": {b"__ndarray__": True, b"data": b"12", b"dtype": "<f4",
                                                     b"shape": [14]}})):
            ws.send(frame)
            reply = ws.recv()
            assert isinstance(reply, str) and reply.startswith("INVALID_ARGUMENT: "), reply
        ws.send(msgpack_numpy.packb(observation_for(dataset, 0, 0)))
        assert msgpack_numpy.unpackb(ws.recv())["actions"].shape == (50, 14)


def test_healthz(server: PolicyServer) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{ws_port(server)}/healthz", timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"OK\n"


def test_websocket_token(dataset: Dataset) -> None:
    with running_server(websocket_port=0, token="tok") as srv:
        assert srv.websocket is not None
        with pytest.raises(Exception, match="401"):
            WebsocketClientPolicy(host="127.0.0.1", port=srv.websocket.port)
        policy = WebsocketClientPolicy(host="127.0.0.1", port=srv.websocket.port, api_key="tok")
        assert policy.infer(observation_for(dataset, 0, 0))["actions"].shape == (50, 14)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.websocket.port}/", timeout=5)
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.websocket.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
