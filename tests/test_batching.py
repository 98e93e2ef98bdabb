"""Dynamic batching: the batcher alone (fake policy) and a tiny Pi0.5 served over real gRPC on loopback.

Tolerance: batched chunks equal the unbatched server's within 1e-5 absolute (fp32 on CPU; the only difference is
the batch dimension of the matrix products, measured at ~2e-7).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from policy_norm.config import RangeThresholds
from policy_server.batching import Batcher, BatcherClosed, BatchingConfig, BatchQueueFull
from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
from policy_server.policy import BatchItem, PolicyOutput
from policy_server.server import PolicyServer, ServerConfig
from policy_server.validate import ObservationInput
from robodata.dataset import Dataset
from robot_client.policy_client import (
    GrpcPolicy,
    PolicyClientError,
    PolicyRequestError,
    PolicyServerError,
    PolicyServerUnavailable,
)
from tests.pi05_helpers import make_servable_checkpoint
from tests.wire_helpers import observation_for, sample_dataset

ATOL = 1e-5
CLIENTS = 6
ROUNDS = 3


# -- the batcher alone ------------------------------------------------------------------------------------------

def _obs(i: int) -> ObservationInput:
    return ObservationInput(images={}, image_timestamps={}, state=np.full(2, i, np.float32), prompt="", timestamp=0.0,
                            episode_index=0, step_index=i)


class FakeRun:
    """run_batch that records batch sizes, echoes the step as the action, and fails items with step < 0."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.taken = 0  # items handed to run_batch so far (including a batch held at the gate)
        self.gate = gate

    def __call__(self, items: Sequence[BatchItem]) -> list[PolicyOutput | Exception]:
        self.taken += len(items)
        if self.gate is not None:
            self.gate.wait(10)
        self.sizes.append(len(items))
        return [ValueError(f"bad step {obs.step_index}") if obs.step_index < 0 else
                PolicyOutput(actions=np.full((1, 1), obs.step_index, np.float32)) for obs, _ in items]


def _submit_all(batcher: Batcher, steps: Sequence[int]) -> dict[int, Any]:
    results: dict[int, Any] = {}

    def one(step: int) -> None:
        try:
            results[step] = batcher.submit(_obs(step), None)
        except Exception as exc:
            results[step] = exc

    threads = [threading.Thread(target=one, args=(s,)) for s in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_batcher_gathers_up_to_max_batch_and_answers_each_item() -> None:
    gate = threading.Event()
    run = FakeRun(gate)
    batcher = Batcher(run, BatchingConfig(max_batch=3, max_wait_ms=200))
    results: dict[int, Any] = {}
    done = threading.Thread(target=lambda: results.update(_submit_all(batcher, [1, 2, 3, 4, -5, 6, 7])))
    done.start()
    deadline = time.monotonic() + 10
    while batcher.queued() + run.taken < 7 and time.monotonic() < deadline:  # first batch held at the gate
        time.sleep(0.01)
    gate.set()
    done.join(10)
    batcher.close()
    assert sorted(run.sizes, reverse=True)[0] == 3 and sum(run.sizes) == 7
    assert all(results[s].actions[0, 0] == s for s in (1, 2, 3, 4, 6, 7))
    assert isinstance(results[-5], ValueError) and "bad step -5" in str(results[-5])  # fails alone
    stats = batcher.stats()
    assert stats.items == 7 and stats.multi_item_batches >= 2 and stats.failed_batches == 0


def test_batcher_policy_exception_fails_that_batch_only() -> None:
    calls = {"n": 0}

    def flaky(items: Sequence[BatchItem]) -> list[PolicyOutput | Exception]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected")
        return [PolicyOutput(actions=np.zeros((1, 1), np.float32)) for _ in items]

    batcher = Batcher(flaky, BatchingConfig(max_batch=4, max_wait_ms=0))
    with pytest.raises(RuntimeError, match="injected"):
        batcher.submit(_obs(1), None)
    assert batcher.submit(_obs(2), None).actions.shape == (1, 1)  # still serving
    assert batcher.stats().failed_batches == 1
    batcher.close()


def test_batcher_refuses_when_full_and_after_close() -> None:
    gate = threading.Event()
    run = FakeRun(gate)
    batcher = Batcher(run, BatchingConfig(max_batch=1, max_wait_ms=0, max_queue=2))
    threads = [threading.Thread(target=_submit_all, args=(batcher, [i])) for i in range(3)]
    threads[0].start()
    while run.taken < 1:  # the worker holds the first request at the gate before the others queue behind it
        time.sleep(0.01)
    for t in threads[1:]:
        t.start()
    while batcher.queued() < 2:  # one held by the worker at the gate, two queued
        time.sleep(0.01)
    with pytest.raises(BatchQueueFull, match=r"batch queue full \(2 requests waiting\)"):
        batcher.submit(_obs(9), None)
    gate.set()
    for t in threads:
        t.join(10)
    assert batcher.close() == 0
    with pytest.raises(BatcherClosed, match="shutting down"):
        batcher.submit(_obs(10), None)
    stats = batcher.stats()
    assert stats.refused_full == 1 and stats.refused_closed == 1 and stats.items == 3


def test_batching_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchingConfig(max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchingConfig(max_wait_ms=-1)
    with pytest.raises(ValueError, match="max_queue"):
        BatchingConfig(max_batch=8, max_queue=4)


# -- tiny Pi0.5 over gRPC -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sample_dataset()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_servable_checkpoint(tmp_path_factory.mktemp("ckpt") / "pi05_batching")


@pytest.fixture(scope="module")
def strict_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Strict on the state side (an out-of-range state is a per-request error naming observation.state); no joint
    limits and loose action bounds, so the random weights' chunks still pass the output side."""
    thresholds = RangeThresholds(quantile_bound=20.0, padded_bound=1e6, action_fraction=0.99)
    return make_servable_checkpoint(tmp_path_factory.mktemp("ckpt") / "pi05_strict", strict=True,
                                    thresholds=thresholds, joint_limits=None)


def _policy(checkpoint: Path) -> Pi05Policy:
    return Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device="cpu"))


