"""Round-trip latency of the wire: gRPC unary, gRPC stream, openpi websocket, and raw TCP (the limit).

Payload: N cameras of HxWx3 uint8 (default 3 x 224x224) + a 14-D float32 state; reply: the [50, 14] float32 chunk.
All servers run in separate processes on loopback (as on a real deploy machine, the client does not share the
server's interpreter). Every transport is measured end to end from the caller's view: observation dict in,
action dict out (client encode + transfer + server validate/lookup + decode).

A "prebuilt request" row isolates transport + server from client-side encoding.

Baselines in the same run:
- gRPC no-op server: the same stream against a server that answers with a canned response (grpcio's own floor);
- raw TCP request/reply: the same request bytes in, a reply of the gRPC response's size out, over a plain
  socket with a Python server (the floor for any Python transport);
- raw TCP echo: the same bytes in and the same bytes back.
Goal: gRPC stream p50 <= websocket p50, and <= 2x raw TCP echo p50.

    python bench/transport.py [--iterations 1000] [--cameras 3] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

STATE_NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in
                    ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper"))


# ---------------------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------------------

def make_dataset(cameras: int, size: int) -> Any:
    """A one-episode in-memory dataset with `cameras` cameras of size x size (the dataset policy's input)."""
    from robodata.dataset import CameraInfo, Dataset, DatasetInfo, Episode

    length = 200
    rng = np.random.default_rng(0)
    actions = rng.normal(size=(length, 14)).astype(np.float32)
    cams = tuple(CameraInfo(f"cam{i}", size, size, f"observation.images.cam{i}") for i in range(cameras))
    info = DatasetInfo(format="memory", path=Path("bench-transport"), fps=50.0, num_episodes=1, num_frames=length,
                       state_names=STATE_NAMES, action_names=STATE_NAMES, cameras=cams, tasks=("bench",))
    episode = Episode(index=0, task="bench", timestamps=np.arange(length) / 50.0, states=actions.copy(),
                      actions=actions, camera_names=tuple(c.name for c in cams))

    class MemoryDataset(Dataset):
        def __init__(self) -> None:
            self.info = info

        def episode_indices(self) -> list[int]:
            return [0]

        def episode(self, index: int) -> Episode:
            return episode

    return MemoryDataset()


def serve_policy(cameras: int, size: int) -> None:
    from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
    from policy_server.server import PolicyServer, ServerConfig

    policy = DatasetPolicy(DatasetPolicyConfig(dataset=Path("memory"), action_horizon=50),
                           dataset=make_dataset(cameras, size))
    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0, websocket_port=0)).start()
    assert server.websocket is not None
    print(f"READY {server.port} {server.websocket.port}", flush=True)
    sys.stdin.read()  # parent closes stdin to stop us
    server.stop(grace=0.1)


