"""Golden bimanual datasets written by LeRobot 0.6.1 itself (run in its own environment), one clean and one per
planted fault, for the data tools' tests.

    tests/golden/lerobot/setup_oracle_env.sh /tmp/lerobot-oracle
    /tmp/lerobot-oracle/bin/python tests/golden/lerobot/make_datasets.py tests/golden/lerobot/datasets
    tests/golden/lerobot/setup_v21_env.sh /tmp/lerobot-v21 /tmp/lerobot-oracle     # LeRobot 0.3.3, dataset v2.1
    /tmp/lerobot-v21/bin/python tests/golden/lerobot/make_datasets.py tests/golden/lerobot/datasets

Why LeRobot's own writer: the layout, the AV1 videos and above all `meta/stats.json` (per-episode statistics
aggregated LeRobot's way) must be what a LeRobot user has on disk, not what our writer believes LeRobot writes.
Every dataset is written with `LeRobotDataset.create / add_frame / save_episode / finalize`; a fault that a
user's pipeline would put into the data goes in before LeRobot writes it (so the stats are LeRobot's of that
data), and a fault that happens to files afterwards is applied to a copy of the clean dataset's files.

The robot: a bimanual YAM as a LeRobot user names it, 14-D `observation.state` and `action` named
left_joint_0..5, left_gripper, right_joint_0..5, right_gripper (joints in radians, grippers 0 = closed .. 1 =
open), 30 fps, two 96x72 cameras (`top`, `left_wrist`) whose pictures follow the arms, five episodes of
different lengths. The state is the commanded action one frame later plus sensor noise (a tracking controller).

Datasets written under OUT (each a LeRobot v3.0 root):
- `clean`: nothing wrong.
- `stats_degrees`: the clean files, with `meta/stats.json` replaced by the one LeRobot wrote for the same
  episodes recorded in degrees (arm joints x 180/pi; grippers unchanged).
- `outliers`: action `left_joint_2` = 50.0 rad at four frames of three episodes (see OUTLIER_FRAMES), a leader-arm
  read glitch; the stats are LeRobot's of that data.
- `rb_swap`: both cameras' frames handed to LeRobot as BGR (red and blue exchanged); the metadata says RGB.
- `lag5`: the state read 5 frames late (stale observation buffer): state[t] = true state[t - 5].
- `arms_swapped`: the teleop leaders plugged into the wrong ports: the action's left and right halves exchanged.
- `truncated_parquet`: the clean files with the data parquet cut to 60 % of its bytes (an interrupted copy).
- `missing_video`: the clean files without the `top` camera's mp4.
- `corrupt_video`: the clean files with the `top` camera's mp4 cut to half its bytes.
- `clean_checkpoint`: the processor files of a LeRobot policy trained on `clean` in quantile mode (pi05's
  STATE/ACTION QUANTILES): LeRobot's own NormalizerProcessorStep / UnnormalizerProcessorStep saved with
  `PolicyProcessorPipeline.save_pretrained`, holding `clean`'s meta/stats.json as LeRobot loads it.
Run with LeRobot 0.3.x (dataset v2.1, `meta/episodes_stats.jsonl` with mean/std/min/max/count per episode and
no quantiles) it writes `v21_clean` and `v21_stats_degrees` (episodes_stats.jsonl from the degrees recording).
Also `manifest.json`: per dataset the planted fault and where it is (episode, frame, dimension), so tests
read the ground truth instead of restating it.

Nothing here imports the project: the files are LeRobot's alone. The same seed gives the same numbers; the
video bytes depend on the encoder build.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lerobot
from lerobot.datasets.lerobot_dataset import LeRobotDataset

try:  # LeRobot 0.3.x (dataset v2.1) names its version here, 0.6 (v3.0) in dataset_metadata
    from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION
except ImportError:
    from lerobot.datasets.dataset_metadata import CODEBASE_VERSION  # type: ignore[no-redef]
V21 = CODEBASE_VERSION == "v2.1"

SEED = 1406
FPS = 30
LENGTHS = (64, 90, 75, 101, 83)
HEIGHT, WIDTH = 72, 96
CAMERAS = ("top", "left_wrist")
ARM = ("joint_0", "joint_1", "joint_2", "joint_3", "joint_4", "joint_5", "gripper")
NAMES = [f"{side}_{j}" for side in ("left", "right") for j in ARM]
GRIPPERS = (6, 13)
TASKS = ("pick up the red cube and hand it over", "put the cube back on the table")
ROBOT_TYPE = "bi_yam_follower"
TRACKING_LAG = 1  # frames the measured state trails the command in every dataset
LAG_FRAMES = 5  # the extra, planted lag of `lag5`
OUTLIER_DIM = NAMES.index("left_joint_2")
OUTLIER_VALUE = 50.0
OUTLIER_FRAMES = ((0, 17), (2, 8), (2, 51), (4, 33))  # (episode, frame)
# A safe working region inside the YAM limits (rad) for key poses: joint_0..joint_5.
POSE_LOW = np.array([-0.8, 0.5, 0.5, -0.6, -0.5, -0.8])
POSE_HIGH = np.array([0.8, 1.8, 1.8, 0.6, 0.5, 0.8])


@dataclass(frozen=True)
class Episode:
    task: str
    actions: np.ndarray  # [T, 14] float32, the commands
    states: np.ndarray  # [T, 14] float32, as measured
    true_states: np.ndarray  # [T, 14] float32, what the cameras see


def min_jerk(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    s = np.linspace(0.0, 1.0, n)[:, None]
    return a + (b - a) * (10 * s**3 - 15 * s**4 + 6 * s**5)


def arm_trajectory(length: int, task_centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[length, 7]: min-jerk moves through 3-5 key poses scattered around the task's working pose (jittered per
    episode, as demonstrations of one task are), the gripper closing and opening once."""
    n_keys = int(rng.integers(3, 6))
    centre = np.clip(task_centre + rng.normal(0.0, 0.12, 6), POSE_LOW + 0.2, POSE_HIGH - 0.2)
    keys = [np.clip(centre + rng.normal(0.0, 0.25, 6), POSE_LOW, POSE_HIGH) for _ in range(n_keys + 1)]
    cuts = np.sort(rng.choice(np.arange(8, length - 8), size=n_keys - 1, replace=False))
    bounds = [0, *cuts.tolist(), length]
    joints = np.concatenate([min_jerk(keys[i], keys[i + 1], bounds[i + 1] - bounds[i]) for i in range(n_keys)])
    close_at, open_at = sorted(rng.choice(np.arange(5, length - 5), size=2, replace=False).tolist())
    grip = np.ones(length)
    ramp = min(8, open_at - close_at)
    grip[close_at:open_at] = 0.05
    grip[close_at:close_at + ramp] = np.linspace(1.0, 0.05, ramp)
    grip[open_at:open_at + 8] = np.linspace(0.05, 1.0, 8)[: length - open_at]
    return np.concatenate([joints, grip[:, None]], axis=1)


