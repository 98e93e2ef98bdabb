"""Property-based fuzzing of malformed observations against a real server on loopback.

Every malformed request must be answered INVALID_ARGUMENT with a message that starts with the offending field
path ("observation.<...>: ..."), and a valid request sent right after must be served correctly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from policy_server.server import PolicyServer
from protos import policy_pb2 as pb
from protos import policy_pb2_grpc as pb_grpc
from protos.codec import encode_image, numpy_to_tensor
from robodata.dataset import Dataset
from tests.wire_helpers import running_server, sample_dataset

FIELD_MESSAGE = re.compile(r"^(request|observation(\.[a-z_]+|\[[^\]]*\]|\s\([a-z0-9_]+\))*(\.[a-z_/]+)*): \S")


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sample_dataset()


@pytest.fixture(scope="module")
def server() -> Iterator[PolicyServer]:
    with running_server(max_request_bytes=4 * 1024 * 1024) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: PolicyServer) -> Iterator[pb_grpc.PolicyServiceStub]:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    yield pb_grpc.PolicyServiceStub(channel)
    channel.close()


def valid_request(dataset: Dataset, episode: int = 0, step: int = 4) -> pb.InferRequest:
    ep = dataset.episode(episode)
    obs = pb.Observation(
        state=numpy_to_tensor(ep.states[step]),
        prompt=ep.task,
        timestamp=float(ep.timestamps[step]),
        episode_index=episode,
        step_index=step,
    )
    for cam in dataset.info.cameras:
        obs.images[cam.name].CopyFrom(encode_image(np.zeros((cam.height, cam.width, 3), np.uint8)))
    return pb.InferRequest(observation=obs, request_id=1)


# Each strategy yields a function that makes a valid request invalid (by construction, never by chance).
def _state_mutations() -> st.SearchStrategy:
    wrong_dtype = st.sampled_from([pb.DTYPE_FLOAT64, pb.DTYPE_INT32, pb.DTYPE_UINT8, pb.DTYPE_BFLOAT16,
                                   pb.DTYPE_UNSPECIFIED, 57])
    wrong_shape = st.lists(st.integers(-3, 40), min_size=0, max_size=3).filter(lambda s: s != [14])
    bad_value = st.sampled_from([math.nan, math.inf, -math.inf])

    def set_dtype(d: int):
        def f(r: pb.InferRequest) -> None:
            r.observation.state.dtype = d  # type: ignore[assignment]
        return f

    def set_shape(shape: list[int]):
        def f(r: pb.InferRequest) -> None:
            del r.observation.state.shape[:]
            r.observation.state.shape.extend(shape)
        return f

    def set_value(args: tuple[int, float]):
        def f(r: pb.InferRequest) -> None:
            arr = np.frombuffer(r.observation.state.data[: len(r.observation.state.data) // 4 * 4], np.float32).copy()
            if len(arr) > args[0]:  # an earlier mutation may have emptied the state
                arr[args[0]] = args[1]
                r.observation.state.data = arr.tobytes()
            else:
                r.observation.ClearField("state")
        return f

    def truncate(n: int):
        def f(r: pb.InferRequest) -> None:
            r.observation.state.data = r.observation.state.data[:n]
        return f

    return st.one_of(
        wrong_dtype.map(set_dtype),
        wrong_shape.map(set_shape),
        st.tuples(st.integers(0, 13), bad_value).map(set_value),
        st.integers(0, 55).map(truncate),
        st.just(lambda r: r.observation.ClearField("state")),
    )


def _image_mutations(camera_names: list[str]) -> st.SearchStrategy:
    cams = st.sampled_from(camera_names)

    def drop(name: str):
        return lambda r: r.observation.images.pop(name)

    def extra(name: str):
        def f(r: pb.InferRequest) -> None:
            r.observation.images["x" + name].CopyFrom(encode_image(np.zeros((4, 4, 3), np.uint8)))
        return f

    def resize(args: tuple[str, int, int]):
        def f(r: pb.InferRequest) -> None:
            img = r.observation.images[args[0]]  # (re)creates the camera if an earlier mutation dropped it
            img.height = max(0, img.height + (args[1] or 1))
            img.width = max(0, img.width + args[2])
        return f

    def corrupt(args: tuple[str, int, bytes]):
        name, encoding, payload = args

        def f(r: pb.InferRequest) -> None:
            img = r.observation.images[name]
            img.encoding = encoding  # type: ignore[assignment]
            img.data = payload
        return f

    def nan_time(name: str):
        def f(r: pb.InferRequest) -> None:
            r.observation.images[name].capture_timestamp = math.nan
        return f

    return st.one_of(
        cams.map(drop),
        cams.map(extra),
        st.tuples(cams, st.integers(-5, 5), st.integers(-5, 5)).map(resize),
        st.tuples(cams, st.sampled_from([0, 1, 2, 3, 9]), st.binary(max_size=64)).map(corrupt),
        cams.map(nan_time),
    )


def _other_mutations() -> st.SearchStrategy:
    def set_attr(args: tuple[str, float]):
        def f(r: pb.InferRequest) -> None:
            setattr(r.observation, args[0], type(getattr(r.observation, args[0]))(args[1]))
        return f

    def rtc(delay: int):
        def f(r: pb.InferRequest) -> None:
            r.observation.rtc.inference_delay_steps = delay
        return f

    return st.one_of(
        st.tuples(st.just("timestamp"), st.sampled_from([math.nan, math.inf, -1.0])).map(set_attr),
        st.tuples(st.sampled_from(["episode_index", "step_index"]), st.integers(-(2**40), -1)).map(set_attr),
        st.tuples(st.just("episode_index"), st.integers(10_000, 2**40)).map(set_attr),
        st.tuples(st.just("step_index"), st.integers(10_000, 2**40)).map(set_attr),
        st.integers(0, 100).map(rtc),
        st.just(lambda r: r.ClearField("observation")),
        st.just(lambda r: setattr(r.observation, "prompt", "p" * 5000)),
    )


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_observations_get_field_errors_and_service_continues(
    data: st.DataObject, stub: pb_grpc.PolicyServiceStub, dataset: Dataset
) -> None:
    mutation = st.one_of(_state_mutations(), _image_mutations(list(dataset.info.camera_names)), _other_mutations())
    mutations = data.draw(st.lists(mutation, min_size=1, max_size=3))
    request = valid_request(dataset)
    for mutate in mutations:
        if not request.HasField("observation"):
            break
        mutate(request)
    # Two resizes can cancel out (+1 then -1); only a request that differs from the valid one is malformed.
    assume(request != valid_request(dataset))
    with pytest.raises(grpc.RpcError) as err:
        stub.Infer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert FIELD_MESSAGE.match(err.value.details() or ""), err.value.details()
    # A valid request right after is served with the right chunk.
    ok = stub.Infer(valid_request(dataset, 1, 3), timeout=10)
    np.testing.assert_array_equal(
        np.frombuffer(ok.actions.data, np.float32).reshape(50, 14), dataset.episode(1).action_chunk(3, 50)[0]
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=0, max_size=512))
def test_random_bytes_on_the_wire_never_break_the_server(
    payload: bytes, server: PolicyServer, stub: pb_grpc.PolicyServiceStub, dataset: Dataset
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    raw = channel.unary_unary("/policy.v1.PolicyService/Infer", request_serializer=None,
                              response_deserializer=None)
    try:
        raw(payload, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
        assert FIELD_MESSAGE.match(exc.details() or ""), exc.details()
    else:
        pytest.fail("random bytes were answered as if they were a valid observation")
    finally:
        channel.close()
    assert stub.Infer(valid_request(dataset), timeout=10).actions.shape == [50, 14]
