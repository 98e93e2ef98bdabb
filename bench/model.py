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
    python bench/model.py convert-memory [--dir DIR] [--keep] [--dtypes bfloat16,float32]
        writes a full-size random openpi JAX step (bfloat16 params in orbax's OCDBT/zarr layout, written by
        `orbax_writer`, whose .zarray metadata is byte-identical to orbax's and which orbax restores) and, in
        fresh processes, measures the peak RSS of (a) `convert_openpi_step` into each dtype and (b) the baseline:
        reading the largest stored chunk alone (part of one layer stack: the floor of a streaming reader).
        Goal: (a) - (b) below 1 GiB, i.e. the peak is about one layer stack, not the model.
    python bench/model.py memory-flat [--config dummy] [--iterations 1000]
        RSS after 100 and after N inferences (goal: flat).
    python bench/model.py gpu-latency [--compile]     (needs CUDA)
        full-size Pi0.5, 2 cameras, bfloat16: latency per chunk (goal <= 30 ms on an H100).
    python bench/model.py paths [--device cpu|cuda] [--out FILE]
        the execution paths in one run, same inputs and noise: eager attention (the reference), fused attention
        (SDPA), and SDPA with the captured flow loop (torch.compile on CPU, a CUDA graph on CUDA). Prefix pass and
        flow loop timed apart; per-chunk p50 (median of the rounds' medians) and p99 (all chunks); max |output -
        eager|; peak GPU memory. CPU set: presets demo and tiny, batch 1. CUDA set (`--device cuda`): full-size
        random weights in bfloat16, 1-3 camera slots x batch 1, 2, 4, 8. Writes a markdown table to stdout and
        to --out.
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
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from policy_server.checkpoint.layouts import EXPERT_LM_HEAD  # noqa: E402
from policy_server.checkpoint.writer import model_extensions, openpi_config_json, randomize  # noqa: E402
from policy_server.model.config import Pi05Config, preset  # noqa: E402
from policy_server.model.pi05 import ModelInputs, Pi05Model  # noqa: E402
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
        assert loaded.model.paligemma_with_expert.llm.compute_dtype == torch.bfloat16
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


def write_full_size_jax_step(step: Path) -> int:
    """A full-size Pi0.5 JAX step with random bfloat16 params (orbax layout) and norm stats; returns params bytes."""
    import shutil

    import ml_dtypes
    import numpy as np

    from policy_server.checkpoint.openpi_jax import InferredSizes, expected_jax_shapes
    from policy_server.checkpoint.orbax_writer import write_orbax_tree

    cfg = preset("pi05")
    sizes = InferredSizes(llm=cfg.llm, expert=cfg.expert, vision=cfg.vision, action_dim=cfg.action_dim,
                          vocab_size=cfg.vocab_size, detected_by="")
    shapes = expected_jax_shapes(sizes)
    gen = torch.Generator().manual_seed(0)

    def make(path: tuple[str, ...]) -> np.ndarray[Any, Any]:
        t = (torch.randn(shapes["/".join(path)], generator=gen, dtype=torch.bfloat16) * 0.02).contiguous()
        return t.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)

    t0 = time.perf_counter()
    bf16 = np.dtype(ml_dtypes.bfloat16)
    write_orbax_tree(step / "params", [(tuple(k.split("/")), s, bf16) for k, s in sorted(shapes.items())], make)
    stats = REPO_ROOT / "tests" / "golden" / "openpi" / "pi05_small" / "29999" / "assets"
    shutil.copytree(stats, step / "assets")
    total = sum(p.stat().st_size for p in (step / "params").rglob("*") if p.is_file())
    print(f"wrote {step} ({total / 2**30:.2f} GiB of params, {len(shapes)} arrays) in {time.perf_counter() - t0:.0f} s")
    return total


def _child_convert(what: str, step: str, out: str) -> None:
    """Runs in a fresh process: convert (or, for 'largest', read the largest stored array), print peak RSS."""
    from policy_server.checkpoint.openpi_convert import ConvertOptions, convert_openpi_step, params_dir
    from policy_server.checkpoint.orbax_reader import OrbaxTree

    t0 = time.perf_counter()
    if what == "largest":
        # The floor of a streaming reader: one stored chunk (a block of layers), read alone.
        tree = OrbaxTree(params_dir(Path(step)))
        infos = tree.arrays.values()
        biggest = max(infos, key=lambda a: a.nbytes)

        def block_bytes(a: Any) -> int:
            return int(a.nbytes * a.chunk_rows // a.shape[0]) if a.shape else int(a.nbytes)

        info = max(infos, key=block_bytes)
        data = tree.read(info.key, tree.row_block(info.key, 0))
        print(f"largest array {biggest.key} {list(biggest.shape)} {biggest.nbytes / 2**30:.2f} GiB; largest chunk "
              f"read: {info.key} rows 0-{info.chunk_rows} {list(data.shape)} {data.nbytes / 2**30:.2f} GiB")
    else:
        report = convert_openpi_step(Path(step), Path(out), ConvertOptions(dtype=what))  # type: ignore[arg-type]
        print(f"keys {report.key_count}, {report.weights_bytes / 2**30:.2f} GiB written")
    print(f"{peak_rss_bytes()} {time.perf_counter() - t0:.1f}")


def bench_convert_memory(directory: Path | None, keep: bool, dtypes: list[str]) -> None:
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="openpi-jax-full-")) if directory is None else directory
    step = tmp / "step"
    if not (step / "params").exists():
        write_full_size_jax_step(step)
    params_bytes = sum(p.stat().st_size for p in (step / "params").rglob("*") if p.is_file())
    peaks = {}
    for what in ["largest", *dtypes]:
        out = tmp / f"out-{what}"
        shutil.rmtree(out, ignore_errors=True)
        run = subprocess.run([sys.executable, __file__, "_child-convert", what, str(step), str(out)],
                             capture_output=True, text=True, cwd=REPO_ROOT)
        shutil.rmtree(out, ignore_errors=True)
        if run.returncode != 0:
            print(f"{what}: failed\n{run.stderr[-2000:]}")
            continue
        lines = run.stdout.strip().splitlines()
        peak, seconds = lines[-1].split()
        peaks[what] = int(peak)
        print(f"{what:>9}: peak RSS {int(peak) / 2**30:.2f} GiB, {seconds} s ({'; '.join(lines[:-1])})")
    print(f"params on disk {params_bytes / 2**30:.2f} GiB")
    for what in dtypes:
        if what in peaks and "largest" in peaks:
            extra = peaks[what] - peaks["largest"]
            verdict = "met" if extra < 2**30 else "NOT met"
            print(f"convert {what}: peak - largest-chunk read = {extra / 2**30:+.2f} GiB "
                  f"({peaks[what] / params_bytes:.2f}x the params); goal < 1 GiB: {verdict}")
    if not keep and directory is None:
        shutil.rmtree(tmp)


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