def delayed(x: np.ndarray, k: int) -> np.ndarray:
    """x[t - k], the first row held for the first k frames."""
    return np.concatenate([np.repeat(x[:1], k, axis=0), x[:-k]]) if k else x.copy()


def episodes(seed: int = SEED) -> list[Episode]:
    rng = np.random.default_rng(seed)
    centres = [rng.uniform(POSE_LOW + 0.3, POSE_HIGH - 0.3) for _ in range(2)]  # per arm, the task's pose
    out = []
    for i, length in enumerate(LENGTHS):
        actions = np.concatenate([arm_trajectory(length, centres[0], rng), arm_trajectory(length, centres[1], rng)],
                                 axis=1)
        noise = rng.normal(0.0, 0.002, actions.shape)
        noise[:, GRIPPERS] = rng.normal(0.0, 0.003, (length, 2))
        states = delayed(actions, TRACKING_LAG) + noise
        out.append(Episode(TASKS[i % 2], actions.astype(np.float32), states.astype(np.float32),
                           states.astype(np.float32)))
    return out


# ---- pictures ------------------------------------------------------------------------------------------


def _table(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, 3))
    img[..., 0] = 165 + 20 * np.sin(xx / 9.0)
    img[..., 1] = 120 + 12 * np.sin(xx / 9.0 + yy / 23.0)
    img[..., 2] = 80 + 6 * np.cos(yy / 11.0)
    return img