def serve_noop_grpc() -> None:
    """The same service answering every stream message with one canned response: grpcio's own floor."""
    from concurrent import futures

    import grpc

    from policy_server.server import grpc_channel_options
    from protos import policy_pb2 as pb
    from protos import policy_pb2_grpc as pb_grpc
    from protos.malloc_tuning import tune_malloc_for_large_messages

    tune_malloc_for_large_messages()
    canned = pb.StreamInferResponse(response=pb.InferResponse(actions=pb.Tensor(
        dtype=pb.DTYPE_FLOAT32, shape=[50, 14], data=bytes(50 * 14 * 4))))

    class Noop(pb_grpc.PolicyServiceServicer):
        def GetMetadata(self, request: Any, context: Any) -> Any:
            return pb.PolicyMetadata()

        def InferStream(self, request_iterator: Any, context: Any) -> Any:
            for request in request_iterator:
                canned.request_id = request.request_id
                yield canned

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=grpc_channel_options(1 << 25, 1 << 25))
    pb_grpc.add_PolicyServiceServicer_to_server(Noop(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"READY {port}", flush=True)
    sys.stdin.read()
    server.stop(0)


def _recv_exact(conn: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def serve_tcp() -> None:
    """Header (u32 bytes_in, u32 bytes_out), then bytes_in payload; answer bytes_out bytes."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(f"READY {listener.getsockname()[1]}", flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    header = bytearray(8)
    buf = bytearray(64 * 1024 * 1024)
    view = memoryview(buf)
    while _recv_exact(conn, memoryview(header)):
        n_in, n_out = struct.unpack("<II", header)
        if not _recv_exact(conn, view[:n_in]):
            break
        conn.sendall(view[:n_out])


# ---------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------

def spawn(args: list[str]) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        proc.kill()
        raise RuntimeError(f"child {args} failed to start")
    return proc, line[1:]


def measure(fn: Callable[[], Any], iterations: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(iterations)
    for i in range(iterations):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--serve-policy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-tcp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-noop-grpc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_policy:
        serve_policy(args.cameras, args.size)
        return 0
    if args.serve_tcp:
        serve_tcp()
        return 0
    if args.serve_noop_grpc:
        serve_noop_grpc()
        return 0

    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    from robot_client.policy_client import GrpcPolicy

    rng = np.random.default_rng(1)
    obs = {
        # The dataset's own state at the queried step (make_dataset uses states == actions, seed 0).
        "state": np.random.default_rng(0).normal(size=(200, 14)).astype(np.float32)[10],
        "images": {f"cam{i}": rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
                   for i in range(args.cameras)},
        "prompt": "bench",
        "episode_index": 0,
        "step_index": 10,
    }
    policy_proc, (grpc_port, ws_port) = spawn(["--serve-policy", "--cameras", str(args.cameras),
                                               "--size", str(args.size)])
    tcp_proc, (tcp_port,) = spawn(["--serve-tcp"])
    noop_proc, (noop_port,) = spawn(["--serve-noop-grpc"])
    results: dict[str, np.ndarray] = {}
    try:
        unary = GrpcPolicy(target=f"127.0.0.1:{grpc_port}")
        stream = GrpcPolicy(target=f"127.0.0.1:{grpc_port}", streaming=True)
        noop = GrpcPolicy(target=f"127.0.0.1:{noop_port}", streaming=True)
        ws = WebsocketClientPolicy(host="127.0.0.1", port=int(ws_port))
        request = unary.build_request(obs)
        request_bytes = request.SerializeToString()
        response_bytes = len(unary.infer_request(request).SerializeToString())
        expected = unary.infer(obs)["actions"]
        for policy in (stream, ws):
            assert np.array_equal(policy.infer(obs)["actions"], expected), "transports disagree"

        sock = socket.create_connection(("127.0.0.1", int(tcp_port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reply = bytearray(len(request_bytes))

        def tcp(n_out: int) -> Callable[[], None]:
            header = struct.pack("<II", len(request_bytes), n_out)

            def call() -> None:
                sock.sendall(header)
                sock.sendall(request_bytes)
                _recv_exact(sock, memoryview(reply)[:n_out])
            return call

        cases: dict[str, Callable[[], Any]] = {
            "gRPC unary (GrpcPolicy)": lambda: unary.infer(obs),
            "gRPC stream (GrpcPolicy, streaming)": lambda: stream.infer(obs),
            "gRPC stream, prebuilt request (transport + server only)": lambda: stream.infer_request(request),
            "gRPC stream, prebuilt request, no-op server (grpcio floor)": lambda: noop.infer_request(request),
            "websocket (stock openpi-client)": lambda: ws.infer(obs),
            "raw TCP request/reply (baseline)": tcp(response_bytes),
            "raw TCP echo (baseline)": tcp(len(request_bytes)),
        }
        # Interleave the cases in rounds so slow drifts of a noisy machine hit all of them alike.
        rounds = 5
        per_round = max(1, args.iterations // rounds)
        for fn in cases.values():
            measure(fn, 0, args.warmup)
        for _ in range(rounds):
            for name, fn in cases.items():
                got = measure(fn, per_round, 5)
                results[name] = np.concatenate([results.get(name, np.empty(0)), got])
        sock.close()
        for client in (unary, stream, noop):
            client.close()
    finally:
        for proc in (policy_proc, tcp_proc, noop_proc):
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    payload = len(request_bytes)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, Python "
          f"{platform.python_version()}")
    print(f"payload: {args.cameras} x {args.size}x{args.size}x3 uint8 + 14 float32 = request {payload} bytes "
          f"(protobuf), reply {response_bytes} bytes; {len(next(iter(results.values())))} round trips each\n")
    print("| transport | p50 ms | p90 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    p50 = {}
    for name, lat in results.items():
        p50[name] = float(np.percentile(lat, 50))
        print(f"| {name} | {p50[name]:.3f} | {np.percentile(lat, 90):.3f} | {np.percentile(lat, 99):.3f} | "
              f"{lat.mean():.3f} |")
    stream_p50 = p50["gRPC stream (GrpcPolicy, streaming)"]
    ws_p50 = p50["websocket (stock openpi-client)"]
    echo_p50 = p50["raw TCP echo (baseline)"]
    floor_p50 = p50["gRPC stream, prebuilt request, no-op server (grpcio floor)"]
    print(f"\nratios (p50): stream/websocket = {stream_p50 / ws_p50:.2f} (goal <= 1), "
          f"stream/raw TCP echo = {stream_p50 / echo_p50:.2f} (goal <= 2), "
          f"grpcio floor/raw TCP echo = {floor_p50 / echo_p50:.2f}, "
          f"unary/stream = {p50['gRPC unary (GrpcPolicy)'] / stream_p50:.2f}")
    print(f"goal stream <= websocket: {'met' if stream_p50 <= ws_p50 else 'NOT met'}; "
          f"goal stream <= 2x raw echo: {'met' if stream_p50 <= 2 * echo_p50 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
