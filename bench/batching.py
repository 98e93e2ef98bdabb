"""Dynamic batching: throughput and latency vs the number of concurrent clients, batching off (baseline) and on.

    python bench/batching.py [--config tiny] [--devices cpu[,cuda]] [--clients 1,2,4,8] [--seconds 15]
                             [--max-batch 8] [--batch-wait-ms 2]

A random-weight Pi0.5 checkpoint of the given preset (written once, with the sample dataset's stats and a real
tokenizer) is served by `python -m policy_server serve` in its own process, as deployed. For each device and
number of clients N, two servers are measured one after the other in the same run: `--max-batch 1` (batching off,
the baseline: requests run one at a time in arrival order) and `--max-batch 8 --batch-wait-ms 2`. N client threads
in this process each send their prebuilt request (the sample dataset's cameras resized to the model's input, fixed
seed) back to back over gRPC unary for `--seconds`; the first 2 requests per client are warm-up. Reported per row:
completed requests/s, p50/p99 latency seen by the client, and the server's batch sizes (from its shutdown log).
Before the served rows, the model alone: `sample_actions` time per batch size B (best of 3, same process), which
bounds what batching can give on that device (requests/s <= B / t(B)).
--devices defaults to cpu, plus cuda when torch sees a GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from robot_client.policy_client import GrpcPolicy  # noqa: E402
from tests.pi05_helpers import make_servable_checkpoint  # noqa: E402
from tests.wire_helpers import observation_for, sample_dataset  # noqa: E402

WARMUP_PER_CLIENT = 2


@dataclass
class Row:
    device: str
    clients: int
    batching: str
    requests: int
    throughput: float
    p50_ms: float
    p99_ms: float
    batches: str


class Server:
    """`python -m policy_server serve` in a child process; the port comes from its READY line."""

    def __init__(self, checkpoint: Path, device: str, max_batch: int, wait_ms: float) -> None:
        cmd = [sys.executable, "-m", "policy_server", "serve", "--checkpoint", str(checkpoint), "--port", "0",
               "--device", device, "--max-batch", str(max_batch), "--batch-wait-ms", str(wait_ms),
               "--log-level", "INFO"]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"READY grpc=([\d.]+):(\d+)", line)
        if not match:
            self.proc.kill()
            self.log.seek(0)
            raise RuntimeError(f"server did not start: {line!r}\n{self.log.read()[-3000:]}")
        self.target = f"{match.group(1)}:{match.group(2)}"

    def stop(self) -> str:
        """Stop it; returns its batching summary ('-' when batching was off)."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        self.log.seek(0)
        found = re.search(r"batching: (.*)", self.log.read())
        return found.group(1) if found else "-"


def measure(target: str, clients: int, seconds: float) -> tuple[int, float, list[float]]:
    """N clients back to back for `seconds`; returns (completed, requests/s, latencies in ms)."""
    dataset = sample_dataset()
    policies = [GrpcPolicy(target=target, timeout_s=120.0) for _ in range(clients)]
    requests = []
    for i, policy in enumerate(policies):
        obs = observation_for(dataset, i % 2, 5 + 11 * i)
        obs["noise_seed"] = i
        requests.append(policy.build_request(obs))
    latencies: list[list[float]] = [[] for _ in range(clients)]
    done_at: list[float] = [0.0] * clients
    window: dict[str, float] = {}

    def open_window() -> None:  # runs once every client has warmed up, before any is released
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + seconds

    barrier = threading.Barrier(clients, action=open_window)

    def run(i: int) -> None:
        for _ in range(WARMUP_PER_CLIENT):
            policies[i].infer_request(requests[i])
        barrier.wait()
        end = window["end"]
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            policies[i].infer_request(requests[i])
            t1 = time.perf_counter()
            latencies[i].append((t1 - t0) * 1e3)
            done_at[i] = t1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = window["start"]
    for p in policies:
        p.close()
    flat = [x for lat in latencies for x in lat]
    elapsed = max(done_at) - start
    return len(flat), len(flat) / elapsed, flat


