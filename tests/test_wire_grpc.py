"""Real gRPC server on loopback serving the dataset policy over the sample dataset."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from policy_norm.image_fit import fit_image
from policy_server.server import SERVICE_NAME, PolicyServer, ServerConfig
from protos import policy_pb2_grpc as pb_grpc
from protos.codec import decode_image, numpy_to_tensor
from robodata.dataset import Dataset
from robot_client.policy_client import (
    GrpcPolicy,
    PolicyRequestError,
    PolicyServerError,
    PolicyServerUnavailable,
)
from tests.wire_helpers import observation_for, running_server, sample_dataset


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sample_dataset()


@pytest.fixture(scope="module")
def server() -> Iterator[PolicyServer]:
    with running_server() as srv:
        yield srv


def client(server: PolicyServer, **kw: object) -> GrpcPolicy:
    return GrpcPolicy(target=f"127.0.0.1:{server.port}", connect_timeout_s=5.0, **kw)  # type: ignore[arg-type]


def test_metadata_describes_the_dataset(server: PolicyServer, dataset: Dataset) -> None:
    with client(server) as policy:
        md = policy.metadata
    info = dataset.info
    assert md.policy_type == "dataset"
    assert md.action_horizon == 50
    assert list(md.state_names) == list(info.state_names) and md.state_dim == 14
    assert list(md.action_names) == list(info.action_names) and md.action_dim == 14
    assert [(c.name, c.height, c.width) for c in md.cameras] == [(c.name, c.height, c.width) for c in info.cameras]
    assert md.control_fps == pytest.approx(info.fps)
    assert list(md.action_gripper_mask) == ["gripper" in n for n in info.action_names]
    assert not any(md.action_delta_mask)
    assert md.max_request_bytes == server.config.max_request_bytes
    assert md.protocol_version == 1 and md.server_version
    assert set(md.known_prompts) == set(info.tasks)


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_round_trip_returns_ground_truth(
    server: PolicyServer, dataset: Dataset, streaming: bool, encoding: str
) -> None:
    ep = dataset.episode(1)
    with client(server, streaming=streaming, image_encoding=encoding) as policy:
        for step in (0, 7, 30):
            out = policy.infer(observation_for(dataset, 1, step))
            np.testing.assert_array_equal(out["actions"], ep.actions[step : step + 50])
            assert out["actions"].dtype == np.float32
            assert out["step_index"] == step and out["episode_index"] == 1
            assert out["observation_timestamp"] == pytest.approx(ep.timestamps[step])
            assert out["server_timing"]["total_ms"] > 0
            assert out["norm_report"]["mode"] == "identity"
            assert out["warnings"] == []


def test_chunk_past_episode_end_is_padded_and_says_so(server: PolicyServer, dataset: Dataset) -> None:
    ep = dataset.episode(0)
    step = ep.length - 10
    with client(server) as policy:
        out = policy.infer(observation_for(dataset, 0, step))
    np.testing.assert_array_equal(out["actions"][:10], ep.actions[step:])
    np.testing.assert_array_equal(out["actions"][10:], np.repeat(ep.actions[-1:], 40, axis=0))
    codes = [w["code"] for w in out["warnings"]]
    assert codes == ["chunk_padded"]


def test_state_far_from_dataset_names_the_joint(server: PolicyServer, dataset: Dataset) -> None:
    obs = observation_for(dataset, 0, 5)
    obs["state"][3] += 1.0
    with client(server) as policy:
        out = policy.infer(obs)
    (warning,) = out["warnings"]
    assert warning["code"] == "state_far_from_dataset"
    assert dataset.info.state_names[3] in warning["field"]


def test_client_resizes_to_the_served_size(server: PolicyServer, dataset: Dataset) -> None:
    obs = observation_for(dataset, 0, 0)
    cam = dataset.info.cameras[0]
    obs["images"][cam.name] = np.zeros((cam.height * 2, cam.width * 2, 3), np.uint8)
    with client(server) as policy:
        out = policy.infer(obs)
    assert out["actions"].shape == (50, 14)
    with client(server, resize_images=False) as policy, pytest.raises(PolicyRequestError) as err:
        policy.infer(obs)
    assert err.value.field == f"observation.images[{cam.name}]"
    assert f"expected {cam.height}x{cam.width}" in str(err.value)


def test_client_fits_frames_with_the_method_the_metadata_names(server: PolicyServer, dataset: Dataset) -> None:
    obs = observation_for(dataset, 0, 0)
    cam = dataset.info.cameras[0]
    big = np.random.default_rng(0).integers(0, 256, (cam.height * 2, cam.width * 3, 3), dtype=np.uint8)
    del obs["images"][cam.name]
    obs[f"observation.images.{cam.name}"] = big  # the flat key style is fitted the same way
    with client(server) as policy:
        method = policy.metadata.preprocessing.image_resize
        request = policy.build_request(obs)
    assert method == "resize_with_pad"
    sent = decode_image(request.observation.images[cam.name], cam.name).rgb
    np.testing.assert_array_equal(sent, fit_image(big, cam.height, cam.width, method))


def _bad_requests(dataset: Dataset) -> list[tuple[str, dict]]:
    cams = dataset.info.cameras
    first = cams[0].name
    return [
        ("observation.state.shape", {"state": np.zeros(13, np.float32)}),
        ("observation.state[2] (left_joint3)", {"state_nan": 2}),
        (f"observation.images[{first}]", {"drop_camera": first}),
        ("observation.images[nonexistent]", {"extra_camera": "nonexistent"}),
        ("observation.episode_index", {"episode_index": 999}),
        ("observation.step_index", {"step_index": 100_000}),
    ]


def test_invalid_observations_name_the_field_and_server_keeps_serving(server: PolicyServer, dataset: Dataset) -> None:
    with client(server, resize_images=False) as policy:
        for field, change in _bad_requests(dataset):
            obs = observation_for(dataset, 0, 3)
            if "state_nan" in change:
                obs["state"][change["state_nan"]] = np.nan
            elif "drop_camera" in change:
                del obs["images"][change["drop_camera"]]
            elif "extra_camera" in change:
                obs["images"][change["extra_camera"]] = np.zeros((8, 8, 3), np.uint8)
            else:
                obs.update(change)
            with pytest.raises(PolicyRequestError) as err:
                policy.infer(obs)
            assert err.value.field.startswith(field), (field, err.value.field, str(err.value))
            assert field.split(" ")[0].split("[")[0] in str(err.value)
            # The very next valid request is served.
            out = policy.infer(observation_for(dataset, 0, 3))
            assert out["actions"].shape == (50, 14)


def test_wrong_dtype_on_the_raw_wire(server: PolicyServer, dataset: Dataset) -> None:
    with client(server) as policy:
        request = policy.build_request(observation_for(dataset, 0, 0))
    request.observation.state.CopyFrom(numpy_to_tensor(np.zeros(14, np.float64)))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.PolicyServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Infer(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "observation.state.dtype: expected float32, got float64"
    assert ("x-error-field", "observation.state.dtype") in tuple(err.value.trailing_metadata())
    channel.close()


def test_streaming_errors_are_in_band(server: PolicyServer, dataset: Dataset) -> None:
    with client(server, streaming=True) as policy:
        bad = observation_for(dataset, 0, 0)
        bad["state"] = np.zeros(3, np.float32)
        with pytest.raises(PolicyRequestError, match="observation.state.shape"):
            policy.infer(bad)
        out = policy.infer(observation_for(dataset, 0, 0))  # same session continues
        assert out["actions"].shape == (50, 14)


def test_oversized_request_is_refused_then_served(dataset: Dataset) -> None:
    with running_server(max_request_bytes=1_000_000) as srv, client(srv) as policy:
        obs = observation_for(dataset, 0, 0)
        obs["prompt"] = "x" * 1_200_000
        with pytest.raises(PolicyServerError) as err:
            policy.infer(obs)
        assert err.value.code == "RESOURCE_EXHAUSTED"
        assert policy.infer(observation_for(dataset, 0, 0))["actions"].shape == (50, 14)


def test_four_concurrent_clients_get_their_own_answers(server: PolicyServer, dataset: Dataset) -> None:
    errors: list[BaseException] = []
    episodes = dataset.episode_indices()

    def worker(k: int) -> None:
        try:
            ep_index = episodes[k % len(episodes)]
            ep = dataset.episode(ep_index)
            with client(server, streaming=bool(k % 2)) as policy:
                for step in range(0, 40, 3):
                    out = policy.infer(observation_for(dataset, ep_index, step))
                    np.testing.assert_array_equal(out["actions"], ep.action_chunk(step, 50)[0])
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert server.core.counters.requests >= 4 * 14


def test_health_and_reflection(server: PolicyServer) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                             timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert SERVICE_NAME in names
    channel.close()


def test_graceful_stop_reports_not_serving(dataset: Dataset) -> None:
    with running_server() as srv:
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        srv.health.enter_graceful_shutdown()
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
        channel.close()


def test_token_auth(dataset: Dataset) -> None:
    with running_server(token="s3cret") as srv:
        with pytest.raises(PolicyServerError) as err:
            GrpcPolicy(target=f"127.0.0.1:{srv.port}", connect_timeout_s=5.0)
        assert err.value.code == "UNAUTHENTICATED"
        with pytest.raises(PolicyServerError, match="UNAUTHENTICATED"):
            GrpcPolicy(target=f"127.0.0.1:{srv.port}", connect_timeout_s=5.0, token="wrong")
        with GrpcPolicy(target=f"127.0.0.1:{srv.port}", token="s3cret", streaming=True) as policy:
            assert policy.infer(observation_for(dataset, 0, 0))["actions"].shape == (50, 14)
        # Health stays open for orchestrators.
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        channel.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_tls(dataset: Dataset, tmp_path: Path) -> None:
    from policy_server.server import TlsConfig

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    with running_server(tls=TlsConfig(cert=cert, key=key)) as srv:
        with GrpcPolicy(target=f"127.0.0.1:{srv.port}", tls_root_cert=cert) as policy:
            assert policy.infer(observation_for(dataset, 0, 0))["actions"].shape == (50, 14)
        with pytest.raises(PolicyServerUnavailable):  # plaintext client cannot talk to a TLS server
            GrpcPolicy(target=f"127.0.0.1:{srv.port}", connect_timeout_s=1.0)


def test_client_retries_until_a_restarted_server_answers(dataset: Dataset) -> None:
    with running_server() as first:
        port = first.port
        policy = GrpcPolicy(target=f"127.0.0.1:{port}", retries=8, backoff_initial_s=0.1, backoff_max_s=0.5,
                            timeout_s=1.0)
        assert policy.infer(observation_for(dataset, 0, 0))["actions"].shape == (50, 14)
    # The server is gone; a new one comes up on the same port a little later (a restart).
    restarted: list[PolicyServer] = []

    def restart_later() -> None:
        time.sleep(0.6)
        srv = PolicyServer(first.core.policy, ServerConfig(host="127.0.0.1", port=port))
        restarted.append(srv.start())

    t = threading.Thread(target=restart_later)
    t.start()
    try:
        out = policy.infer(observation_for(dataset, 0, 1))
        assert out["step_index"] == 1
    finally:
        t.join()
        for srv in restarted:
            srv.stop(grace=0.1)
        policy.close()


def test_no_retries_means_an_immediate_typed_error(dataset: Dataset) -> None:
    with running_server() as srv:
        policy = GrpcPolicy(target=f"127.0.0.1:{srv.port}", retries=0, timeout_s=0.5)
    with pytest.raises(PolicyServerUnavailable):
        policy.infer(observation_for(dataset, 0, 0))
    policy.close()


def test_unreachable_server_is_a_typed_error() -> None:
    with pytest.raises(PolicyServerUnavailable, match="no policy server answered"):
        GrpcPolicy(target="127.0.0.1:1", connect_timeout_s=0.5)
