"""Recordings: RecordingWriter -> RecordingDataset round trip, input validation, drops, and crash safety
(a writer process killed with SIGKILL leaves its completed episodes intact)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from robodata.dataset import DatasetError
from robodata.open import open_dataset
from robodata.recording import RecordingDataset, RecordingOptions, RecordingSpec, RecordingWriter

REPO = Path(__file__).resolve().parents[1]
NAMES = ("j1", "j2", "j3", "gripper")
CAM = (24, 32)


def spec(**kw: object) -> RecordingSpec:
    base: dict[str, object] = {
        "fps": 30.0,
        "state_names": NAMES,
        "action_names": NAMES,
        "cameras": {"top": CAM},
        "robot_type": "bi_yam",
        "chunk_frames": 8,
    }
    base.update(kw)
    return RecordingSpec(**base)  # type: ignore[arg-type]


def frame(ep: int, i: int) -> tuple[float, npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """Deterministic frame content, so a reader can check every value."""
    state = np.array([ep, i, ep * 0.5 + i * 0.01, 1.0], dtype=np.float32)
    action = state + np.float32(0.25)
    image = np.full((*CAM, 3), (ep * 31 + i) % 256, dtype=np.uint8)
    return 100.0 + i / 30.0, state, action, image


def check_episode(ds: RecordingDataset, index: int, ep: int, n: int) -> None:
    episode = ds.episode(index)
    assert len(episode) == n
    for i in (0, n // 2, n - 1):
        _, state, action, image = frame(ep, i)
        np.testing.assert_array_equal(episode.states[i], state)
        np.testing.assert_array_equal(episode.actions[i], action)
        np.testing.assert_array_equal(episode.images("top")[i], image)
    np.testing.assert_allclose(episode.timestamps, np.arange(n) / 30.0, atol=1e-9)


def test_roundtrip_with_extras(tmp_path: Path) -> None:
    path = tmp_path / "rec"
    with RecordingWriter(path, spec()) as writer:
        for ep, n in enumerate((13, 16, 5)):
            assert writer.start_episode(f"task {ep % 2}") == ep
            for i in range(n):
                t, s, a, img = frame(ep, i)
                extras: dict[str, npt.ArrayLike] = {
                    "commanded": a * 2,
                    "latency_ms": np.float32(i),
                    "chunk_ok": True,
                }
                assert writer.append(t, s, a, {"top": img}, extras=extras)
            summary = writer.end_episode()
            assert (summary.index, summary.length, summary.dropped_frames, summary.complete) == (ep, n, 0, True)
    ds = RecordingDataset(path)
    info = ds.info
    assert info.format == "recording-zarr" and info.num_episodes == 3 and info.num_frames == 34
    assert info.state_names == NAMES and info.robot_type == "bi_yam" and info.fps == 30.0
    assert info.tasks == ("task 0", "task 1")
    assert info.camera("top").height == 24 and info.features["extras/commanded"].shape == (4,)
    for ep, n in enumerate((13, 16, 5)):
        check_episode(ds, ep, ep, n)
        assert ds.episode_meta(ep).length == n
        stored = ds.extras(ep)
        np.testing.assert_array_equal(stored["commanded"][3], frame(ep, 3)[2] * 2)
        assert stored["latency_ms"].dtype == np.float32 and stored["chunk_ok"].dtype == np.bool_
        np.testing.assert_allclose(ds.raw_timestamps(ep), 100.0 + np.arange(n) / 30.0)
        attrs = ds.episode_attrs(ep)
        assert attrs["complete"] is True and attrs["length"] == n and attrs["dropped_frames"] == 0
        assert attrs["ended_unix"] >= attrs["started_unix"]
    assert open_dataset(path).info.format == "recording-zarr"


def test_reopen_appends_and_checks_spec(tmp_path: Path) -> None:
    path = tmp_path / "rec"
    for round_ in range(2):
        with RecordingWriter(path, spec()) as writer:
            index = writer.start_episode("t")
            assert index == round_
            for i in range(3):
                t, s, a, img = frame(index, i)
                writer.append(t, s, a, {"top": img})
    assert RecordingDataset(path).episode_indices() == [0, 1]
    with pytest.raises(DatasetError, match=r"existing recording differs in \['fps'\]"):
        RecordingWriter(path, spec(fps=15.0))
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a recording"):
        RecordingWriter(other, spec())


def _writer_with_episode(tmp_path: Path) -> RecordingWriter:
    writer = RecordingWriter(tmp_path / "rec", spec())
    writer.start_episode("t")
    t, s, a, img = frame(0, 0)
    writer.append(t, s, a, {"top": img}, extras={"cmd": np.zeros(3)})
    return writer


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"state": np.zeros(5)}, r"state must be a real vector of shape \[4\]"),
        ({"action": np.array([0, np.nan, 0, 0])}, "action has non-finite values"),
        ({"images": {}}, r"images must hold exactly the cameras \['top'\]"),
        ({"images": {"top": np.zeros((24, 32, 3), np.float32)}}, r"images\['top'\] must be uint8 \[24, 32, 3\]"),
        ({"timestamp": float("nan")}, "timestamp must be finite"),
        ({"timestamp": 100.0}, "is not after the previous frame"),
        ({"timestamp": True}, "timestamp must be a number"),
        ({"extras": {"cmd": np.zeros(4)}}, r"extras\['cmd'\] must have shape \(3,\)"),
        ({"extras": {"cmd": np.zeros(3), "new": 1.0}}, "extras must hold the names fixed by the episode's first"),
        ({"extras": {"cmd": np.array(["a", "b", "c"])}}, r"extras\['cmd'\] must be numeric or bool"),
    ],
)
def test_append_rejects_bad_frames(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    writer = _writer_with_episode(tmp_path)
    t, s, a, img = frame(0, 1)
    args: dict[str, object] = {
        "timestamp": t,
        "state": s,
        "action": a,
        "images": {"top": img},
        "extras": {"cmd": np.zeros(3)},
    }
    args.update(kwargs)
    with pytest.raises(DatasetError, match=match):
        writer.append(**args)  # type: ignore[arg-type]
    writer.append(t, s, a, {"top": img}, extras={"cmd": np.ones(3)})  # the store is still usable
    writer.close()
    ds = RecordingDataset(tmp_path / "rec")
    assert len(ds.episode(0)) == 2


def test_call_order_errors(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "rec", spec()) as writer:
        t, s, a, img = frame(0, 0)
        with pytest.raises(DatasetError, match="outside an episode"):
            writer.append(t, s, a, {"top": img})
        with pytest.raises(DatasetError, match="without an open episode"):
            writer.end_episode()
        writer.start_episode("t")
        with pytest.raises(DatasetError, match="still open"):
            writer.start_episode("again")
        writer.append(t, s, a, {"top": img})
    with pytest.raises(DatasetError, match="closed"):
        writer.start_episode("late")


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    """With a one-frame queue, a burst of appends must drop frames, never block, and record the count."""
    path = tmp_path / "rec"
    big = {"top": (240, 320)}
    writer = RecordingWriter(path, spec(cameras=big, queue_frames=1, chunk_frames=4))
    writer.start_episode("burst")
    image = np.random.default_rng(0).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    accepted = 0
    slowest = 0.0
    with pytest.warns(RuntimeWarning, match="dropped frame"):
        for i in range(200):
            _, s, a, _ = frame(0, i)
            start = time.perf_counter()
            accepted += writer.append(i / 30.0, s, a, {"top": image})
            slowest = max(slowest, time.perf_counter() - start)
    dropped = writer.dropped_frames
    summary = writer.end_episode()
    writer.close()
    assert dropped > 0 and accepted + dropped == 200
    assert summary.length == accepted and summary.dropped_frames == dropped
    assert RecordingDataset(path).episode_attrs(0)["dropped_frames"] == dropped
    assert slowest < 0.5, f"append blocked for {slowest:.3f} s"


def test_exception_leaves_episode_incomplete_but_recoverable(tmp_path: Path) -> None:
    path = tmp_path / "rec"
    with pytest.raises(RuntimeError, match="operator abort"):
        with RecordingWriter(path, spec()) as writer:
            writer.start_episode("ok")
            for i in range(10):
                t, s, a, img = frame(0, i)
                writer.append(t, s, a, {"top": img})
            writer.end_episode()
            writer.start_episode("aborted")
            for i in range(12):
                t, s, a, img = frame(1, i)
                writer.append(t, s, a, {"top": img})
            raise RuntimeError("operator abort")
    ds = RecordingDataset(path)
    assert ds.episode_indices() == [0]
    assert any("episode 1 (12 frames fully written" in n for n in ds.info.notes)
    recovered = RecordingDataset(path, RecordingOptions(include_incomplete=True))
    assert recovered.episode_indices() == [0, 1]
    check_episode(recovered, 1, 1, 12)


CHILD = r"""
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from robodata.recording import RecordingSpec, RecordingWriter
from tests.test_data_recording import frame, spec

