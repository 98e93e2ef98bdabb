"""Several policy server processes on loopback behind the client's round-robin balancer with health checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from robot_client.policy_client import GrpcPolicy, GrpcPolicyConfig, PolicyRequestError
from robot_client.replicas import ReplicaError, parse_target
from tests.wire_helpers import REPO_ROOT, SAMPLE_DATASET, observation_for, sample_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(name: str, horizon: int = 20) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A real `python -m policy_server serve` process (dataset policy) named `name`."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "policy_server", "serve", "--policy", "dataset", "--dataset", str(SAMPLE_DATASET),
         "--horizon", str(horizon), "--port", str(port), "--replica-name", name, "--log-level", "WARNING"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield port, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_targets_parse() -> None:
    assert not parse_target("127.0.0.1:50051").balanced
    both = parse_target("127.0.0.1:1, 127.0.0.2:2")
    assert both.balanced and both.channel_target == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert parse_target("[::1]:1,[::1]:2").channel_target == "ipv6:[::1]:1,[::1]:2"
    assert parse_target("dns:///policy.internal:50051").balanced
    with pytest.raises(ReplicaError, match="takes IP addresses"):
        parse_target("gpu-a:1,gpu-b:1")
    with pytest.raises(ReplicaError, match="names an address twice"):
        parse_target("127.0.0.1:1,127.0.0.1:1")
    with pytest.raises(ReplicaError, match="must be HOST:PORT"):
        parse_target("127.0.0.1")


def test_round_robin_spreads_calls_and_survives_a_replica_dying() -> None:
    ds = sample_dataset()
    with _server("gpu-a") as (port_a, proc_a), _server("gpu-b") as (port_b, _):
        config = GrpcPolicyConfig(target=f"127.0.0.1:{port_a},127.0.0.1:{port_b}", connect_timeout_s=60, retries=3)
        with GrpcPolicy(config) as policy:
            answered = Counter(policy.infer(observation_for(ds, 0, k))["replica"] for k in range(20))
            assert set(answered) == {"gpu-a", "gpu-b"} and min(answered.values()) >= 5, answered
            os.killpg(proc_a.pid, signal.SIGKILL)
            proc_a.wait(timeout=30)
            after = Counter(policy.infer(observation_for(ds, 0, k))["replica"] for k in range(20))
    # Every call still got a chunk (the client retries UNAVAILABLE), and only from the live replica.
    assert after == Counter({"gpu-b": 20}), after


def test_replicas_serving_different_policies_are_refused() -> None:
    with _server("gpu-a", horizon=20) as (port_a, _), _server("gpu-b", horizon=30) as (port_b, _):
        config = GrpcPolicyConfig(target=f"127.0.0.1:{port_a},127.0.0.1:{port_b}", connect_timeout_s=60)
        with pytest.raises(PolicyRequestError, match="action_horizon of 127.0.0.1:.* is 30.* 20"):
            GrpcPolicy(config)