def model_scaling(config: str, device: str, sizes: list[int]) -> None:
    """sample_actions time per batch size (best of 3): the ceiling batching works under."""
    from policy_server.model.dtype_policy import DtypePolicy, apply_dtype_policy
    from tests.model_helpers import random_inputs, random_model

    dev = torch.device(device)
    model = random_model(config).to(dev)
    if dev.type == "cuda":
        apply_dtype_policy(model, DtypePolicy.BFLOAT16)
    for b in sizes:
        inputs = random_inputs(model.cfg, batch=b, prompt_lengths=(40,))
        inputs = type(inputs)([i.to(dev) for i in inputs.images], [m.to(dev) for m in inputs.image_masks],
                              inputs.tokens.to(dev), inputs.token_masks.to(dev))
        times = []
        for _ in range(4):  # the first is warm-up
            t0 = time.perf_counter()
            model.sample_actions(inputs, seed=0)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
        best = min(times[1:]) * 1e3
        print(f"model alone, {device}, batch {b}: {best:.1f} ms per call, {best / b:.1f} ms per request, "
              f"ceiling {b / best * 1e3:.1f} req/s", flush=True)


def bench(checkpoint: Path, device: str, clients_list: list[int], seconds: float, max_batch: int,
          wait_ms: float) -> list[Row]:
    rows = []
    for clients in clients_list:
        for label, mb in (("off (baseline)", 1), (f"on ({max_batch}, {wait_ms:g} ms)", max_batch)):
            server = Server(checkpoint, device, mb, wait_ms)
            try:
                n, rps, lat = measure(server.target, clients, seconds)
            finally:
                batches = server.stop()
            row = Row(device, clients, label, n, rps, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)),
                      batches)
            print(f"{device} clients={clients} batching {label}: {n} req, {rps:.2f} req/s, p50 {row.p50_ms:.1f} ms,"
                  f" p99 {row.p99_ms:.1f} ms; server: {batches}", flush=True)
            rows.append(row)
    return rows


def print_table(rows: list[Row]) -> None:
    print("\n| device | clients | batching | requests | req/s | p50 ms | p99 ms | server batches |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.device} | {r.clients} | {r.batching} | {r.requests} | {r.throughput:.2f} | {r.p50_ms:.1f} | "
              f"{r.p99_ms:.1f} | {r.batches} |")
    by = {(r.device, r.clients, r.batching.startswith("on")): r for r in rows}
    print()
    for (device, clients, on), r in by.items():
        base = by.get((device, clients, False))
        if on and base is not None:
            print(f"{device}, {clients} clients: throughput on/off = {r.throughput / base.throughput:.2f}x, "
                  f"p50 on/off = {r.p50_ms / base.p50_ms:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", help="model preset (tiny, dummy, pi05)")
    p.add_argument("--devices", default=None, help="comma-separated (default cpu, plus cuda when available)")
    p.add_argument("--clients", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=15.0, help="measurement window per row")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--checkpoint", type=Path, help="reuse this checkpoint directory instead of writing one")
    args = p.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    clients = [int(c) for c in args.clients.split(",")]
    checkpoint = args.checkpoint
    if checkpoint is None or not (checkpoint / "model.safetensors").exists():
        directory = checkpoint or Path(tempfile.mkdtemp(prefix="bench-batching-")) / f"pi05_{args.config}"
        t0 = time.perf_counter()
        checkpoint = make_servable_checkpoint(directory, preset_name=args.config)
        print(f"wrote {checkpoint} in {time.perf_counter() - t0:.1f} s")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"config '{args.config}', {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}, "
          f"python {platform.python_version()}; {args.seconds:g} s per row")
    rows = []
    for device in devices:
        model_scaling(args.config, device, sorted({1, *clients}))
        rows += bench(checkpoint, device, clients, args.seconds, args.max_batch, args.batch_wait_ms)
    print_table(rows)


if __name__ == "__main__":
    main()
