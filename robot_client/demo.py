"""End-to-end demo on the embedded default (the README's first command).

Starts a real policy server process on loopback serving the bundled sample dataset with the dataset policy,
then plays the robot side: for frames of each episode it sends the recorded observation (state, camera images,
prompt) over gRPC, prints what came back, and checks that the chunk is exactly the dataset's next H actions.
It exits 0 only if every chunk matched and the server shut down cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replay.open import open_dataset
from robot_client.policy_client import GrpcPolicy, GrpcPolicyConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO_ROOT / "data" / "sample_yam"


@dataclass(frozen=True)
class DemoConfig:
    dataset: Path = DEFAULT_DATASET
    stride: int = 15
    horizon: int = 50
    streaming: bool = True
    image_encoding: str = "raw"
    server_start_timeout_s: float = 120.0


def _start_server(config: DemoConfig) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "policy_server", "serve", "--policy", "dataset", "--dataset", str(config.dataset),
           "--host", "127.0.0.1", "--port", "0", "--horizon", str(config.horizon), "--log-level", "WARNING"]
    print(f"$ {' '.join(cmd[1:])}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    ready: list[str] = []
    reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(config.server_start_timeout_s)
    line = ready[0] if ready else ""
    if not line.startswith("READY grpc="):
        proc.kill()
        raise RuntimeError(f"policy server did not start within {config.server_start_timeout_s:.0f} s "
                           f"(exit code {proc.poll()}); see its log above")
    port = int(line.split("grpc=")[1].split()[0].rsplit(":", 1)[1])
    return proc, port


def run_demo(config: DemoConfig) -> int:
    dataset = open_dataset(config.dataset)
    info = dataset.info
    print(f"dataset {info.path.name}: {info.format}, {info.num_episodes} episodes, {info.num_frames} frames at "
          f"{info.fps:g} fps, cameras {list(info.camera_names)}")
    server, port = _start_server(config)
    mismatches = 0
    latencies: list[float] = []
    chunks = 0
    try:
        client_config = GrpcPolicyConfig(target=f"127.0.0.1:{port}", streaming=config.streaming,
                                          image_encoding=config.image_encoding)
        with GrpcPolicy(client_config) as policy:
            md = policy.metadata
            print(f"server: policy '{md.policy_type}' model '{md.model_id}', horizon {md.action_horizon}, "
                  f"{md.action_dim} action dims, control {md.control_fps:g} Hz, server {md.server_version}")
            for episode in dataset:
                policy.reset_episode(episode.index)
                print(f"episode {episode.index} ({episode.length} steps): \"{episode.task}\"")
                for step in range(0, episode.length, config.stride):
                    frame = episode.frame(step)
                    out = policy.infer({
                        "state": frame.state, "images": dict(frame.images), "prompt": frame.task,
                        "timestamp": frame.timestamp, "episode_index": episode.index, "step_index": step,
                    })
                    expected, valid = episode.action_chunk(step, config.horizon)
                    ok = bool(np.array_equal(out["actions"], expected))
                    mismatches += 0 if ok else 1
                    chunks += 1
                    latencies.append(out["client_timing"]["round_trip_ms"])
                    first = out["actions"][0]
                    grippers = [f"{n}={first[i]:.2f}" for i, n in enumerate(md.action_names) if "gripper" in n]
                    notes = ", ".join(w["code"] for w in out["warnings"]) or "no warnings"
                    print(f"  step {step:4d}: chunk {list(out['actions'].shape)} "
                          f"{'matches dataset' if ok else 'MISMATCH'} ({valid} real rows), first action "
                          f"{md.action_names[0]}={first[0]:+.3f} {' '.join(grippers)}; "
                          f"{out['client_timing']['round_trip_ms']:.2f} ms; {notes}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server_code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server_code = -9
    lat = np.asarray(latencies)
    print(f"\n{chunks} chunks, {mismatches} mismatches; round trip p50 {np.percentile(lat, 50):.2f} ms, "
          f"p99 {np.percentile(lat, 99):.2f} ms; server exit code {server_code}")
    ok = mismatches == 0 and chunks > 0 and server_code == 0
    print("DEMO PASSED" if ok else "DEMO FAILED")
    return 0 if ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="dataset to serve and replay")
    parser.add_argument("--stride", type=int, default=DemoConfig.stride, help="query every K-th frame")
    parser.add_argument("--horizon", type=int, default=DemoConfig.horizon, help="chunk length H")
    parser.add_argument("--unary", action="store_true", help="use unary calls instead of the stream")
    parser.add_argument("--image-encoding", choices=["raw", "jpeg", "png"], default="raw")


def main_from_args(args: argparse.Namespace) -> int:
    # The demo prints every server warning itself; keep the client's log for errors only.
    logging.getLogger("robot_client.policy_client").setLevel(logging.ERROR)
    start = time.perf_counter()
    code = run_demo(DemoConfig(dataset=args.dataset, stride=args.stride, horizon=args.horizon,
                               streaming=not args.unary, image_encoding=args.image_encoding))
    print(f"demo took {time.perf_counter() - start:.1f} s")
    return code
