"""Load and abuse of a real policy server process: many concurrent clients for minutes, and fuzzed requests.

    python bench/load.py clients [--clients 8] [--seconds 180]
        N clients (threads, one gRPC stream each, sample-dataset observations with images) against one
        `python -m policy_server serve --policy dataset` process; the server's RSS is sampled every second.
        Prints requests/s, latency p50/p99, errors, and RSS at start / after warm-up / end with the slope over
        the second half (MiB/min). Baseline in the same run: the same load with 1 client.
        Held: no error, RSS flat after warm-up (slope well under 1 MiB/min).
    python bench/load.py fuzz [--count 10000] [--seed 0]
        `count` requests, each a valid serialized InferRequest mutated at random (bit flips, truncation,
        splices, byte insertions) or structurally corrupted (wrong shapes, dtypes, NaN, huge/negative sizes,
        missing fields), sent raw over gRPC. Held: the server never crashes or hangs; every answer is OK or
        INVALID_ARGUMENT (never INTERNAL/UNKNOWN); after the fuzz, a valid request is served correctly; RSS
        does not grow with the count.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from protos import policy_pb2 as pb  # noqa: E402
from tests.wire_helpers import SAMPLE_DATASET, observation_for, sample_dataset  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class ServerProcess:
    def __init__(self) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "policy_server", "serve", "--policy", "dataset", "--dataset", str(SAMPLE_DATASET),
             "--port", str(self.port), "--log-level", "ERROR"],
            cwd=REPO_ROOT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _percentiles(values: list[float]) -> str:
    a = np.asarray(values) * 1e3
    return f"p50 {np.percentile(a, 50):.2f} ms, p99 {np.percentile(a, 99):.2f} ms"


def clients(n_clients: int, seconds: float, server: ServerProcess) -> dict[str, float]:
    from robot_client.policy_client import GrpcPolicy, GrpcPolicyConfig

    ds = sample_dataset()
    observations = [observation_for(ds, e, k) for e in range(2) for k in range(0, 60, 3)]
    latencies: list[list[float]] = [[] for _ in range(n_clients)]
    errors: Counter[str] = Counter()
    rss: list[tuple[float, float]] = []
    stop = threading.Event()

    def client(i: int) -> None:
        with GrpcPolicy(GrpcPolicyConfig(target=f"127.0.0.1:{server.port}", streaming=True, timeout_s=5.0)) as p:
            k = i
            while not stop.is_set():
                obs = observations[k % len(observations)]
                t0 = time.perf_counter()
                try:
                    p.infer(obs)
                    latencies[i].append(time.perf_counter() - t0)
                except Exception as exc:
                    errors[type(exc).__name__] += 1
                k += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() - t_start < seconds:
        rss.append((time.monotonic() - t_start, _rss_mib(server.proc.pid)))
        time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    elapsed = time.monotonic() - t_start
    flat = [x for per in latencies for x in per]
    half = [(t, r) for t, r in rss if t >= seconds / 2]
    slope = float(np.polyfit([t for t, _ in half], [r for _, r in half], 1)[0] * 60) if len(half) > 2 else 0.0
    warm = next((r for t, r in rss if t >= min(10.0, seconds / 4)), rss[-1][1])
    print(f"  {n_clients} clients, {elapsed:.0f} s: {len(flat) / elapsed:.0f} req/s, {_percentiles(flat)}, "
          f"errors {dict(errors) or 0}; server RSS start {rss[0][1]:.0f} MiB, after warm-up {warm:.0f} MiB, "
          f"end {rss[-1][1]:.0f} MiB, slope over the second half {slope:+.2f} MiB/min")
    return {"requests": len(flat), "errors": sum(errors.values()), "slope": slope}


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del buf[rng.randrange(len(buf)):]
    elif kind == 2:  # random bytes inserted
        i = rng.randrange(len(buf))
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == 3:  # a slice duplicated elsewhere (repeated fields, overlapping lengths)
        i, j = sorted(rng.randrange(len(buf)) for _ in range(2))
        k = rng.randrange(len(buf))
        buf[k:k] = buf[i:j][:4096]
    else:  # varint-sized garbage at the start
        buf[: rng.randint(1, 8)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(buf)


def _structural(request: pb.InferRequest, rng: random.Random) -> bytes:
    r = pb.InferRequest()
    r.CopyFrom(request)
    obs = r.observation
    choice = rng.randrange(8)
    if choice == 0:
        obs.state.shape[:] = [rng.choice([0, 13, 15, -1, 2**31 - 1])]
    elif choice == 1:
        obs.state.data = np.full(14, np.nan, np.float32).tobytes()
    elif choice == 2:
        obs.state.dtype = rng.choice([pb.DTYPE_UNSPECIFIED, pb.DTYPE_FLOAT64, pb.DTYPE_BFLOAT16, 99])
    elif choice == 3 and obs.images:
        obs.images[rng.choice(sorted(obs.images))].height = rng.choice([0, 1, 65535, 2**32 - 1])
    elif choice == 4 and obs.images:
        image = obs.images[rng.choice(sorted(obs.images))]
        image.data = image.data[: rng.randrange(max(1, len(image.data)))]
    elif choice == 5:
        obs.prompt = "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randint(0, 5000)))
    elif choice == 6:
        obs.ClearField("state")
    else:
        obs.timestamp = rng.choice([float("nan"), float("inf"), -1e300])
    return r.SerializeToString()


def fuzz(count: int, seed: int, server: ServerProcess) -> dict[str, float]:
    import grpc

    from protos.dicts import request_from_dict

    ds = sample_dataset()
    valid = request_from_dict(observation_for(ds, 0, 5))
    valid_bytes = valid.SerializeToString()
    rng = random.Random(seed)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}",
                                    options=[("grpc.max_send_message_length", 64 * 2**20)])
    service = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
    infer = channel.unary_unary(f"/{service}/Infer", request_serializer=lambda b: b,
                                response_deserializer=pb.InferResponse.FromString)
    codes: Counter[str] = Counter()
    bad: list[str] = []
    rss_start = _rss_mib(server.proc.pid)
    t0 = time.monotonic()
    for i in range(count):
        payload = _mutate(valid_bytes, rng) if i % 2 else _structural(valid, rng)
        try:
            infer(payload, timeout=10)
            codes["OK"] += 1
        except grpc.RpcError as exc:
            code = exc.code().name
            codes[code] += 1
            if code not in ("INVALID_ARGUMENT",) and len(bad) < 5:
                bad.append(f"request {i}: {code} {exc.details()}")
        if not server.alive():
            raise SystemExit(f"the server died at fuzzed request {i}")
    elapsed = time.monotonic() - t0
    response = infer(valid_bytes, timeout=10)
    served = list(response.actions.shape) == [50, 14]
    rss_end = _rss_mib(server.proc.pid)
    print(f"  {count} fuzzed requests in {elapsed:.0f} s: {dict(codes)}; a valid request after: "
          f"{'served' if served else 'NOT served'}; server RSS {rss_start:.0f} -> {rss_end:.0f} MiB")
    for line in bad:
        print(f"  unexpected: {line}")
    channel.close()
    return {"unexpected": float(sum(v for k, v in codes.items() if k not in ("OK", "INVALID_ARGUMENT")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("clients")
    c.add_argument("--clients", type=int, default=8)
    c.add_argument("--seconds", type=float, default=180.0)
    f = sub.add_parser("fuzz")
    f.add_argument("--count", type=int, default=10_000)
    f.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server = ServerProcess()
    try:
        from robot_client.policy_client import GrpcPolicy

        GrpcPolicy(target=f"127.0.0.1:{server.port}", connect_timeout_s=60).close()  # wait until it serves
        if args.command == "clients":
            print(f"baseline: 1 client for {min(args.seconds, 30):.0f} s")
            clients(1, min(args.seconds, 30.0), server)
            print(f"load: {args.clients} clients for {args.seconds:.0f} s")
            clients(args.clients, args.seconds, server)
        else:
            fuzz(args.count, args.seed, server)
        if not server.alive():
            raise SystemExit("the server is not alive at the end")
    finally:
        server.close()


if __name__ == "__main__":
    main()