TABLE = _table(HEIGHT, WIDTH)
WIDE_TABLE = _table(HEIGHT * 3, WIDTH * 3)
YY, XX = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)


def _gripper_xy(arm: np.ndarray, base_x: float, facing: float) -> tuple[float, float]:
    reach = 12.0 + 18.0 * math.sin(float(arm[1])) + 14.0 * math.sin(float(arm[2]) * 0.5) + 4.0 * float(arm[3])
    yaw = facing + float(arm[0])
    return base_x + reach * math.sin(yaw), HEIGHT - 4.0 - reach * math.cos(yaw)


def _disc(img: np.ndarray, cx: float, cy: float, r: float, rgb: tuple[int, int, int]) -> None:
    mask = (XX - cx) ** 2 + (YY - cy) ** 2 < r * r
    img[mask] = rgb


def render(state: np.ndarray) -> dict[str, np.ndarray]:
    """The two camera frames (uint8 HxWx3 RGB) of a 14-D state: a top view of the table, a red cube and the
    two grippers (left orange, right blue; bigger when open), and the left wrist view sliding over the table."""
    top = TABLE.copy()
    _disc(top, WIDTH * 0.5, HEIGHT * 0.45, 5, (200, 30, 30))
    for arm, base_x, facing, rgb in ((state[:7], WIDTH * 0.3, 0.35, (240, 150, 40)),
                                     (state[7:], WIDTH * 0.7, -0.35, (40, 90, 220))):
        x, y = _gripper_xy(arm, base_x, facing)
        _disc(top, x, y, 3.0 + 3.0 * float(np.clip(arm[6], 0.0, 1.0)), rgb)
    x, y = _gripper_xy(state[:7], WIDTH * 0.3, 0.35)
    ox = int(np.clip(WIDTH + (x - WIDTH * 0.5) * 2.0, 0, 2 * WIDTH))
    oy = int(np.clip(HEIGHT + (y - HEIGHT * 0.5) * 2.0, 0, 2 * HEIGHT))
    wrist = WIDE_TABLE[oy:oy + HEIGHT, ox:ox + WIDTH].copy()
    jaw = int(6 + 14 * float(np.clip(state[6], 0.0, 1.0)))
    wrist[HEIGHT - 14:, WIDTH // 2 - jaw - 6:WIDTH // 2 - jaw] = (90, 90, 95)
    wrist[HEIGHT - 14:, WIDTH // 2 + jaw:WIDTH // 2 + jaw + 6] = (90, 90, 95)
    return {"top": np.clip(top, 0, 255).astype(np.uint8), "left_wrist": np.clip(wrist, 0, 255).astype(np.uint8)}


# ---- writing -------------------------------------------------------------------------------------------


def features() -> dict[str, dict]:
    feats: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": (14,), "names": list(NAMES)},
        "action": {"dtype": "float32", "shape": (14,), "names": list(NAMES)},
    }
    for cam in CAMERAS:
        feats[f"observation.images.{cam}"] = {"dtype": "video", "shape": (HEIGHT, WIDTH, 3),
                                              "names": ["height", "width", "channels"]}
    return feats


def write(root: Path, eps: list[Episode], bgr: bool = False) -> None:
    if root.exists():
        shutil.rmtree(root)
    ds = LeRobotDataset.create(repo_id=f"golden/{root.name}", fps=FPS, features=features(), root=root,
                               robot_type=ROBOT_TYPE, use_videos=True)
    for ep in eps:
        for t in range(len(ep.actions)):
            frames = render(ep.true_states[t])
            frame: dict[str, object] = {"observation.state": ep.states[t], "action": ep.actions[t]}
            for cam in CAMERAS:
                img = frames[cam]
                frame[f"observation.images.{cam}"] = np.ascontiguousarray(img[..., ::-1]) if bgr else img
            if V21:  # 0.3.x takes the task beside the frame
                ds.add_frame(frame, task=ep.task)
            else:
                frame["task"] = ep.task
                ds.add_frame(frame)
        ds.save_episode()
    if not V21:  # 0.3.x has no finalize: every episode is complete on disk once saved
        ds.finalize()
    images = root / "images"
    if images.exists():  # LeRobot's temporary PNG frames, already encoded into the videos
        shutil.rmtree(images)


def write_checkpoint(dataset: Path, dst: Path) -> None:
    """A LeRobot policy dir's normalizer and unnormalizer (quantile mode), with the dataset's stats as LeRobot
    reads them (`LeRobotDatasetMetadata.stats`), saved by LeRobot's own pipeline classes."""
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
    from lerobot.processor import NormalizerProcessorStep, PolicyProcessorPipeline, UnnormalizerProcessorStep

    if dst.exists():
        shutil.rmtree(dst)
    stats = LeRobotDatasetMetadata(f"golden/{dataset.name}", root=dataset).stats
    feats = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(14,)),
             "action": PolicyFeature(type=FeatureType.ACTION, shape=(14,))}
    norm_map = {FeatureType.STATE: NormalizationMode.QUANTILES, FeatureType.ACTION: NormalizationMode.QUANTILES,
                FeatureType.VISUAL: NormalizationMode.IDENTITY}
    PolicyProcessorPipeline(steps=[NormalizerProcessorStep(features=feats, norm_map=norm_map, stats=stats)],
                            name="policy_preprocessor").save_pretrained(dst)
    PolicyProcessorPipeline(steps=[UnnormalizerProcessorStep(features={"action": feats["action"]},
                                                             norm_map=norm_map, stats=stats)],
                            name="policy_postprocessor").save_pretrained(dst)


