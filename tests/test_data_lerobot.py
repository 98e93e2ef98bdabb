"""LeRobot v3.0 / v2.1 datasets written by robodata.lerobot_writer read back through robodata.lerobot_reader.

Fixtures are real files in tmp_path. Numbers must come back exactly (float32 as written); PNG images exactly;
AV1 video within a mean absolute difference of AV1_MAX_MEAN_ABS_DIFF levels (lossy codec).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robodata.dataset import DatasetError
from robodata.lerobot_reader import LeRobotDataset, LeRobotOptions, open_lerobot
from robodata.lerobot_writer import (
    CameraFeature,
    EpisodeData,
    LeRobotWriter,
    LeRobotWriterConfig,
    write_lerobot_dataset,
)
from robodata.stats import aggregate_stats, compute_feature_stats, compute_image_stats
from robodata.video import VideoEncoding

AV1_MAX_MEAN_ABS_DIFF = 3.0
STATE_NAMES = ("left_joint1", "left_joint2", "left_gripper")
ACTION_NAMES = ("left_joint1_cmd", "left_joint2_cmd")
CAMS = (CameraFeature("top", 48, 64), CameraFeature("wrist", 32, 48))
LENGTHS = (23, 17, 30, 12, 19)
TASKS = ("pick up the cube", "hand over the cube")


def smooth_frames(n: int, h: int, w: int, seed: int) -> npt.NDArray[np.uint8]:
    """Gradients plus a moving square: compressible like camera images, different every frame."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        out[i, ..., 0] = np.clip(40 + 2 * xx + 2 * i, 0, 255)
        out[i, ..., 1] = np.clip(60 + 3 * yy + 10 * seed, 0, 255)
        out[i, ..., 2] = 90 + seed * 10
        x0 = (4 * i) % (w - 8)
        out[i, 8:16, x0 : x0 + 8] = (230, 40, 40)
    return out


def make_episodes(lengths: tuple[int, ...] = LENGTHS, seed: int = 0) -> list[EpisodeData]:
    rng = np.random.default_rng(seed)
    episodes = []
    for i, n in enumerate(lengths):
        episodes.append(
            EpisodeData(
                task=TASKS[i % 2],
                states=rng.normal(size=(n, len(STATE_NAMES))),
                actions=rng.normal(size=(n, len(ACTION_NAMES))),
                images={
                    cam.name: smooth_frames(n, cam.height, cam.width, i + k) for k, cam in enumerate(CAMS)
                },
            )
        )
    return episodes


def config(version: str, storage: str, **kw: object) -> LeRobotWriterConfig:
    return LeRobotWriterConfig(
        fps=30,
        state_names=STATE_NAMES,
        action_names=ACTION_NAMES,
        cameras=CAMS,
        version=version,
        robot_type="bi_yam",
        camera_storage=storage,
        **kw,  # type: ignore[arg-type]
    )


def assert_roundtrip(ds: LeRobotDataset, episodes: list[EpisodeData], lossless: bool) -> None:
    for i in ds.episode_indices():
        src = episodes[i]
        ep = ds.episode(i)
        n = len(ep)
        assert ep.task == src.task
        np.testing.assert_array_equal(ep.states, np.asarray(src.states, dtype=np.float32))
        np.testing.assert_array_equal(ep.actions, np.asarray(src.actions, dtype=np.float32))
        expected_ts = (np.arange(n) / 30.0).astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(ep.timestamps, expected_ts)
        for cam in CAMS:
            frames = ep.images(cam.name)
            assert frames.shape == (n, cam.height, cam.width, 3) and frames.dtype == np.uint8
            if lossless:
                np.testing.assert_array_equal(frames, src.images[cam.name])
            else:
                diff = np.abs(frames.astype(np.int16) - src.images[cam.name].astype(np.int16)).mean()
                assert diff < AV1_MAX_MEAN_ABS_DIFF, f"episode {i} camera {cam.name}: mean abs diff {diff}"


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
@pytest.mark.parametrize("storage", ["video", "image"])
def test_roundtrip(tmp_path: Path, version: str, storage: str) -> None:
    episodes = make_episodes()
    root = write_lerobot_dataset(tmp_path / "ds", config(version, storage), episodes)
    ds = LeRobotDataset(root)
    info = ds.info
    assert info.format == f"lerobot-{version}"
    assert info.fps == 30 and info.robot_type == "bi_yam"
    assert info.num_episodes == len(LENGTHS) and info.num_frames == sum(LENGTHS)
    assert info.state_names == STATE_NAMES and info.action_names == ACTION_NAMES
    assert [(c.name, c.height, c.width, c.source_key) for c in info.cameras] == [
        (c.name, c.height, c.width, f"observation.images.{c.name}") for c in CAMS
    ]
    assert info.tasks == TASKS
    assert ds.episode_indices() == list(range(len(LENGTHS)))
    assert_roundtrip(ds, episodes, lossless=storage == "image")
    assert [ds.episode_meta(i).length for i in ds.episode_indices()] == list(LENGTHS)


