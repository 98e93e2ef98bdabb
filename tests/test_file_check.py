"""`replay info` checks every file it rests on and names the broken one (exit 2); the doctor reports unreadable
videos as errors. The broken datasets are LeRobot 0.6.1's own files, damaged as a failed copy damages them
(tests/golden/lerobot/datasets: a data parquet cut to 60 %, the `top` camera's mp4 missing or cut in half)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from replay.cli import main
from robodata.open import open_dataset
from robodata.recording import RecordingSpec, RecordingWriter

GOLDEN = Path(__file__).resolve().parent / "golden" / "lerobot" / "datasets"
TOP_VIDEO = "videos/observation.images.top/chunk-000/file-000.mp4"
DATA_FILE = "data/chunk-000/file-000.parquet"


def _info(dataset: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(["info", "--dataset", str(dataset)], out)
    return code, out.getvalue(), capsys.readouterr().err


@pytest.mark.parametrize("name", ["clean", "v21_clean"])
def test_clean_datasets_pass(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, text, err = _info(GOLDEN / name, capsys)
    assert code == 0 and err == ""
    files = text[text.index("\nfiles ("):]
    assert "BROKEN" not in files and files.count(" ok\n") >= 3


@pytest.mark.parametrize(("name", "broken", "problem"), [
    ("truncated_parquet", DATA_FILE, "cannot read the parquet footer"),
    ("missing_video", TOP_VIDEO, "file not found"),
    ("corrupt_video", TOP_VIDEO, "truncated or damaged: the container declares 413 frames"),
])
def test_info_names_the_broken_file(name: str, broken: str, problem: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, text, err = _info(GOLDEN / name, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"error: {GOLDEN / name}: {broken} (" in err and problem in err
    assert len(err.strip().splitlines()) == 1  # only that file
    assert f"{broken}" in text and "BROKEN: " + problem[:20] in text


def test_frame_counts_are_held_against_the_episode_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A LeRobot v2.1 episode video from another episode (the wrong length) is named with both counts."""
    root = tmp_path / "v21"
    shutil.copytree(GOLDEN / "v21_clean", root)
    videos = sorted((root / "videos").rglob("observation.images.top/episode_00000*.mp4"))
    shutil.copyfile(videos[1], videos[0])  # episode 1's 90 frames where episode 0's 64 belong
    code, _, err = _info(root, capsys)
    assert code == 2 and "episode_000000.mp4 (video top, episode 0): holds 90 frames but the episode index puts " \
                         "64 in it" in err


def test_full_check_reads_every_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Damage inside a data page leaves the footer whole: the quick check passes it, --verify full names it."""
    root = tmp_path / "damaged"
    shutil.copytree(GOLDEN / "clean", root)
    data = root / DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 4000] = b"Z" * 4000
    data.write_bytes(bytes(raw))
    assert _info(root, capsys)[0] == 0
    out = io.StringIO()
    assert main(["info", "--dataset", str(root), "--verify", "full"], out) == 2
    err = capsys.readouterr().err
    assert f"error: {root}: {DATA_FILE} (data, episodes 0..4): a data page cannot be read" in err
    assert len(err.strip().splitlines()) == 1
    out = io.StringIO()
    assert main(["info", "--dataset", str(GOLDEN / "corrupt_video"), "--verify", "full"], out) == 2
    assert f"{TOP_VIDEO} (video top, episodes 0..4): cannot be decoded" in capsys.readouterr().err


def test_recording_chunks_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Our own recordings (zarr): a camera chunk cut short is named with its episode."""
    path = tmp_path / "rec"
    names = ("j1", "gripper")
    spec = RecordingSpec(fps=30.0, state_names=names, action_names=names, cameras={"top": (24, 32)},
                         robot_type="bi_yam", chunk_frames=4)
    rng = np.random.default_rng(0)
    with RecordingWriter(path, spec) as writer:
        for _ in range(2):
            writer.start_episode("t")
            for i in range(10):
                state = np.array([i * 0.1, 0.5], dtype=np.float32)
                writer.append(i / 30.0, state, state, {"top": rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)})
            writer.end_episode()
    assert _info(path, capsys)[0] == 0
    chunks = sorted(p for p in path.rglob("*") if p.is_file() and "images" in p.parts and p.name != "zarr.json")
    last = chunks[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    code, _, err = _info(path, capsys)
    assert code == 2 and "images/top (array, episode 1): cannot be read" in err


def test_doctor_reports_unreadable_videos(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("missing_video", "corrupt_video"):
        out = io.StringIO()
        code = main(["doctor", "--dataset", str(GOLDEN / name), "--no-plots"], out)
        lines = [line for line in out.getvalue().splitlines() if line.startswith("ERROR   unreadable_video")]
        assert code == 2 and len(lines) == 1, out.getvalue()
        assert f"{TOP_VIDEO}: video top: " in lines[0] and "camera frames of episodes 0..4" in lines[0]
    assert all(check.ok for check in open_dataset(GOLDEN / "clean").verify_files())