# name -> (attention, flow_capture, compile_prefix)
PATHS: dict[str, tuple[str, str, bool]] = {
    "eager": ("eager", "none", False),
    "sdpa": ("sdpa", "none", False),
    "sdpa+compile": ("sdpa", "compile", False),
    "sdpa+compile+prefix": ("sdpa", "compile", True),
    "sdpa+cuda_graph": ("sdpa", "cuda_graph", False),
    "sdpa+cuda_graph+prefix": ("sdpa", "cuda_graph", True),
    "eager+compile": ("eager", "compile", False),
}


def full_size_random_model(cfg: Pi05Config, device: torch.device, seed: int = 0) -> Pi05Model:
    """Full-size Pi0.5 with random weights made on the device (bfloat16 policy): built on the meta device,
    filled in place, so the host never holds the 3 B parameters (randomize() would, in float32)."""
    from policy_server.model.dtype_policy import DtypePolicy, apply_dtype_policy

    with torch.device("meta"):
        model = Pi05Model(cfg)
    apply_dtype_policy(model, DtypePolicy.BFLOAT16)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            scale = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.1
            p.normal_(0.0, scale, generator=gen)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_chunk(model: Pi05Model, inputs: ModelInputs, noise: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(prefix s, flow s, actions) of one chunk: what sample_actions does, with a clock between the halves."""
    device = noise.device
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        cache = model.prefix_cache(inputs)
        _sync(device)
        t1 = time.perf_counter()
        out = model.denoise(cache, noise, model.cfg.num_steps)
        _sync(device)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_paths_case(model: Pi05Model, inputs: ModelInputs, paths: list[str], rounds: int,
                     iterations: int) -> list[dict[str, float | str]]:
    """All `paths` on one model and input batch, interleaved round by round (a shared machine drifts)."""
    from policy_server.model.execution import ExecutionConfig

    device = inputs.tokens.device
    noise = model.sample_noise(inputs.batch_size, seed=0, device=device)
    reference: torch.Tensor | None = None
    samples: dict[str, dict[str, list[float]]] = {p: {"prefix": [], "flow": [], "chunk": [], "round": []}
                                                  for p in paths}
    stats: dict[str, dict[str, float]] = {p: {} for p in paths}
    executions = {p: ExecutionConfig(*PATHS[p]) for p in paths}
    for path in paths:  # warm-up: compiles / records the captured loop for this batch size, checks outputs
        model.set_execution(executions[path])
        t0 = time.perf_counter()
        out = _time_chunk(model, inputs, noise)[2]
        stats[path]["warmup_s"] = time.perf_counter() - t0
        for _ in range(2):
            out = _time_chunk(model, inputs, noise)[2]
        reference = out if reference is None else reference
        stats[path]["max_diff"] = float((out.float() - reference.float()).abs().max())
    for _ in range(rounds):
        for path in paths:
            model.set_execution(executions[path])  # keeps each path's compiled / recorded loop
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            chunks = []
            for _ in range(iterations):
                prefix, flow, _ = _time_chunk(model, inputs, noise)
                samples[path]["prefix"].append(prefix)
                samples[path]["flow"].append(flow)
                chunks.append(prefix + flow)
            samples[path]["chunk"].extend(chunks)
            samples[path]["round"].append(_pct(chunks, 0.5))
            if device.type == "cuda":
                stats[path]["peak_gib"] = max(stats[path].get("peak_gib", 0.0),
                                              torch.cuda.max_memory_allocated(device) / 2**30)
    rows: list[dict[str, float | str]] = []
    eager_p50 = None
    for path in paths:
        p50 = _pct(samples[path]["round"], 0.5)
        eager_p50 = p50 if path == "eager" else eager_p50
        rows.append({"path": path, "prefix_ms": _pct(samples[path]["prefix"], 0.5) * 1e3,
                     "flow_ms": _pct(samples[path]["flow"], 0.5) * 1e3, "p50_ms": p50 * 1e3,
                     "p99_ms": _pct(samples[path]["chunk"], 0.99) * 1e3,
                     "speedup": (eager_p50 / p50) if eager_p50 else float("nan"),
                     "max_diff": stats[path]["max_diff"], "warmup_s": stats[path]["warmup_s"],
                     "peak_gib": stats[path].get("peak_gib", float("nan"))})
    return rows


def bench_paths(device_name: str, out_file: Path | None, rounds: int, iterations: int,
                paths_arg: str | None) -> None:
    from policy_server.model.config import DEFAULT_IMAGE_KEYS

    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    default_paths = "eager,sdpa,sdpa+cuda_graph" if device.type == "cuda" else \
        "eager,sdpa,sdpa+compile,sdpa+compile+prefix"
    paths = (paths_arg or default_paths).split(",")
    unknown = [p for p in paths if p not in PATHS]
    if unknown or paths[0] != "eager":
        raise SystemExit(f"--paths: known paths {list(PATHS)}, the first must be 'eager'; got {paths}")
    cases: list[tuple[str, Pi05Config, int]] = []
    if device.type == "cuda":
        for cameras in (1, 2, 3):
            for batch in (1, 2, 4, 8):
                cfg = preset("pi05").with_(image_keys=DEFAULT_IMAGE_KEYS[:cameras])
                cases.append((f"pi05 full, {cameras} cam", cfg, batch))
    else:
        cases = [("demo", preset("demo"), 1), ("tiny", preset("tiny"), 1)]
    header = ("| preset | batch | path | prefix p50 ms | flow p50 ms | chunk p50 ms | chunk p99 ms | vs eager "
              "| max abs diff vs eager | first call s | peak GPU GiB |")
    lines = [f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads; {rounds} rounds x {iterations} chunks per "
             "path, paths interleaved", "", header, "|" + "---|" * (header.count("|") - 1)]
    print("\n".join(lines), flush=True)
    model: Pi05Model | None = None
    model_cfg: Pi05Config | None = None
    for label, cfg, batch in cases:
        if model is None or model_cfg != cfg:
            model = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                model = full_size_random_model(cfg, device)
            else:
                model = randomize(Pi05Model(cfg), seed=0).eval()
            model_cfg = cfg
        inputs = random_inputs(cfg, batch=batch, prompt_lengths=(40, 25, 60, 33))
        inputs = ModelInputs([i.to(device) for i in inputs.images], [m.to(device) for m in inputs.image_masks],
                             inputs.tokens.to(device), inputs.token_masks.to(device))
        for row in bench_paths_case(model, inputs, paths, rounds, iterations):
            line = (f"| {label} | {batch} | {row['path']} | {row['prefix_ms']:.2f} | {row['flow_ms']:.2f} | "
                    f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['speedup']:.2f}x | {row['max_diff']:.1e} | "
                    f"{row['warmup_s']:.1f} | "
                    + (f"{row['peak_gib']:.2f} |" if device.type == "cuda" else "- |"))
            print(line, flush=True)
            lines.append(line)
    if out_file is not None:
        out_file.write_text("\n".join(lines) + "\n")
        print(f"wrote {out_file}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cache")
    p.add_argument("--config", default="tiny")
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("load-memory")
    p.add_argument("--dir", type=Path)
    p.add_argument("--keep", action="store_true")
    p = sub.add_parser("convert-memory")
    p.add_argument("--dir", type=Path)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p = sub.add_parser("_child-convert")
    p.add_argument("what")
    p.add_argument("step")
    p.add_argument("out")
    p = sub.add_parser("memory-flat")
    p.add_argument("--config", default="dummy")
    p.add_argument("--iterations", type=int, default=1000)
    p = sub.add_parser("gpu-latency")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=50)
    p = sub.add_parser("paths")
    p.add_argument("--device", default="cpu", help="cpu (demo and tiny presets) or cuda (the full-size set)")
    p.add_argument("--paths", default=None, help=f"comma-separated, first 'eager'; known: {','.join(PATHS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=10, help="chunks per path per round")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's); on a shared CPU, 1 avoids measuring contention")
    p = sub.add_parser("_child-load")
    p.add_argument("method")
    p.add_argument("directory")
    args = parser.parse_args()
    if args.command == "cache":
        bench_cache(args.config, args.repeats)
    elif args.command == "load-memory":
        bench_load_memory(args.dir, args.keep)
    elif args.command == "convert-memory":
        bench_convert_memory(args.dir, args.keep, args.dtypes.split(","))
    elif args.command == "_child-convert":
        _child_convert(args.what, args.step, args.out)
    elif args.command == "memory-flat":
        bench_memory_flat(args.config, args.iterations)
    elif args.command == "paths":
        if args.threads:
            torch.set_num_threads(args.threads)
        bench_paths(args.device, args.out, args.rounds, args.iterations, args.paths)
    elif args.command == "gpu-latency":
        bench_gpu_latency(args.compile, args.repeats)
    else:
        _child_load(args.method, args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