def test_stats_v3_exact(tmp_path: Path) -> None:
    episodes = make_episodes()
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "video"), episodes)
    stats = LeRobotDataset(root).info.stats
    assert stats is not None
    states = np.concatenate([np.asarray(e.states, dtype=np.float32) for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["observation.state"]["std"], states.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(stats["observation.state"]["q01"], np.quantile(states, 0.01, axis=0))
    np.testing.assert_array_equal(stats["observation.state"]["q99"], np.quantile(states, 0.99, axis=0))
    assert stats["action"]["count"].tolist() == [sum(LENGTHS)]
    pixels = np.concatenate([e.images["top"] for e in episodes]).reshape(-1, 3).astype(np.float64) / 255
    top = stats["observation.images.top"]
    assert top["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(top["mean"].ravel(), pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(top["q10"].ravel(), np.quantile(pixels, 0.10, axis=0), rtol=1e-12)
    assert set(top) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def test_stats_v21_aggregated_from_episode_stats(tmp_path: Path) -> None:
    episodes = make_episodes()
    root = write_lerobot_dataset(tmp_path / "ds", config("v2.1", "image"), episodes)
    ds = LeRobotDataset(root, LeRobotOptions(episodes=(1, 3)))
    assert ds.info.stats is not None
    actions = np.concatenate([np.asarray(episodes[i].actions, np.float32) for i in (1, 3)]).astype(np.float64)
    np.testing.assert_allclose(ds.info.stats["action"]["mean"], actions.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(ds.info.stats["action"]["std"], actions.std(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(ds.info.stats["action"]["min"], actions.min(axis=0))
    assert "q01" not in ds.info.stats["action"]
    assert any("quantiles" in n or "q01" in n for n in ds.info.notes)


def test_noncontiguous_subset_across_rolled_over_files(tmp_path: Path) -> None:
    """Tiny size limits force several data and video files; a non-contiguous subset still reads right."""
    episodes = make_episodes()
    cfg = config("v3.0", "video", data_files_size_in_mb=0.001, video_files_size_in_mb=0.001, chunks_size=2)
    root = write_lerobot_dataset(tmp_path / "ds", cfg, episodes)
    assert len(list(root.glob("data/chunk-*/file-*.parquet"))) > 1
    assert len(list(root.glob("videos/observation.images.top/chunk-*/file-*.mp4"))) > 1
    assert (root / "data/chunk-001").is_dir()
    ds = open_lerobot(root, episodes=[4, 0, 2])
    assert ds.episode_indices() == [0, 2, 4]
    assert ds.info.num_frames == LENGTHS[0] + LENGTHS[2] + LENGTHS[4]
    assert any("3 of 5" in n for n in ds.info.notes)
    assert_roundtrip(ds, episodes, lossless=False)
    with pytest.raises(DatasetError, match="episode 1"):
        ds.episode(1)


def test_other_codecs(tmp_path: Path) -> None:
    episodes = make_episodes((9, 11))
    for codec in ("mpeg4", "libx264"):
        cfg = config("v2.1", "video", video=VideoEncoding(codec=codec, crf=18))
        root = write_lerobot_dataset(tmp_path / codec, cfg, episodes)
        info = json.loads((root / "meta/info.json").read_text())
        assert info["features"]["observation.images.top"]["info"]["video.codec"] in ("mpeg4", "h264")
        ds = LeRobotDataset(root)
        for i in ds.episode_indices():
            frames = ds.episode(i).images("top")
            diff = np.abs(frames.astype(np.int16) - episodes[i].images["top"].astype(np.int16)).mean()
            assert diff < 6.0


def test_on_disk_format_v3(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "video"), make_episodes())
    info = json.loads((root / "meta/info.json").read_text())
    for key in (
        "codebase_version",
        "robot_type",
        "total_episodes",
        "total_frames",
        "total_tasks",
        "chunks_size",
        "data_files_size_in_mb",
        "video_files_size_in_mb",
        "fps",
        "splits",
        "data_path",
        "video_path",
        "features",
    ):
        assert key in info, key
    assert info["codebase_version"] == "v3.0" and info["splits"] == {"train": "0:5"}
    assert info["features"]["observation.state"]["names"] == list(STATE_NAMES)
    video = info["features"]["observation.images.top"]
    assert video["dtype"] == "video" and video["shape"] == [48, 64, 3]
    assert video["info"]["video.codec"] == "av1" and video["info"]["video.pix_fmt"] == "yuv420p"
    schema = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    assert schema.field("observation.state").type == pa.list_(pa.float32(), 3)
    assert schema.field("action").type == pa.list_(pa.float32(), 2)
    assert schema.field("timestamp").type == pa.float32()
    for col in ("frame_index", "episode_index", "index", "task_index"):
        assert schema.field(col).type == pa.int64()
    assert "observation.images.top" not in schema.names  # video features live in the mp4 only
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    for col in (
        "episode_index",
        "tasks",
        "length",
        "dataset_from_index",
        "dataset_to_index",
        "data/chunk_index",
        "data/file_index",
        "videos/observation.images.top/from_timestamp",
        "videos/observation.images.top/to_timestamp",
        "meta/episodes/chunk_index",
        "stats/action/mean",
        "stats/observation.images.top/q99",
    ):
        assert col in eps.column_names, col
    assert eps.column("videos/observation.images.top/from_timestamp").to_pylist()[1] == pytest.approx(23 / 30)
    tasks = pq.read_table(root / "meta/tasks.parquet")
    pandas_meta = json.loads(tasks.schema.metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["task"]
    assert tasks.column("task").to_pylist() == list(TASKS)


def test_on_disk_format_v21(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v2.1", "video"), make_episodes())
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["total_videos"] == 10 and info["total_chunks"] == 1
    assert (root / "videos/chunk-000/observation.images.top/episode_000004.mp4").is_file()
    assert (root / "data/chunk-000/episode_000002.parquet").is_file()
    rows = [json.loads(line) for line in (root / "meta/episodes.jsonl").read_text().splitlines()]
    assert rows[1] == {"episode_index": 1, "tasks": [TASKS[1]], "length": 17}
    tasks = [json.loads(line) for line in (root / "meta/tasks.jsonl").read_text().splitlines()]
    assert tasks == [{"task_index": 0, "task": TASKS[0]}, {"task_index": 1, "task": TASKS[1]}]
    stats = json.loads((root / "meta/episodes_stats.jsonl").read_text().splitlines()[0])
    assert set(stats["stats"]["action"]) == {"min", "max", "mean", "std", "count"}


def test_image_feature_bytes_struct(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "image"), make_episodes((5,)))
    schema = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    assert schema.field("observation.images.top").type == pa.struct(
        [("bytes", pa.binary()), ("path", pa.string())]
    )


@pytest.mark.parametrize("variant", ["unnamed_index", "plain_column"])
def test_tasks_parquet_variants(tmp_path: Path, variant: str) -> None:
    """pandas writes the task text as '__index_level_0__' (unnamed index) or 'task'; both must read."""
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "image"), make_episodes((4, 4)))
    col = "__index_level_0__" if variant == "unnamed_index" else "task"
    table = pa.table({"task_index": pa.array([0, 1], pa.int64()), col: pa.array(list(TASKS))})
    pq.write_table(table, root / "meta/tasks.parquet")
    ds = LeRobotDataset(root)
    assert ds.info.tasks == TASKS
    assert ds.episode(1).task == TASKS[1]


def _edit_info(root: Path, edit: dict[str, object]) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    for dotted, value in edit.items():
        node = info
        parts = dotted.split("|")
        for part in parts[:-1]:
            node = node[part]
        if value is None and parts[-1].startswith("-"):
            del node[parts[-1][1:]]
        else:
            node[parts[-1]] = value
    path.write_text(json.dumps(info))


def test_names_as_dict_or_null(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "image"), make_episodes((4,)))
    _edit_info(
        root,
        {"features|observation.state|names": {"motors": list(STATE_NAMES)}, "features|action|names": None},
    )
    ds = LeRobotDataset(root)
    assert ds.info.state_names == STATE_NAMES
    assert ds.info.action_names == ("action_0", "action_1")
    assert any("'action' has no names" in n for n in ds.info.notes)


def test_v3_without_stats_json_uses_episode_stats(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "image"), make_episodes())
    (root / "meta/stats.json").unlink()
    ds = LeRobotDataset(root)
    assert ds.info.stats is not None and "q01" in ds.info.stats["action"]
    assert any("per-episode stats" in n for n in ds.info.notes)


def test_chw_camera_shape(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v2.1", "image"), make_episodes((3,)))
    _edit_info(
        root,
        {
            "features|observation.images.top|shape": [3, 48, 64],
            "features|observation.images.top|names": ["channels", "height", "width"],
        },
    )
    cam = LeRobotDataset(root).info.camera("top")
    assert (cam.height, cam.width) == (48, 64)


def test_template_spelling_and_observation_image_key(tmp_path: Path) -> None:
    """Other writers use {chunk}/{file} placeholders and a bare `observation.image` camera key."""
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "image"), make_episodes((4, 5)))
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    table = table.rename_columns(
        ["observation.image" if c == "observation.images.top" else c for c in table.column_names]
    )
    pq.write_table(table, path)
    info = json.loads((root / "meta/info.json").read_text())
    info["data_path"] = "data/chunk-{chunk:03d}/file-{file:03d}.parquet"
    info["features"]["observation.image"] = info["features"].pop("observation.images.top")
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = LeRobotDataset(root)
    assert ds.info.camera_names == ("wrist", "image")
    np.testing.assert_array_equal(ds.episode(1).images("image"), make_episodes((4, 5))[1].images["top"])


# ---- failures are loud and name what is wrong ----------------------------------------------------------


def test_video_with_missing_frames_raises(tmp_path: Path) -> None:
    episodes = make_episodes((10, 14))
    root = write_lerobot_dataset(tmp_path / "ds", config("v2.1", "video"), episodes)
    short = write_lerobot_dataset(tmp_path / "short", config("v2.1", "video"), make_episodes((6,)))
    target = root / "videos/chunk-000/observation.images.top/episode_000000.mp4"
    shutil.copy(short / "videos/chunk-000/observation.images.top/episode_000000.mp4", target)
    ep = LeRobotDataset(root).episode(0)
    with pytest.raises(DatasetError, match=r"decoded 6 frames .* 10 frames"):
        ep.images("top")


def test_v3_segment_mismatch_raises(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "video"), make_episodes((10, 12)))
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    col = "videos/observation.images.top/to_timestamp"
    idx = table.column_names.index(col)
    table = table.set_column(idx, col, pa.array([5 / 30, 22 / 30], pa.float64()))
    pq.write_table(table, path)
    with pytest.raises(DatasetError, match="decoded 5 frames"):
        LeRobotDataset(root).episode(0).images("top")


