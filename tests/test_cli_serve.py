"""`python -m policy_server serve` as a real process: starts, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np

from robot_client.policy_client import GrpcPolicy
from tests.wire_helpers import REPO_ROOT, SAMPLE_DATASET, observation_for, sample_dataset


def test_serve_process_round_trip_and_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "policy_server", "serve", "--policy", "dataset", "--dataset", str(SAMPLE_DATASET),
         "--port", "0", "--horizon", "20"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY grpc=127.0.0.1:"), (line, proc.stderr.read() if proc.stderr else "")
        port = int(line.split("grpc=127.0.0.1:")[1].split()[0])
        dataset = sample_dataset()
        with GrpcPolicy(target=f"127.0.0.1:{port}") as policy:
            out = policy.infer(observation_for(dataset, 0, 2))
        np.testing.assert_array_equal(out["actions"], dataset.episode(0).actions[2:22])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_refuses_missing_dataset_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "policy_server", "serve", "--policy", "dataset", "--port", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "--policy dataset needs --dataset PATH" in result.stderr
