"""Golden Diffusion-Policy stores written by DP's own ReplayBuffer (run in its own environment, zarr 2).

    tests/golden/dp/setup_oracle_env.sh /tmp/dp-oracle /tmp/dp-src [DP_GIT_DIR]
    /tmp/dp-oracle/bin/python tests/golden/dp/make_golden.py /tmp/dp-src tests/golden/dp

Writes what DP's real-robot pipeline writes, small:
- `real_raw.zarr`: the recording a real-robot session leaves (`ReplayBuffer.create_from_path(path, mode="a")`,
  then `add_episode(episode, compressors="disk")` once per episode, as `RealEnv.end_episode` does): float64
  `timestamp`, `action`, `robot_eef_pose`, `robot_eef_pose_vel`, `robot_joint`, `robot_joint_vel`, int64 `stage`.
  Episode 0 is short and was recorded at 5 Hz (a slow start), the others at 10 Hz with jitter.
- `real_cache.zarr.zip`: the cache a real-robot training run builds from it (as `real_data_to_replay_buffer` and
  `RealPushTImageDataset` do): the low-dim arrays copied whole-array-chunked and uncompressed into a MemoryStore,
  camera arrays `camera_0`, `camera_1` uint8 [T, H, W, 3] with one frame per chunk and `Jpeg2k(level=50)`, an
  extra uint8 [T, H, W, 3] array `segmentation` (Blosc, not a camera), then `save_to_store(ZipStore)`.
- `expected.json`: every array as DP reads it back through its own code (zarr 2 with DP's codecs registered):
  dtype, shape, sha256 of the C-order bytes, and the first row; `episode_ends`; the DP commit.
Nothing here imports the project: the stores and the hashes are DP's alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import zarr

FPS = 10.0
LENGTHS = (4, 9, 7)
CAMERA_HW = (24, 32)


def scene(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth moving frames with an edge and a coloured disc (JPEG 2000 keeps them recognisable)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for t in range(n):
        r = 127 + 100 * np.sin((x + 2 * t) / 5.0) * np.cos(y / 7.0)
        g = 255 * x / (width - 1)
        b = np.full_like(x, 40.0 + 20 * seed)
        cy, cx = height * rng.random(), width * rng.random()
        disc = (y - cy) ** 2 + (x - cx) ** 2 < (height / 4) ** 2
        r[disc], g[disc], b[disc] = 250, 30, 200
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).round().astype(np.uint8)


def episodes() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    t0 = 1_700_000_000.123456
    for k, n in enumerate(LENGTHS):
        dt = 0.2 if k == 0 else 1.0 / FPS
        ts = t0 + np.arange(n) * dt + rng.normal(0, 0.002, n) * (k > 0)
        joint = np.cumsum(rng.normal(0, 0.01, (n, 6)), axis=0) + rng.normal(0, 0.5, 6)
        pose = np.cumsum(rng.normal(0, 0.003, (n, 6)), axis=0) + np.array([0.4, -0.1, 0.2, 3.1, 0.05, -0.02])
        out.append({
            "timestamp": ts,
            "action": pose + rng.normal(0, 1e-4, (n, 6)),
            "stage": np.zeros(n, dtype=np.int64),
            "robot_eef_pose": pose,
            "robot_eef_pose_vel": np.gradient(pose, axis=0) * FPS,
            "robot_joint": joint,
            "robot_joint_vel": np.gradient(joint, axis=0) * FPS,
        })
        t0 += 60.0
    return out


def describe(group: zarr.hierarchy.Group) -> dict[str, object]:
    arrays: dict[str, object] = {}
    for key, arr in group["data"].items():
        values = np.ascontiguousarray(arr[:])
        arrays[key] = {
            "dtype": str(values.dtype),
            "shape": list(values.shape),
            "chunks": list(arr.chunks),
            "compressor": None if arr.compressor is None else arr.compressor.codec_id,
            "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
            "first_row": values[0].reshape(-1)[:12].tolist(),
        }
    return {"episode_ends": group["meta"]["episode_ends"][:].tolist(), "data": arrays}


def main(dp_src: Path, out_dir: Path) -> None:
    sys.path.insert(0, str(dp_src))
    from diffusion_policy.codecs.imagecodecs_numcodecs import Jpeg2k, register_codecs
    from diffusion_policy.common.replay_buffer import ReplayBuffer

    register_codecs()
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path = out_dir / "real_raw.zarr"
    cache_path = out_dir / "real_cache.zarr.zip"
    shutil.rmtree(raw_path, ignore_errors=True)
    cache_path.unlink(missing_ok=True)

    raw = ReplayBuffer.create_from_path(str(raw_path), mode="a")
    for episode in episodes():
        raw.add_episode(episode, compressors="disk")

    src = ReplayBuffer.create_from_path(str(raw_path), mode="r")
    chunks = {key: value.shape for key, value in src.data.items()}
    compressors = {key: None for key in src.data}
    cache = ReplayBuffer.copy_from_store(
        src_store=src.root.store, store=zarr.MemoryStore(), chunks=chunks, compressors=compressors
    )
    n = cache.n_steps
    height, width = CAMERA_HW
    for cam in (0, 1):
        arr = cache.data.require_dataset(
            name=f"camera_{cam}", shape=(n, height, width, 3), chunks=(1, height, width, 3),
            compressor=Jpeg2k(level=50), dtype=np.uint8,
        )
        frames = scene(n, height, width, seed=cam)
        for i in range(n):  # one frame per call, as the conversion's worker threads write them
            arr[i] = frames[i]
    seg = cache.data.require_dataset(name="segmentation", shape=(n, 8, 8, 3), chunks=(n, 8, 8, 3), dtype=np.uint8,
                                     compressor=ReplayBuffer.resolve_compressor("default"))
    seg[:] = (np.arange(n * 8 * 8 * 3) % 5).reshape(n, 8, 8, 3).astype(np.uint8)
    with zarr.ZipStore(str(cache_path), mode="w") as zip_store:
        cache.save_to_store(store=zip_store)

    expected: dict[str, object] = {"dp_commit": (dp_src / "DP_COMMIT").read_text().strip()
                                   if (dp_src / "DP_COMMIT").is_file() else None,
                                   "versions": {"zarr": zarr.__version__, "numpy": np.__version__}}
    expected["real_raw.zarr"] = describe(ReplayBuffer.create_from_path(str(raw_path), mode="r").root)
    with zarr.ZipStore(str(cache_path), mode="r") as zip_store:
        expected["real_cache.zarr.zip"] = describe(zarr.group(zip_store))
    (out_dir / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {raw_path}, {cache_path}, {out_dir / 'expected.json'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: make_golden.py DP_SRC_DIR OUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