path, mode = sys.argv[1], sys.argv[3]
writer = RecordingWriter(path, spec())
ep = 0
while True:
    writer.start_episode(f"episode {ep}")
    n = 20 + ep if mode == "fixed" else 10 + (ep % 5)
    for i in range(n if (mode != "fixed" or ep < 2) else 10**9):
        t, s, a, img = frame(ep, i)
        writer.append(t, s, a, {"top": img}, extras={"i": np.int64(i)})
        time.sleep(0.002)
        if mode == "fixed" and ep == 2 and i == 40:
            print("READY", flush=True)
    writer.end_episode()
    if mode != "fixed" and ep == 1:
        print("READY", flush=True)
    ep += 1
"""


def _run_and_kill(path: Path, mode: str, delay_s: float) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(REPO), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", f"child failed: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_episode_keeps_completed_episodes(tmp_path: Path) -> None:
    path = tmp_path / "rec"
    _run_and_kill(path, "fixed", 0.03)
    ds = RecordingDataset(path)
    assert ds.episode_indices() == [0, 1]
    check_episode(ds, 0, 0, 20)
    check_episode(ds, 1, 1, 21)
    np.testing.assert_array_equal(ds.extras(1)["i"], np.arange(21))
    assert any("episode 2" in n and "include_incomplete" in n for n in ds.info.notes)
    recovered = RecordingDataset(path, RecordingOptions(include_incomplete=True))
    n = len(recovered.episode(2))
    assert n >= 8 and n % 8 == 0, n  # only whole blocks of chunk_frames are ever recorded as written
    check_episode(recovered, 2, 2, n)


@pytest.mark.parametrize("delay_s", [0.0, 0.013, 0.037])
def test_sigkill_at_any_moment(tmp_path: Path, delay_s: float) -> None:
    """Episodes start and end continuously; wherever the kill lands, every complete episode is intact."""
    path = tmp_path / "rec"
    _run_and_kill(path, "cycle", delay_s)
    ds = RecordingDataset(path)
    assert len(ds) >= 2
    for index in ds.episode_indices():
        check_episode(ds, index, index, 10 + (index % 5))
    recovered = RecordingDataset(path, RecordingOptions(include_incomplete=True))
    extra = sorted(set(recovered.episode_indices()) - set(ds.episode_indices()))
    assert len(extra) <= 1
    for index in extra:
        n = len(recovered.episode(index))
        check_episode(recovered, index, index, n)
