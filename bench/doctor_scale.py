"""The doctor at scale: wall time and peak memory of `python -m replay doctor` on generated numeric datasets.

    python bench/doctor_scale.py [--frames 100000 1000000 10000000] [--episode-length 1000] [--keep DIR]
        [--exact-frames N]

For each size, writes a numeric-only LeRobot v3.0 dataset in a temporary folder (14-D bimanual state and action
named like LeRobot's YAM datasets, no video) in LeRobot's layout: data parquet files rolled over at LeRobot's
100 MB default, `meta/episodes` with per-episode stats columns, `meta/tasks.parquet`, and `meta/stats.json`
computed the way LeRobot 0.4+ computes it (per-episode stats with its 5000-bin histogram quantiles, aggregated:
quantiles as the frame-count-weighted mean). It is written one episode at a time, so the generator itself fits
in memory at any size. Then it runs the doctor in a child process (`--no-plots`, no checkpoint) and reports the
child's wall time, peak resident memory (os.wait4's ru_maxrss of that child alone), exit code and the number of
findings, against the figures before the doctor streamed (the baseline rows). Goal (issue 14): peak memory
<= 1 GB at 10M frames, <= 30 s per 1M frames on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from robodata.lerobot_meta import pandas_index_metadata  # noqa: E402
from robodata.stats import (  # noqa: E402
    QUANTILES_EPISODE_MEAN,
    FeatureStats,
    aggregate_stats,
    episode_feature_stats,
    stats_to_json,
)

# Before the doctor streamed (same 14-D numeric datasets, no video): seconds, GB.
BASELINE: dict[int, tuple[float, float]] = {100_000: (5.0, 0.27), 1_000_000: (41.5, 0.75)}
FPS = 30
DATA_FILE_MB = 100  # LeRobot's data_files_size_in_mb default
NAMES = tuple(f"{arm}_{j}" for arm in ("left", "right") for j in (*(f"joint_{i}" for i in range(6)), "gripper"))
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"


def _episode(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth joint motion (a few sinusoids per joint), grippers in 0..1, the state trailing the action by
    2 frames plus sensor noise: a clean recording."""
    t = np.arange(n + 2, dtype=np.float64) / FPS
    dims = len(NAMES)
    freq = rng.uniform(0.05, 0.4, (3, dims))
    phase = rng.uniform(0, 2 * np.pi, (3, dims))
    amp = rng.uniform(0.1, 0.6, (3, dims))
    motion = sum(amp[i] * np.sin(2 * np.pi * freq[i] * t[:, None] + phase[i]) for i in range(3))
    for j, name in enumerate(NAMES):
        if name.endswith("gripper"):
            motion[:, j] = 0.5 + 0.45 * np.tanh(3 * motion[:, j])
    actions = motion[2:]
    states = motion[:-2] + rng.normal(0, 1e-3, (n, dims))
    return states.astype(np.float32), actions.astype(np.float32)


def _fixed_list(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=pa.float32()), values.shape[1])