Serve = Callable[..., PolicyServer]


@pytest.fixture()
def serve(checkpoint: Path) -> Iterator[Serve]:
    servers: list[PolicyServer] = []

    def start(batching: BatchingConfig | None, ckpt: Path = checkpoint) -> PolicyServer:
        srv = PolicyServer(_policy(ckpt), ServerConfig(host="127.0.0.1", port=0, batching=batching)).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop(grace=0.2)


def _client(server: PolicyServer, **config: Any) -> GrpcPolicy:
    return GrpcPolicy(target=f"127.0.0.1:{server.port}", timeout_s=30.0, **config)


def _request(dataset: Dataset, client: int, round_: int) -> dict[str, Any]:
    obs = observation_for(dataset, client % 2, 3 + 7 * client + round_)
    obs["noise_seed"] = 100 * client + round_
    return obs


def _concurrently(server: PolicyServer, requests: list[list[dict[str, Any]]],
                  **client_config: Any) -> list[list[Any]]:
    """One client per row, all sending their k-th request at the same moment; result or exception per request."""
    barrier = threading.Barrier(len(requests))
    results: list[list[Any]] = [[None] * len(row) for row in requests]

    def run(i: int) -> None:
        with _client(server, **client_config) as client:
            for k, obs in enumerate(requests[i]):
                barrier.wait(30)
                try:
                    results[i][k] = client.infer(obs)
                except Exception as exc:
                    results[i][k] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_clients_get_the_unbatched_chunks(serve: Serve,
                                                     dataset: Dataset) -> None:
    requests = [[_request(dataset, c, r) for r in range(ROUNDS)] for c in range(CLIENTS)]
    plain = serve(None)
    assert plain.core.batcher is None
    with _client(plain) as client:
        expected = [[client.infer(obs)["actions"] for obs in row] for row in requests]
    batched = serve(BatchingConfig(max_batch=8, max_wait_ms=50))
    results = _concurrently(batched, requests)
    for c in range(CLIENTS):
        for r in range(ROUNDS):
            out = results[c][r]
            assert isinstance(out, dict), out
            np.testing.assert_allclose(out["actions"], expected[c][r], rtol=0, atol=ATOL, err_msg=f"client {c} r {r}")
            assert out["server_timing"]["model_ms"] > 0
    assert batched.core.batcher is not None
    stats = batched.core.batcher.stats()
    assert stats.items == CLIENTS * ROUNDS
    assert stats.multi_item_batches >= 1, stats.sizes  # batches really formed
    assert max(stats.sizes) <= 8


def test_bad_request_in_a_batch_fails_alone_with_its_field(serve: Serve, strict_checkpoint: Path,
                                                           dataset: Dataset) -> None:
    server = serve(BatchingConfig(max_batch=8, max_wait_ms=100), strict_checkpoint)
    assert server.core.spec.norm_stats is not None
    stats = server.core.spec.norm_stats.state
    center = (np.asarray(stats.q01, np.float32) + np.asarray(stats.q99, np.float32)) / 2  # in range for sure
    requests = [[dict(_request(dataset, c, 0), state=center.copy())] for c in range(4)]
    requests[2][0]["state"][2] += 50.0  # left_joint3 far outside its stats: strict normalization refuses it
    results = _concurrently(server, requests)
    bad = results[2][0]
    assert isinstance(bad, PolicyRequestError) and bad.field == "observation.state", bad
    assert "left_joint3" in str(bad)
    for c in (0, 1, 3):
        assert isinstance(results[c][0], dict), results[c][0]
    assert server.core.batcher is not None and max(server.core.batcher.stats().sizes) > 1