def copy_clean(clean: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(clean, dst)


def only_file(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one {pattern} under {root}, found {found}")
    return found[0]


def truncate(path: Path, fraction: float) -> dict[str, int]:
    data = path.read_bytes()
    keep = int(len(data) * fraction)
    path.write_bytes(data[:keep])
    return {"bytes_before": len(data), "bytes_after": keep}


def main_v21(out: Path, manifest: dict[str, dict], common: dict, clean_eps: list[Episode], wanted) -> None:
    """LeRobot 0.3.x: `v21_clean`, and `v21_stats_degrees` whose meta/episodes_stats.jsonl (v2.1's only stats:
    per-episode mean/std/min/max/count) is the one LeRobot wrote for the same episodes recorded in degrees."""
    clean = out / "v21_clean"
    if wanted("v21_clean") or not clean.exists():
        write(clean, clean_eps)
    manifest["v21_clean"] = {**common, "fault": None}
    if wanted("v21_stats_degrees"):
        deg = np.array([180.0 / math.pi] * 6 + [1.0] + [180.0 / math.pi] * 6 + [1.0], dtype=np.float64)
        deg_eps = [Episode(e.task, (e.actions * deg).astype(np.float32), (e.states * deg).astype(np.float32),
                           e.true_states) for e in clean_eps]
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp) / "degrees", deg_eps)
            stats = (Path(tmp) / "degrees" / "meta" / "episodes_stats.jsonl").read_text()
        copy_clean(clean, out / "v21_stats_degrees")
        (out / "v21_stats_degrees" / "meta" / "episodes_stats.jsonl").write_text(stats)
        manifest["v21_stats_degrees"] = {**common, "fault": "meta/episodes_stats.jsonl from the same episodes "
                                         "recorded in degrees (arm joints x 180/pi, grippers unchanged); the data "
                                         "is in radians", "degree_dims": [n for n in NAMES if "gripper" not in n]}