def write_dataset(root: Path, frames: int, episode_length: int, seed: int = 0) -> None:
    """A numeric LeRobot v3.0 dataset of `frames` frames in LeRobot's layout (see the module docstring)."""
    rng = np.random.default_rng(seed)
    episodes = max(1, frames // episode_length)
    writer: pq.ParquetWriter | None = None
    path: Path | None = None
    file_index = 0
    rows: list[dict[str, Any]] = []
    per_episode: list[dict[str, FeatureStats]] = []
    first = 0
    for ep in range(episodes):
        n = episode_length if ep < episodes - 1 else frames - first
        states, actions = _episode(rng, n)
        table = pa.table({
            "observation.state": _fixed_list(states),
            "action": _fixed_list(actions),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / FPS, type=pa.float32()),
            "frame_index": pa.array(np.arange(n), type=pa.int64()),
            "episode_index": pa.array(np.full(n, ep), type=pa.int64()),
            "index": pa.array(np.arange(first, first + n), type=pa.int64()),
            "task_index": pa.array(np.zeros(n, dtype=np.int64), type=pa.int64()),
        })
        if writer is not None and path is not None and path.stat().st_size >= DATA_FILE_MB * 1024 * 1024:
            writer.close()
            writer, file_index = None, file_index + 1
        if writer is None:
            path = root / DATA_PATH.format(chunk_index=0, file_index=file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table)
        stats = {"observation.state": episode_feature_stats(states, QUANTILES_EPISODE_MEAN),
                 "action": episode_feature_stats(actions, QUANTILES_EPISODE_MEAN)}
        per_episode.append(stats)
        row: dict[str, Any] = {"episode_index": ep, "tasks": ["move"], "length": n, "data/chunk_index": 0,
                               "data/file_index": file_index, "dataset_from_index": first,
                               "dataset_to_index": first + n, "meta/episodes/chunk_index": 0,
                               "meta/episodes/file_index": 0}
        for feature, feat in stats.items():
            for stat, value in feat.items():
                arr = np.asarray(value)
                row[f"stats/{feature}/{stat}"] = (np.rint(arr).astype(np.int64).tolist() if stat == "count"
                                                  else arr.tolist())
        rows.append(row)
        first += n
    if writer is not None:
        writer.close()
    meta = root / "meta"
    (meta / "episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict({c: [r[c] for r in rows] for c in rows[0]}),
                   meta / "episodes/chunk-000/file-000.parquet", compression="snappy")
    tasks = pa.table({"task_index": pa.array([0], type=pa.int64()), "task": pa.array(["move"])})
    pq.write_table(tasks.replace_schema_metadata(
        {b"pandas": pandas_index_metadata("task", [("task_index", "int64")])}), meta / "tasks.parquet")
    (meta / "stats.json").write_text(json.dumps(stats_to_json(aggregate_stats(per_episode))))
    vector = {"dtype": "float32", "shape": [len(NAMES)], "names": list(NAMES)}
    features: dict[str, Any] = {"observation.state": vector, "action": vector}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    info = {"codebase_version": "v3.0", "robot_type": "bi_yam", "total_episodes": episodes, "total_frames": frames,
            "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": 200, "fps": FPS, "splits": {"train": f"0:{episodes}"},
            "data_path": DATA_PATH, "video_path": None, "features": features}
    (meta / "info.json").write_text(json.dumps(info, indent=2))


def run_doctor(root: Path, extra: list[str]) -> tuple[float, float, int, list[str]]:
    """Wall seconds, peak RSS (GB) of the doctor's process alone, its exit code, and its output lines."""
    cmd = [sys.executable, "-m", "replay", "doctor", "--dataset", str(root), "--no-plots", *extra]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = out.read().splitlines()
    return wall, usage.ru_maxrss / 1024**2, proc.returncode, lines  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--exact-frames", type=int, default=None, help="passed to the doctor")
    parser.add_argument("--keep", type=Path, default=None, help="write the datasets here and keep them")
    parser.add_argument("--show", action="store_true", help="print the doctor's findings")
    args = parser.parse_args()
    extra = [] if args.exact_frames is None else ["--exact-frames", str(args.exact_frames)]
    print(f"cpus {os.cpu_count()}, episodes of {args.episode_length} frames, 14-D state/action, no video\n")
    print("| frames | write s | doctor s | s per 1M frames | peak RSS GB | exit | findings (err/warn/info) | "
          "baseline s / GB |")
    print("|---|---|---|---|---|---|---|---|")
    for frames in args.frames:
        base = args.keep if args.keep is not None else Path(tempfile.mkdtemp(prefix="doctor_scale_"))
        root = base / f"frames_{frames}"
        try:
            if not (root / "meta/info.json").is_file():
                t0 = time.perf_counter()
                write_dataset(root, frames, args.episode_length)
                write_s = time.perf_counter() - t0
            else:
                write_s = 0.0
            wall, rss, code, lines = run_doctor(root, extra)
            summary = next((ln for ln in reversed(lines) if ln.startswith("doctor:")), lines[-1] if lines else "")
            counts = "/".join(summary.split(" error(s)")[0].split()[-1:] + [
                summary.split(", ")[1].split()[0] if ", " in summary else "?",
                summary.split(", ")[2].split()[0] if summary.count(", ") >= 2 else "?"])
            baseline = BASELINE.get(frames)
            base_text = f"{baseline[0]:.1f} / {baseline[1]:.2f}" if baseline else "-"
            print(f"| {frames:,} | {write_s:.1f} | {wall:.1f} | {wall / frames * 1e6:.1f} | {rss:.2f} | {code} | "
                  f"{counts} | {base_text} |", flush=True)
            if args.show or code not in (0, 1):
                print("\n".join("    " + ln for ln in lines), flush=True)
        finally:
            if args.keep is None:
                shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