def test_server_keeps_serving_after_a_policy_exception(serve: Serve,
                                                       dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(BatchingConfig(max_batch=4, max_wait_ms=50))
    policy = server.core.policy
    original = policy.infer_batch
    calls = {"n": 0}

    def fail_once(items: Sequence[BatchItem]) -> list[PolicyOutput | Exception]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure")
        return original(items)

    monkeypatch.setattr(policy, "infer_batch", fail_once)
    first = _concurrently(server, [[_request(dataset, c, 0)] for c in range(3)])
    failed = [r[0] for r in first if isinstance(r[0], PolicyServerError)]
    assert failed and all(e.code == "INTERNAL" and "RuntimeError: injected failure" in str(e) for e in failed)
    again = _concurrently(server, [[_request(dataset, c, 1)] for c in range(3)])
    assert all(isinstance(r[0], dict) for r in again), again
    assert server.core.batcher is not None and server.core.batcher.stats().failed_batches == 1


def test_shutdown_fails_queued_requests_cleanly(checkpoint: Path, dataset: Dataset,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _policy(checkpoint)
    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0,
                                               batching=BatchingConfig(max_batch=1, max_wait_ms=0))).start()
    batcher = server.core.batcher
    assert batcher is not None
    gate = threading.Event()
    original = policy.infer_batch

    def held(items: Sequence[BatchItem]) -> list[PolicyOutput | Exception]:
        gate.wait(30)  # the first batch occupies the worker until the test lets it go
        return original(items)

    monkeypatch.setattr(policy, "infer_batch", held)
    results: list[Any] = [None] * 4
    clients = [_client(server, retries=0) for _ in range(4)]

    def run(i: int) -> None:
        try:
            results[i] = clients[i].infer(_request(dataset, i, 0))
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while batcher.queued() < 3 and time.monotonic() < deadline:  # one held by the worker, three queued
        time.sleep(0.01)
    assert batcher.queued() == 3
    stopper = threading.Thread(target=server.stop, kwargs={"grace": 1.5})
    t0 = time.monotonic()
    stopper.start()
    while sum(isinstance(r, Exception) for r in results) < 3 and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    gate.set()
    for t in [*threads, stopper]:
        t.join(30)
    assert not stopper.is_alive() and time.monotonic() - t0 < 10
    refused = [r for r in results if isinstance(r, PolicyServerUnavailable)]
    assert len(refused) == 3, results
    assert all("server shut down before this request ran" in str(e) for e in refused)
    # The request the worker held ran to its end: its answer arrived, or gRPC's grace ended the call first.
    held_result = [r for r in results if not any(r is e for e in refused)]
    assert len(held_result) == 1 and isinstance(held_result[0], dict | PolicyClientError), held_result
    assert not batcher.running()
    with pytest.raises(BatcherClosed):
        batcher.submit(_obs(0), None)
    for c in clients:
        c.close()


def test_batch_failure_in_the_model_is_retried_item_by_item(checkpoint: Path, dataset: Dataset,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A model error on the batch (e.g. out of memory) must not fail every request: each is retried alone."""
    policy = _policy(checkpoint)
    import cv2

    items: list[BatchItem] = []
    for i in range(3):
        frame = dataset.episode(0).frame(4 + i)
        images = {k: np.asarray(cv2.resize(v, (28, 28), interpolation=cv2.INTER_AREA), np.uint8)
                  for k, v in frame.images.items()}
        items.append((ObservationInput(images=images, image_timestamps={}, state=frame.state, prompt=frame.task,
                                       timestamp=0.0, episode_index=0, step_index=4 + i), i))
    alone = [policy.infer(obs, noise_seed=seed).actions for obs, seed in items]
    together = policy.infer_batch(items)
    original = policy.model.sample_actions

    def no_batches(inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if inputs.batch_size > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(inputs, *args, **kwargs)

    monkeypatch.setattr(policy.model, "sample_actions", no_batches)
    retried = policy.infer_batch(items)
    for a, t, r in zip(alone, together, retried, strict=True):
        assert isinstance(t, PolicyOutput) and isinstance(r, PolicyOutput)
        np.testing.assert_allclose(t.actions, a, rtol=0, atol=ATOL)
        np.testing.assert_array_equal(r.actions, a)


def test_serve_flags_build_the_batching_config() -> None:
    from policy_server.cli import build_batching, build_parser

    def parse(*flags: str) -> BatchingConfig | None:
        return build_batching(build_parser().parse_args(["serve", *flags]))

    assert parse("--dataset", "d") is None  # the dataset policy has no model to batch
    assert parse("--checkpoint", "c", "--device", "cpu") is None  # measured: no gain on CPU
    assert parse("--checkpoint", "c", "--device", "cpu", "--max-batch", "1") is None
    config = parse("--checkpoint", "c", "--device", "cpu", "--max-batch", "4", "--batch-wait-ms", "5")
    assert config == BatchingConfig(max_batch=4, max_wait_ms=5.0)
    assert parse("--dataset", "d", "--max-batch", "100") == BatchingConfig(max_batch=100, max_queue=100)
    with pytest.raises(SystemExit, match="--max-batch must be >= 1"):
        parse("--dataset", "d", "--max-batch", "0")
    with pytest.raises(SystemExit, match="--batch-wait-ms: .*max_wait_ms"):
        parse("--dataset", "d", "--max-batch", "2", "--batch-wait-ms", "-1")
