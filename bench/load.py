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
    python bench/load.py robots [--policy dataset|pi05 ...] [--robots 1,16,64,256] [--seconds 4]
        A lab of robots on one server: each robot holds one InferStream on its own connection and asks for a chunk
        at 30 Hz (closed loop: the next request leaves at the first tick after the answer), the robots spread
        over a few asyncio client processes. Per row (number of robots): p50/p99 latency of the answered
        requests, answered rate (answers / the 30 Hz demand), streams refused and other errors by status code,
        server RSS and thread count, and a health check plus GetMetadata from this separate process every 0.25 s
        (slowest answer; held: every one within 1 s). After each row, a fresh unary request must be served.
        Policies: the dataset policy on the sample dataset, and the embedded Pi0.5 (`data/demo_policy`) on CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from typing import Any, cast

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


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Threads for pid {pid}")


DATASET_POLICY = ("--policy", "dataset", "--dataset", str(SAMPLE_DATASET))


class ServerProcess:
    def __init__(self, policy_args: tuple[str, ...] = DATASET_POLICY, extra_args: tuple[str, ...] = ()) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "policy_server", "serve", *policy_args, "--port", str(self.port),
             "--log-level", "ERROR", *extra_args],
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
        obs.state.dtype = cast("pb.DType.ValueType",
                               rng.choice([pb.DTYPE_UNSPECIFIED, pb.DTYPE_FLOAT64, pb.DTYPE_BFLOAT16, 99]))
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


# -- robots: many streams at 30 Hz --------------------------------------------------------------------------------

def _request_for(metadata: pb.PolicyMetadata) -> bytes:
    """One valid request for whatever the server announces: its cameras at their size, the state at its mean."""
    from protos.dicts import request_from_dict

    stats = metadata.norm_stats.state
    state = np.asarray(stats.mean, np.float32) if len(stats.mean) == metadata.state_dim else \
        np.zeros(metadata.state_dim, np.float32)
    obs = {
        "state": state,
        "images": {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in metadata.cameras},
        "prompt": metadata.known_prompts[0] if metadata.known_prompts else "do the task",
        "timestamp": 0.0,
    }
    return bytes(request_from_dict(obs).SerializeToString())


async def _robot(port: int, request: bytes, hz: float, seconds: float, latencies: list[float],
                 codes: Counter[str], messages: dict[str, str]) -> None:
    """One robot: its own connection and stream, a request at the first 1/hz tick after the previous answer."""
    import grpc

    service = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                         options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        stream = channel.stream_stream(f"/{service}/InferStream", request_serializer=lambda b: b,
                                       response_deserializer=pb.StreamInferResponse.FromString)
        call = stream(timeout=seconds + 30.0)
        t_end = time.perf_counter() + seconds
        period = 1.0 / hz
        next_tick = time.perf_counter()
        try:
            while (now := time.perf_counter()) < t_end:
                if now < next_tick:
                    await asyncio.sleep(next_tick - now)
                t0 = time.perf_counter()
                await call.write(request)
                reply = await asyncio.wait_for(call.read(), max(0.05, t_end + 2.0 - t0))
                if reply is grpc.aio.EOF:
                    code = (await call.code()).name
                    codes[code] += 1
                    messages.setdefault(code, await call.details() or "")
                    return
                assert isinstance(reply, pb.StreamInferResponse)
                if reply.HasField("error"):
                    codes[reply.error.code] += 1
                    messages.setdefault(reply.error.code, reply.error.message)
                else:
                    latencies.append(time.perf_counter() - t0)
                    codes["OK"] += 1
                next_tick = t0 + period * (1 + int((time.perf_counter() - t0) / period))  # skip missed ticks
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            messages.setdefault(exc.code().name, exc.details() or "")
        except TimeoutError:
            codes["UNANSWERED"] += 1  # still waiting for the model when the row ended
        finally:
            call.cancel()


