"""Datasets laid out exactly as the real LeRobot library writes them, read through `open_dataset`.

Why: `tests/test_data_lerobot.py` round-trips through our own writer, which shares its idea of the format with
the reader. The fixtures here come from `tests/lerobot_reference_writer.py`, which follows the upstream
huggingface/lerobot source instead (see its docstring) and imports nothing from `replay`. Each test checks what a
user would check on a real dataset: episodes, lengths, fps, state/action values, task strings, camera names,
decoded pixels (AV1 is lossy: within MAX_MEAN_ABS_DIFF levels, and each decoded frame must be closest to the
frame written at its own index), and, for v3.0, that episodes sharing one data parquet and one mp4 come back
aligned through their `dataset_*_index` rows and `from_timestamp` offsets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robodata.dataset import Dataset
from robodata.open import open_dataset
from tests.lerobot_reference_writer import (
    RefEpisode,
    RefSpec,
    assert_close_frames,
    convert_v21_to_v30,
    default_vcodec,
    expected_video_segments,
    write_v21,
    write_v30,
)

FPS = 30
MAX_MEAN_ABS_DIFF = 5.0  # AV1 crf 30 on these frames: <= ~3.1 for the right frame, >= ~8.5 for any other
TOP, WRIST = "observation.images.top", "observation.images.wrist"
CAMERAS = {TOP: (48, 64), WRIST: (32, 48)}
LENGTHS = (7, 5, 9, 6, 8)
STATE_NAMES = ["left_joint1", "left_joint2", "left_gripper"]
ACTION_NAMES = ["left_joint1_cmd", "left_joint2_cmd"]
TASKS = ("pick up the cube", "hand over the cube", "put the cube in the bin")


def frames(n: int, h: int, w: int, episode: int) -> npt.NDArray[np.uint8]:
    """A flat per-episode background and a light-grey square that moves 4 px per frame: every frame of an episode
    differs from the others by far more than the codec error, so a decode from the wrong offset or frame index
    cannot match the written frame by accident. Edges sit on even pixels and the square is grey, which keeps
    yuv420p chroma subsampling from smearing them."""
    assert 4 * (n - 1) + 12 <= w, "square would leave the frame"
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    out[...] = (40 + 25 * episode, 60 + 20 * episode, 90)
    for i in range(n):
        out[i, 4:28, 4 * i : 4 * i + 12] = 235
    return out


def make_episodes(
    lengths: Sequence[int] = LENGTHS,
    cameras: dict[str, tuple[int, int]] | None = None,
    tasks: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
) -> list[RefEpisode]:
    cams = CAMERAS if cameras is None else cameras
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        out.append(
            RefEpisode(
                states=rng.normal(size=(n, len(STATE_NAMES))).astype(np.float32),
                actions=rng.normal(size=(n, len(ACTION_NAMES))).astype(np.float32),
                tasks=list(tasks[i]) if tasks is not None else [TASKS[i % 2]] * n,
                images={key: frames(n, h, w, i) for key, (h, w) in cams.items()},
            )
        )
    return out


def spec(camera_dtype: str = "video", cameras: dict[str, tuple[int, int]] | None = None, **kw: object) -> RefSpec:
    args: dict[str, object] = {
        "fps": FPS,
        "state_dim": len(STATE_NAMES),
        "action_dim": len(ACTION_NAMES),
        "state_names_raw": list(STATE_NAMES),
        "action_names_raw": list(ACTION_NAMES),
        "cameras": CAMERAS if cameras is None else cameras,
        "camera_dtype": camera_dtype,
    }
    args.update(kw)
    return RefSpec(**args)  # type: ignore[arg-type]


def check_episodes(ds: Dataset, episodes: Sequence[RefEpisode], indices: Sequence[int], lossless: bool = False) -> None:
    """Values, timestamps, tasks and pixels of every listed episode equal what the fixture wrote."""
    assert ds.episode_indices() == sorted(indices)
    for i in indices:
        src = episodes[i]
        ep = ds.episode(i)
        n = len(src.states)
        assert len(ep) == n and ds.episode_meta(i).length == n
        np.testing.assert_array_equal(ep.states, src.states)
        np.testing.assert_array_equal(ep.actions, src.actions)
        # LeRobot stores timestamp = frame_index / fps as float32.
        np.testing.assert_array_equal(ep.timestamps, (np.arange(n) / FPS).astype(np.float32).astype(np.float64))
        assert ep.task == src.tasks[0]
        assert ds.episode_meta(i).task == src.tasks[0]
        for key, written in src.images.items():
            decoded = ep.images(key.removeprefix("observation.images."))
            if lossless:
                np.testing.assert_array_equal(decoded, written)
            else:
                assert_close_frames(decoded, written, MAX_MEAN_ABS_DIFF)


def test_fixture_uses_the_real_default_codec(v30_video: tuple[Path, list[RefEpisode]]) -> None:
    """The real default is libsvtav1 (AV1, yuv420p); this PyAV build has it, so the fixtures are AV1 files."""
    root, _ = v30_video
    info = json.loads((root / "meta/info.json").read_text())
    video = info["features"][TOP]["info"]
    expected = "av1" if default_vcodec() == "libsvtav1" else "h264"
    assert video["video.codec"] == expected and video["video.pix_fmt"] == "yuv420p"


# ---- v3.0 with videos: several episodes per data file and per mp4, independent rollovers ----------------------


@pytest.fixture(scope="module")
def v30_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[RefEpisode]]:
    """5 episodes: data files {0,1,2} {3,4}; top-camera mp4s {0,1} {2,3} {4} (the last in chunk-001 because
    chunks_size=2); all wrist frames in one mp4. Action names are written as {"motors": [...]}."""
    episodes = make_episodes()
    root = write_v30(
        tmp_path_factory.mktemp("ref") / "v30",
        spec(action_names_raw={"motors": list(ACTION_NAMES)}),
        episodes,
        data_file_starts=[0, 3],
        video_file_starts={TOP: [0, 2, 4]},
        chunks_size=2,
    )
    return root, episodes


def test_v30_fixture_layout_is_shared_files(v30_video: tuple[Path, list[RefEpisode]]) -> None:
    """Guard the fixture itself: the cases the reader must handle really are on disk."""
    root, _ = v30_video
    assert sorted(p.relative_to(root).as_posix() for p in root.glob("data/*/*.parquet")) == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
    ]
    assert pq.ParquetFile(root / "data/chunk-000/file-000.parquet").metadata.num_row_groups == 3
    segments = expected_video_segments(root)
    wrist_from = [segments[i][WRIST][1] for i in range(5)]
    assert wrist_from == pytest.approx(np.cumsum((0,) + LENGTHS[:-1]) / FPS)
    assert segments[3][TOP][0].relative_to(root).as_posix() == f"videos/{TOP}/chunk-000/file-001.mp4"
    assert segments[3][TOP][1] == pytest.approx(LENGTHS[2] / FPS)
    assert segments[4][TOP][0].relative_to(root).as_posix() == f"videos/{TOP}/chunk-001/file-000.mp4"
    schema = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    assert schema.field("action").type == pa.list_(pa.float32(), len(ACTION_NAMES))
    assert TOP not in schema.names and b"huggingface" in (schema.metadata or {})


def test_v30_video_reads_back(v30_video: tuple[Path, list[RefEpisode]]) -> None:
    root, episodes = v30_video
    ds = open_dataset(root)
    info = ds.info
    assert info.format == "lerobot-v3.0" and info.fps == FPS and info.robot_type == "bi_yam"
    assert info.num_episodes == len(LENGTHS) and info.num_frames == sum(LENGTHS)
    assert info.state_names == tuple(STATE_NAMES) and info.action_names == tuple(ACTION_NAMES)
    assert [(c.name, c.height, c.width) for c in info.cameras] == [("top", 48, 64), ("wrist", 32, 48)]
    assert info.tasks == TASKS[:2]
    assert info.notes == ()
    check_episodes(ds, episodes, range(len(LENGTHS)))
    all_actions = np.concatenate([e.actions for e in episodes]).astype(np.float64)
    assert info.stats is not None
    np.testing.assert_allclose(info.stats["action"]["mean"], all_actions.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(info.stats["action"]["std"], all_actions.std(axis=0), atol=1e-6)
    assert info.stats["observation.images.top"]["mean"].shape == (3, 1, 1)


def test_v30_video_subset_uses_offsets(v30_video: tuple[Path, list[RefEpisode]]) -> None:
    """Episodes 3 and 1 alone: each sits at a non-zero offset in a shared mp4 and parquet."""
    root, episodes = v30_video
    ds = open_dataset(root, episodes=[3, 1])
    assert ds.info.num_episodes == 2 and ds.info.num_frames == LENGTHS[3] + LENGTHS[1]
    check_episodes(ds, episodes, [1, 3])


# ---- v3.0 with image features (no video) -------------------------------------------------------------------------


def test_v30_image_features(tmp_path: Path) -> None:
    episodes = make_episodes()
    root = write_v30(tmp_path / "v30img", spec("image"), episodes, data_file_starts=[0, 2])
    info = json.loads((root / "meta/info.json").read_text())
    assert info["video_path"] is None and info["features"][TOP]["dtype"] == "image"
    table = pq.read_table(root / "data/chunk-000/file-000.parquet", columns=[TOP])
    assert table.schema.field(TOP).type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert table.column(TOP)[1].as_py()["path"] == "frame-000001.png"  # embed_images keeps the basename
    ds = open_dataset(root)
    assert [c.name for c in ds.info.cameras] == ["top", "wrist"]
    check_episodes(ds, episodes, range(len(LENGTHS)), lossless=True)


# ---- v2.1 --------------------------------------------------------------------------------------------------------


def test_v21_motors_names_and_legacy_chunks(tmp_path: Path) -> None:
    """Names as {"motors": [...]} (aloha-style) and episodes spread over chunk-000 / chunk-001."""
    episodes = make_episodes()
    root = write_v21(
        tmp_path / "v21",
        spec(state_names_raw={"motors": list(STATE_NAMES)}, action_names_raw={"motors": list(ACTION_NAMES)}),
        episodes,
        chunks_size=2,
    )
    assert (root / f"videos/chunk-002/{TOP}/episode_000004.mp4").is_file()
    assert (root / "data/chunk-001/episode_000003.parquet").is_file()
    ds = open_dataset(root)
    info = ds.info
    assert info.format == "lerobot-v2.1" and info.fps == FPS
    assert info.state_names == tuple(STATE_NAMES) and info.action_names == tuple(ACTION_NAMES)
    assert info.tasks == TASKS[:2]
    check_episodes(ds, episodes, range(len(LENGTHS)))
    assert info.stats is not None
    all_states = np.concatenate([e.states for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(info.stats["observation.state"]["mean"], all_states.mean(axis=0), atol=1e-6)
    assert any("aggregated from meta/episodes_stats.jsonl" in n for n in info.notes)


# ---- v2.1 -> v3.0 conversion (how every Hub dataset got to v3.0) ---------------------------------------------------


def test_converted_v21_to_v30(tmp_path: Path) -> None:
    episodes = make_episodes()
    old = write_v21(tmp_path / "v21", spec(), episodes)
    root = convert_v21_to_v30(old, tmp_path / "v30", data_file_starts=[0, 2], video_file_starts={WRIST: [0, 3]})
    schema = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    assert schema.field("observation.state").type == pa.list_(pa.float32())  # variable length after pandas
    assert b"pandas" in (schema.metadata or {})
    info = json.loads((root / "meta/info.json").read_text())
    assert "total_chunks" not in info and info["features"]["action"]["fps"] == FPS
    ds = open_dataset(root)
    assert ds.info.format == "lerobot-v3.0" and ds.info.tasks == TASKS[:2]
    check_episodes(ds, episodes, range(len(LENGTHS)))
    assert any("no quantiles" in n for n in ds.info.notes)


# ---- names missing, several tasks --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_null_state_names(tmp_path: Path, version: str) -> None:
    episodes = make_episodes(lengths=(4, 3), cameras={})
    ref = spec(cameras={}, state_names_raw=None)
    root = (write_v30 if version == "v3.0" else write_v21)(tmp_path / "ds", ref, episodes)
    ds = open_dataset(root)
    assert ds.info.state_names == ("state_0", "state_1", "state_2")
    assert ds.info.action_names == tuple(ACTION_NAMES) and ds.info.cameras == ()
    assert any("'observation.state' has no names" in n for n in ds.info.notes)
    check_episodes(ds, episodes, [0, 1])


@pytest.mark.parametrize("tasks_index_name", [None, "task"])
def test_several_tasks(tmp_path: Path, tasks_index_name: str | None) -> None:
    """Three tasks over five episodes; episode 2 switches task mid-episode (per-frame `task` in add_frame).

    tasks.parquet keeps the text as the pandas index: `__index_level_0__` (lerobot 0.4) or `task` (later).
    An episode's task is the task of its first frame. The dataset also carries the newest library's
    `language_persistent` / `language_events` features (dtype "language"), which a reader must tolerate.
    """
    per_episode = [
        [TASKS[0]] * 7,
        [TASKS[1]] * 5,
        [TASKS[1]] * 4 + [TASKS[2]] * 5,
        [TASKS[2]] * 6,
        [TASKS[0]] * 8,
    ]
    episodes = make_episodes(cameras={}, tasks=per_episode)
    ref = spec(cameras={}, language_columns=True)
    root = write_v30(tmp_path / "ds", ref, episodes, tasks_index_name=tasks_index_name)
    assert "language_events" in pq.read_schema(root / "data/chunk-000/file-000.parquet").names
    ds = open_dataset(root)
    assert ds.info.tasks == TASKS
    check_episodes(ds, episodes, range(len(LENGTHS)))
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet", columns=["tasks"]).to_pylist()
    assert rows[2]["tasks"] == [TASKS[1], TASKS[2]]


# ---- feature keys chosen by the dataset author ---------------------------------------------------------------------


def test_custom_feature_keys_openpi_libero_style(tmp_path: Path) -> None:
    """openpi's LIBERO conversion calls `LeRobotDataset.create(features=...)` with keys `image`, `wrist_image`
    (dtype image), `state`, `actions`, and one-word names lists that do not match the vector width. LeRobot
    treats every image/video-dtype feature as a camera whatever its key; so must we."""
    cams = {"image": (32, 48), "wrist_image": (32, 48)}
    episodes = make_episodes(lengths=(5, 4), cameras=cams)
    ref = spec(
        "image",
        cameras=cams,
        state_key="state",
        action_key="actions",
        state_names_raw=["state"],
        action_names_raw=["actions"],
    )
    root = write_v21(tmp_path / "libero", ref, episodes)
    ds = open_dataset(root, state_key="state", action_key="actions")
    assert [c.name for c in ds.info.cameras] == ["image", "wrist_image"]
    assert ds.info.state_names == ("state_0", "state_1", "state_2")
    assert ds.info.action_names == ("actions_0", "actions_1")
    assert any("'state' names (1) do not match its dimension 3" in n for n in ds.info.notes)
    check_episodes(ds, episodes, [0, 1], lossless=True)