def test_empty_or_corrupt_video_raises(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v2.1", "video"), make_episodes((8,)))
    (root / "videos/chunk-000/observation.images.wrist/episode_000000.mp4").write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="episode_000000.mp4"):
        LeRobotDataset(root).episode(0).images("wrist")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"-features": None}, r"info.json: missing field 'features'"),
        ({"codebase_version": "v1.6"}, r"codebase_version 'v1.6' is not supported"),
        ({"features|observation.state|shape": "14"}, r"features\['observation.state'\].shape"),
        ({"-fps": None}, r"missing field 'fps'"),
        ({"features|-action": None}, r"no feature 'action'"),
    ],
)
def test_bad_info_json(tmp_path: Path, edit: dict[str, object], match: str) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "image"), make_episodes((3,)))
    _edit_info(root, edit)
    with pytest.raises(DatasetError, match=match):
        LeRobotDataset(root)


def test_wrong_vector_width_in_parquet(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "image"), make_episodes((3,)))
    _edit_info(
        root,
        {
            "features|observation.state|shape": [5],
            "features|observation.state|names": [f"j{i}" for i in range(5)],
        },
    )
    with pytest.raises(DatasetError, match=r"column 'observation.state' holds vectors of 3, expected 5"):
        LeRobotDataset(root).episode(0)