def main(out: Path, only: set[str] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest: dict[str, dict] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    def wanted(name: str) -> bool:
        return only is None or name in only

    common = {"names": NAMES, "fps": FPS, "lengths": list(LENGTHS), "cameras": list(CAMERAS),
              "tracking_lag_frames": TRACKING_LAG, "lerobot": lerobot.__version__,
              "codebase_version": CODEBASE_VERSION}
    clean_eps = episodes()
    if V21:
        main_v21(out, manifest, common, clean_eps, wanted)
        manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
        return
    clean = out / "clean"
    if wanted("clean") or not clean.exists():
        write(clean, clean_eps)
    manifest["clean"] = {**common, "fault": None}

    if wanted("clean_checkpoint"):
        write_checkpoint(clean, out / "clean_checkpoint")
        manifest["clean_checkpoint"] = {"fault": None, "dataset": "clean", "normalization": "QUANTILES",
                                        "lerobot": lerobot.__version__}

    if wanted("stats_degrees"):
        deg = np.array([180.0 / math.pi] * 6 + [1.0] + [180.0 / math.pi] * 6 + [1.0], dtype=np.float64)
        deg_eps = [Episode(e.task, (e.actions * deg).astype(np.float32), (e.states * deg).astype(np.float32),
                           e.true_states) for e in clean_eps]
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp) / "degrees", deg_eps)
            stats = (Path(tmp) / "degrees" / "meta" / "stats.json").read_text()
        copy_clean(clean, out / "stats_degrees")
        (out / "stats_degrees" / "meta" / "stats.json").write_text(stats)
        manifest["stats_degrees"] = {**common, "fault": "meta/stats.json from the same episodes recorded in degrees "
                                     "(arm joints x 180/pi, grippers unchanged); the data is in radians",
                                     "degree_dims": [n for n in NAMES if "gripper" not in n]}

    if wanted("outliers"):
        eps = [Episode(e.task, e.actions.copy(), e.states, e.true_states) for e in clean_eps]
        for ep_i, frame in OUTLIER_FRAMES:
            eps[ep_i].actions[frame, OUTLIER_DIM] = OUTLIER_VALUE
        write(out / "outliers", eps)
        manifest["outliers"] = {**common, "fault": "action left_joint_2 = 50 rad at four frames of three episodes",
                                "feature": "action", "dim": NAMES[OUTLIER_DIM], "value": OUTLIER_VALUE,
                                "frames": [list(p) for p in OUTLIER_FRAMES]}

    if wanted("rb_swap"):
        write(out / "rb_swap", clean_eps, bgr=True)
        manifest["rb_swap"] = {**common, "fault": "every camera's frames stored with red and blue exchanged; "
                               "the metadata says RGB", "cameras_swapped": list(CAMERAS)}

    if wanted("lag5"):
        eps = [Episode(e.task, e.actions, delayed(e.states, LAG_FRAMES), e.true_states) for e in clean_eps]
        write(out / "lag5", eps)
        manifest["lag5"] = {**common, "fault": "the state read 5 frames late: state[t] = true state[t - 5]",
                            "planted_lag_frames": LAG_FRAMES,
                            "expected_lag_frames": LAG_FRAMES + TRACKING_LAG}

    if wanted("arms_swapped"):
        eps = [Episode(e.task, np.ascontiguousarray(np.concatenate([e.actions[:, 7:], e.actions[:, :7]], axis=1)),
                       e.states, e.true_states) for e in clean_eps]
        write(out / "arms_swapped", eps)
        manifest["arms_swapped"] = {**common, "fault": "action left and right halves exchanged (leaders on the "
                                    "wrong ports); the state is right"}

    if wanted("truncated_parquet"):
        dst = out / "truncated_parquet"
        copy_clean(clean, dst)
        path = only_file(dst, "data/chunk-*/file-*.parquet")
        manifest["truncated_parquet"] = {**common, "fault": "data parquet cut to 60% of its bytes",
                                         "file": path.relative_to(dst).as_posix(), **truncate(path, 0.6)}

    if wanted("missing_video"):
        dst = out / "missing_video"
        copy_clean(clean, dst)
        path = only_file(dst, "videos/observation.images.top/chunk-*/file-*.mp4")
        path.unlink()
        manifest["missing_video"] = {**common, "fault": "the top camera's video file removed",
                                     "file": path.relative_to(dst).as_posix()}

    if wanted("corrupt_video"):
        dst = out / "corrupt_video"
        copy_clean(clean, dst)
        path = only_file(dst, "videos/observation.images.top/chunk-*/file-*.mp4")
        manifest["corrupt_video"] = {**common, "fault": "the top camera's video cut to half its bytes",
                                     "file": path.relative_to(dst).as_posix(), **truncate(path, 0.5)}

    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", nargs="*", help="write only these datasets (the clean one is written if absent)")
    args = parser.parse_args()
    main(args.out, set(args.only) if args.only else None)
    sys.exit(0)