def robots_worker(port: int, count: int, seconds: float, hz: float, request_file: Path) -> None:
    """Client process: `count` robots on one event loop; prints one JSON line with its latencies and codes."""
    request = request_file.read_bytes()
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    messages: dict[str, str] = {}

    async def all_robots() -> None:
        await asyncio.gather(*(_robot(port, request, hz, seconds, latencies, codes, messages) for _ in range(count)))

    asyncio.run(all_robots())
    print(json.dumps({"latencies": latencies, "codes": dict(codes), "messages": messages}), flush=True)


def _probe(port: int, timeout: float) -> tuple[float, str]:
    """Health check and GetMetadata on a fresh connection: (seconds, "" or the failure)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from protos import policy_pb2_grpc as pb_grpc

    t0 = time.perf_counter()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            pb_grpc.PolicyServiceStub(channel).GetMetadata(pb.GetMetadataRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        return time.perf_counter() - t0, exc.code().name
    return time.perf_counter() - t0, ""


def _unary_after(port: int, request: bytes) -> float:
    """Seconds for one unary Infer on a fresh connection once the row's robots are gone (waits out the backlog)."""
    import grpc

    service = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
    t0 = time.perf_counter()
    with grpc.insecure_channel(f"127.0.0.1:{port}",
                               options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        infer = channel.unary_unary(f"/{service}/Infer", request_serializer=lambda b: b,
                                    response_deserializer=pb.InferResponse.FromString)
        infer(request, timeout=120)
    return time.perf_counter() - t0


def robots_row(n_robots: int, seconds: float, hz: float, procs: int, request_file: Path,
               server: ServerProcess) -> dict[str, Any]:
    counts = [n_robots // procs + (i < n_robots % procs) for i in range(min(procs, n_robots))]
    workers = [subprocess.Popen(
        [sys.executable, __file__, "_robots-worker", "--port", str(server.port), "--count", str(c),
         "--seconds", str(seconds), "--hz", str(hz), "--request-file", str(request_file)],
        stdout=subprocess.PIPE, cwd=REPO_ROOT) for c in counts]
    probes: list[tuple[float, str]] = []
    rss, threads = 0.0, 0
    t_start = time.monotonic()
    while any(w.poll() is None for w in workers) and time.monotonic() - t_start < seconds + 60:
        probes.append(_probe(server.port, timeout=5.0))
        rss, threads = max(rss, _rss_mib(server.proc.pid)), max(threads, _threads(server.proc.pid))
        time.sleep(0.25)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    messages: dict[str, str] = {}
    for w in workers:
        out, _ = w.communicate(timeout=60)
        result = json.loads(out.decode().strip().splitlines()[-1])
        latencies += result["latencies"]
        codes.update(result["codes"])
        messages.update(result["messages"])
    after_s = _unary_after(server.port, request_file.read_bytes())
    lat = np.asarray(latencies) * 1e3 if latencies else np.asarray([np.nan])
    answered = codes.get("OK", 0)
    refused = codes.get("RESOURCE_EXHAUSTED", 0)
    errors = {k: v for k, v in codes.items() if k not in ("OK",)}
    slowest_probe = max(s for s, _ in probes) if probes else float("nan")
    failed_probes = sum(1 for _, err in probes if err)
    rate, p50, p99 = answered / (n_robots * hz * seconds), float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    row = {
        "robots": n_robots, "answers_per_s": answered / seconds, "answered_rate": rate, "p50_ms": p50, "p99_ms": p99,
        "refused": refused, "errors": errors, "rss_mib": rss, "threads": threads,
        "probe_max_s": slowest_probe, "probes": len(probes), "probes_failed": failed_probes, "after_s": after_s,
    }
    print(f"| {n_robots} | {answered / seconds:.0f} | {100 * rate:.1f}% | {p50:.1f} / {p99:.1f} | {refused} | "
          f"{', '.join(f'{k} {v}' for k, v in sorted(errors.items())) or '-'} | {rss:.0f} MiB | {threads} | "
          f"{1e3 * slowest_probe:.0f} ms ({len(probes) - failed_probes}/{len(probes)}) |", flush=True)
    row["messages"] = messages
    return row


def robots(policy_args: tuple[str, ...], counts: list[int], seconds: float, hz: float, procs: int,
           max_streams_per_client: int) -> list[dict[str, Any]]:
    """One server process for the policy, then one row per robot count."""
    import tempfile

    import grpc

    from protos import policy_pb2_grpc as pb_grpc

    # All robots here share one loopback address, which the server takes for one client: the per-client limit is
    # raised so the rows measure the server, not that limit (each robot of a lab is its own machine).
    server = ServerProcess(policy_args, ("--max-streams-per-client", str(max_streams_per_client)))
    try:
        from robot_client.policy_client import GrpcPolicy

        GrpcPolicy(target=f"127.0.0.1:{server.port}", connect_timeout_s=300).close()  # wait until it serves
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            metadata = pb_grpc.PolicyServiceStub(channel).GetMetadata(pb.GetMetadataRequest(), timeout=10)
        with tempfile.TemporaryDirectory() as tmp:
            request_file = Path(tmp) / "request.bin"
            request_file.write_bytes(_request_for(metadata))
            size_kib = len(request_file.read_bytes()) / 1024
            print(f"policy {metadata.policy_type} ({' '.join(policy_args)}), {size_kib:.0f} KiB per request, "
                  f"{hz:g} Hz per robot, {seconds:g} s per row, {procs} client processes")
            print("| robots | answers/s | answered | p50 / p99 ms | refused | errors | server RSS | threads | "
                  "health+metadata, slowest (answered) |")
            print("|---|---|---|---|---|---|---|---|---|")
            rows = [robots_row(n, seconds, hz, procs, request_file, server) for n in counts]
            for code, message in sorted({k: v for row in rows for k, v in row["messages"].items()}.items()):
                print(f"  {code}: {message}")
            slow = [row["robots"] for row in rows if row["probes_failed"] or row["probe_max_s"] > 1.0]
            if slow:
                print(f"  NOT HELD: a health check or GetMetadata failed or took over 1 s with {slow} robots")
        if not server.alive():
            raise SystemExit("the server is not alive at the end")
        return rows
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("clients")
    c.add_argument("--clients", type=int, default=8)
    c.add_argument("--seconds", type=float, default=180.0)
    f = sub.add_parser("fuzz")
    f.add_argument("--count", type=int, default=10_000)
    f.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("robots")
    r.add_argument("--policy", choices=["dataset", "pi05"], action="append",
                   help="policies to serve, one server each (default: both)")
    r.add_argument("--dataset", type=Path, default=SAMPLE_DATASET)
    r.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "data" / "demo_policy")
    r.add_argument("--robots", default="1,16,64,256,320", help="comma-separated robot counts, one row each")
    r.add_argument("--seconds", type=float, default=4.0, help="length of each row")
    r.add_argument("--hz", type=float, default=30.0)
    r.add_argument("--procs", type=int, default=2, help="client processes the robots are spread over")
    r.add_argument("--max-streams-per-client", type=int, default=1024)
    w = sub.add_parser("_robots-worker")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--hz", type=float, required=True)
    w.add_argument("--request-file", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "_robots-worker":
        robots_worker(args.port, args.count, args.seconds, args.hz, args.request_file)
        return
    if args.command == "robots":
        counts = [int(n) for n in args.robots.split(",")]
        for kind in args.policy or ["dataset", "pi05"]:
            policy_args = ("--policy", "dataset", "--dataset", str(args.dataset)) if kind == "dataset" else \
                ("--policy", "pi05", "--checkpoint", str(args.checkpoint), "--device", "cpu")
            robots(policy_args, counts, args.seconds, args.hz, args.procs, args.max_streams_per_client)
        return
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