def test_missing_files_and_columns(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"meta/info.json: file not found"):
        LeRobotDataset(tmp_path)
    root = write_lerobot_dataset(tmp_path / "ds", config("v3.0", "image"), make_episodes((3,)))
    path = root / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["timestamp"]), path)
    with pytest.raises(DatasetError, match=r"file-000.parquet: missing columns \['timestamp'\]"):
        LeRobotDataset(root).episode(0)
    with pytest.raises(DatasetError, match=r"episodes \[7\] are not in the dataset"):
        LeRobotDataset(root, LeRobotOptions(episodes=(0, 7)))


def test_episode_length_mismatch(tmp_path: Path) -> None:
    root = write_lerobot_dataset(tmp_path / "ds", config("v2.1", "image"), make_episodes((6, 5)))
    path = root / "meta/episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["length"] = 7
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match="episode 0 has 6 rows but its metadata says length 7"):
        LeRobotDataset(root).episode(0)


@pytest.mark.parametrize(
    ("field_name", "value", "match"),
    [
        ("states", np.zeros((4, 2)), r"states must be \[T, 3\]"),
        ("actions", np.full((4, 2), np.nan), "actions has non-finite values"),
        ("images", {"top": np.zeros((4, 48, 64, 3), np.uint8)}, r"images\['wrist'\] missing"),
        (
            "images",
            {"top": np.zeros((4, 48, 64, 3), np.float32), "wrist": np.zeros((4, 32, 48, 3), np.uint8)},
            r"images\['top'\] must be uint8",
        ),
        ("timestamps", np.array([0.0, 0.1, 0.1, 0.2]), "strictly increasing"),
        ("task", "", "task must be a non-empty string"),
    ],
)
def test_writer_rejects_bad_episodes(tmp_path: Path, field_name: str, value: object, match: str) -> None:
    ep = make_episodes((4,))[0]
    setattr(ep, field_name, value)
    writer = LeRobotWriter(tmp_path / "ds", config("v3.0", "image"))
    with pytest.raises(DatasetError, match=match):
        writer.add_episode(ep)


