"""The launch scripts: help, refusals that say what to do, and serve.sh actually serving (dataset policy)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from robot_client.policy_client import GrpcPolicy
from tests.wire_helpers import REPO_ROOT, SAMPLE_DATASET

LAUNCH = REPO_ROOT / "launch"
ENV = {**os.environ, "SKIP_SETUP": "1"}


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LAUNCH / script), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, env=ENV)


@pytest.mark.parametrize("script", ["serve.sh", "client.sh", "replay.sh", "setup.sh", "test.sh", "demo.sh"])
def test_every_launcher_has_help(script: str) -> None:
    result = _run(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize(("script", "args", "message"), [
    ("serve.sh", [], "give --checkpoint DIR"),
    ("serve.sh", ["--checkpoint", "/no/such/dir"], "checkpoint directory '/no/such/dir' does not exist"),
    ("serve.sh", ["--dataset", str(SAMPLE_DATASET), "--tls-cert", "x.pem"], "TLS needs both --tls-cert and --tls-key"),
    ("serve.sh", ["--bogus"], "unknown option '--bogus'"),
    ("client.sh", [], "give --server HOST:PORT"),
    ("client.sh", ["--server", "nohostport"], "--server must be HOST:PORT"),
    ("client.sh", ["--server", "h:1", "--robot", "arm"], "--robot must be sim, yam or yam-process"),
    ("replay.sh", [], "give --dataset PATH"),
    ("replay.sh", ["--dataset", "/no/such/data"], "dataset '/no/such/data' does not exist"),
])
def test_refusals_say_what_to_do(script: str, args: list[str], message: str) -> None:
    result = _run(script, *args)
    assert result.returncode == 2
    assert message in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_sh_serves_the_dataset_policy_and_logs(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([str(LAUNCH / "serve.sh"), "--dataset", str(SAMPLE_DATASET), "--port", str(port),
                             "--log-dir", str(tmp_path)], cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with GrpcPolicy(target=f"127.0.0.1:{port}") as policy:
                    assert len(policy.metadata.action_names) == 14
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    logs = list(tmp_path.glob("serve-*.log"))
    assert len(logs) == 1 and str(port) in logs[0].read_text()
