"""Pi0.5 model benchmarks: KV cache speedup, checkpoint-load memory, memory over many inferences, GPU latency.

    python bench/model.py cache   [--config tiny] [--repeats 5]
        sample_actions with the prefix KV cache vs recomputing the prefix at every flow step (the baseline),
        same inputs and noise; prints both latencies, the speedup and the max output difference. Goal >= 4x.
    python bench/model.py load-memory [--dir DIR] [--keep]
        writes a full-size random Pi0.5 checkpoint (bfloat16, openpi layout, with the unused expert lm_head as the
        converter leaves it) tensor by tensor, then in fresh processes measures peak RSS of (a) our loader
        (meta-device model, each tensor read into its final buffer, sha256 of the file in the same pass),
        (b) the naive baseline (materialized model + safetensors.torch.load_file + load_state_dict copy) and
        (c) mmap'd tensors assigned to a meta-device model, every weight touched once.
        Goal: (a) <= 1.2x the file size.
    python bench/model.py memory-flat [--config dummy] [--iterations 1000]
        RSS after 100 and after N inferences (goal: flat).
    python bench/model.py gpu-latency [--compile]     (needs CUDA)
        full-size Pi0.5, 2 cameras, bfloat16: latency per chunk (goal <= 30 ms on an H100).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from policy_server.checkpoint.layouts import EXPERT_LM_HEAD  # noqa: E402
from policy_server.checkpoint.writer import model_extensions, openpi_config_json, randomize  # noqa: E402
from policy_server.model.config import preset  # noqa: E402
from policy_server.model.pi05 import Pi05Model  # noqa: E402
from tests.model_helpers import random_inputs  # noqa: E402


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_cache(config: str, repeats: int) -> None:
    torch.manual_seed(0)
    model = randomize(Pi05Model(preset(config)), seed=0).eval()
    inputs = random_inputs(model.cfg, batch=1, prompt_lengths=(40,))
    noise = model.sample_noise(1, seed=0, device=torch.device("cpu"))
    timings: dict[bool, list[float]] = {True: [], False: []}
    outputs = {}
    for use_cache in (True, False):
        outputs[use_cache] = model.sample_actions(inputs, noise, use_cache=use_cache)  # warm-up
    for _ in range(repeats):
        for use_cache in (True, False):
            t0 = time.perf_counter()
            model.sample_actions(inputs, noise, use_cache=use_cache)
            timings[use_cache].append(time.perf_counter() - t0)
    cached, uncached = sorted(timings[True])[repeats // 2], sorted(timings[False])[repeats // 2]
    diff = float((outputs[True] - outputs[False]).abs().max())
    cfg = model.cfg
    print(f"config '{config}': prefix {cfg.prefix_len} tokens ({len(cfg.image_keys)} cameras x "
          f"{cfg.vision.num_patches} + {cfg.max_token_len}), suffix {cfg.action_horizon}, {cfg.num_steps} steps, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"recompute prefix every step (baseline): median {uncached * 1e3:.1f} ms over {repeats}")
    print(f"prefix KV cache:                        median {cached * 1e3:.1f} ms over {repeats}")
    print(f"speedup {uncached / cached:.2f}x (goal >= 4x); max |cached - uncached| = {diff:.2e} (tolerance 1e-5)")


def write_full_size_checkpoint(directory: Path) -> Path:
    import json

    from policy_server.checkpoint.safetensors_io import write_streaming

    cfg = preset("pi05")
    with torch.device("meta"):
        model = Pi05Model(cfg)
    entries = [(n, torch.bfloat16, tuple(p.shape)) for n, p in model.named_parameters()]
    entries.append((EXPERT_LM_HEAD, torch.bfloat16, (cfg.vocab_size, cfg.expert.width)))
    gen = torch.Generator().manual_seed(0)

    def make(name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        return (torch.randn(shape, generator=gen) * 0.02).to(dtype)

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors"
    t0 = time.perf_counter()
    size = write_streaming(weights, entries, make)
    from policy_server.checkpoint.writer import WriteOptions

    (directory / "config.json").write_text(json.dumps(openpi_config_json(cfg, WriteOptions(store_dtype="bfloat16"))))
    assert not model_extensions(cfg)
    print(f"wrote {weights} ({size / 2**30:.2f} GiB, {len(entries)} tensors) in {time.perf_counter() - t0:.0f} s")
    return weights


def _child_load(method: str, directory: str) -> None:
    """Runs in a fresh process: load, then print peak RSS."""
    t0 = time.perf_counter()
    if method == "ours":
        from policy_server.checkpoint.loader import load_checkpoint
        from policy_server.model.dtype_policy import DtypePolicy

        loaded = load_checkpoint(Path(directory), dtype_policy=DtypePolicy.BFLOAT16)
        assert loaded.model.paligemma_with_expert.llm.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    elif method == "naive":
        # What a straightforward loader does: build the model, then copy the file's tensors into it.
        from safetensors.torch import load_file

        torch.set_default_dtype(torch.bfloat16)
        model = Pi05Model(preset("pi05"))
        state = load_file(str(Path(directory) / "model.safetensors"))
        state.pop(EXPERT_LM_HEAD)
        model.load_state_dict(state, strict=True)
    else:
        # Memory-mapped tensors assigned to a meta-device model, then every weight touched once (mmap reads
        # lazily: without touching, nothing would have been loaded yet).
        from safetensors.torch import load_file

        with torch.device("meta"):
            model = Pi05Model(preset("pi05"))
        state = load_file(str(Path(directory) / "model.safetensors"))
        state.pop(EXPERT_LM_HEAD)
        model.load_state_dict(state, strict=True, assign=True)
        checksum = sum(float(p.float().sum()) for p in model.parameters())
        assert checksum == checksum
    print(f"{peak_rss_bytes()} {time.perf_counter() - t0:.1f}")


def bench_load_memory(directory: Path | None, keep: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pi05-full-")) if directory is None else directory
    weights = tmp / "model.safetensors"
    if not weights.exists():
        write_full_size_checkpoint(tmp)
    size = weights.stat().st_size
    results = {}
    for method in ("ours", "naive", "mmap"):
        out = subprocess.run([sys.executable, __file__, "_child-load", method, str(tmp)], capture_output=True,
                             text=True, cwd=REPO_ROOT)
        if out.returncode != 0:
            print(f"{method}: failed\n{out.stderr[-2000:]}")
            continue
        peak, seconds = out.stdout.split()[-2:]
        results[method] = int(peak)
        print(f"{method:>6}: peak RSS {int(peak) / 2**30:.2f} GiB = {int(peak) / size:.2f}x the file "
              f"({size / 2**30:.2f} GiB), load {seconds} s")
    if "ours" in results and "naive" in results:
        print(f"ours / naive peak RSS = {results['ours'] / results['naive']:.2f}; goal ours <= 1.2x file: "
              f"{'met' if results['ours'] <= 1.2 * size else 'NOT met'}")
    if not keep and directory is None:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


def bench_memory_flat(config: str, iterations: int) -> None:
    model = randomize(Pi05Model(preset(config)), seed=0).eval()
    inputs = random_inputs(model.cfg, batch=1, prompt_lengths=(20,))
    marks = {}
    t0 = time.perf_counter()
    for i in range(1, iterations + 1):
        model.sample_actions(inputs, seed=i)
        if i in (100, iterations // 2, iterations):
            gc.collect()
            marks[i] = current_rss_bytes()
    per = (time.perf_counter() - t0) / iterations
    print(f"config '{config}', {iterations} inferences ({per * 1e3:.1f} ms each): RSS "
          + ", ".join(f"after {i}: {v / 2**20:.1f} MiB" for i, v in marks.items()))
    growth = marks[iterations] - marks[100]
    print(f"growth from 100 to {iterations}: {growth / 2**20:+.2f} MiB (goal: flat, |growth| < 5 MiB)")


def bench_gpu_latency(compile_model: bool, repeats: int) -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return
    from policy_server.model.dtype_policy import DtypePolicy, apply_dtype_policy

    device = torch.device("cuda")
    cfg = preset("pi05")
    model = randomize(Pi05Model(cfg), seed=0)
    apply_dtype_policy(model, DtypePolicy.BFLOAT16)
    model = model.to(device).eval()
    inputs = random_inputs(cfg, batch=1, prompt_lengths=(60,), present=(True, True, False))
    inputs.images = [i.to(device) for i in inputs.images]
    inputs.image_masks = [m.to(device) for m in inputs.image_masks]
    inputs.tokens, inputs.token_masks = inputs.tokens.to(device), inputs.token_masks.to(device)
    fn = torch.compile(model.sample_actions) if compile_model else model.sample_actions
    for _ in range(3):
        fn(inputs, seed=0)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(inputs, seed=0)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"{torch.cuda.get_device_name()}: full-size Pi0.5, 2 cameras, bf16, compile={compile_model}: "
          f"median {times[len(times) // 2] * 1e3:.1f} ms, p90 {times[int(0.9 * len(times))] * 1e3:.1f} ms per chunk")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cache")
    p.add_argument("--config", default="tiny")
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("load-memory")
    p.add_argument("--dir", type=Path)
    p.add_argument("--keep", action="store_true")
    p = sub.add_parser("memory-flat")
    p.add_argument("--config", default="dummy")
    p.add_argument("--iterations", type=int, default=1000)
    p = sub.add_parser("gpu-latency")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=50)
    p = sub.add_parser("_child-load")
    p.add_argument("method")
    p.add_argument("directory")
    args = parser.parse_args()
    if args.command == "cache":
        bench_cache(args.config, args.repeats)
    elif args.command == "load-memory":
        bench_load_memory(args.dir, args.keep)
    elif args.command == "memory-flat":
        bench_memory_flat(args.config, args.iterations)
    elif args.command == "gpu-latency":
        bench_gpu_latency(args.compile, args.repeats)
    else:
        _child_load(args.method, args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