def test_writer_refuses_to_clobber(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="already exists"):
        LeRobotWriter(tmp_path / "other", config("v3.0", "image"))
    with pytest.raises(DatasetError, match="not a LeRobot dataset"):
        LeRobotWriter(tmp_path / "other", config("v3.0", "image", overwrite=True))
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


# ---- stats helpers -------------------------------------------------------------------------------------


def test_image_stats_match_numpy() -> None:
    frames = np.random.default_rng(3).integers(0, 256, size=(7, 9, 11, 3), dtype=np.uint8)
    stats = compute_image_stats(frames)
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255
    for key, q in (("q01", 0.01), ("q50", 0.5), ("q99", 0.99)):
        np.testing.assert_allclose(stats[key].ravel(), np.quantile(pixels, q, axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats["std"].ravel(), pixels.std(axis=0), rtol=1e-10)
    assert stats["count"].tolist() == [7]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
    st.integers(min_value=0, max_value=2**31 - 1),
)
def test_aggregate_equals_pooled(lengths: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(rng.normal(), 1 + rng.random(), size=(n, 4)) for n in lengths]
    agg = aggregate_stats([{"x": compute_feature_stats(p, with_quantiles=False)} for p in parts])
    whole = np.concatenate(parts)
    np.testing.assert_allclose(agg["x"]["mean"], whole.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(agg["x"]["std"], whole.std(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(agg["x"]["max"], whole.max(axis=0))
    assert agg["x"]["count"].tolist() == [len(whole)]
