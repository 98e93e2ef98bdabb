"""Viewing a recording: its extras become joint series, chunk fans ahead of their observation time, signals,
normalization series and text rows; fan slots never overlap and are separated by a line break."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from replay.cli import main
from replay.view.chunks import FanSlots
from replay.view.extras import plan_extras
from replay.view.rrd_read import read_rrd
from robodata.recording import RecordingSpec, RecordingWriter
from robot_client.config import load_robot_config
from robot_client.control_loop import TickRecord
from robot_client.policy_worker import ChunkRecord
from robot_client.robot import JointState
from robot_client.run_recorder import RecorderSpec, RunRecorder
from robot_client.servo import ServoStep

NAMES = load_robot_config("bimanual_yam").joint_names
D, H, N, FPS = len(NAMES), 6, 30, 10.0
T0 = 1000.0  # the recorder's clock at frame 0
CHUNK_FRAMES = range(1, N, 3)  # a chunk arrives at frames 1, 4, 7, ...


def _chunk(k: int) -> np.ndarray:
    rows = 0.1 * k + 0.01 * np.arange(H)[:, None] + np.zeros((1, D))
    if k == 2:
        rows[-1] = np.nan  # a chunk shorter than the horizon, padded with NaN like the recorder does
    return rows.astype(np.float32)


def _write(path: Path) -> Path:
    spec = RecordingSpec(fps=FPS, state_names=NAMES, action_names=NAMES, cameras={"top": (8, 8)}, chunk_frames=8)
    with RecordingWriter(path, spec) as writer:
        writer.start_episode("pick")
        for i in range(N):
            state = np.full(D, 0.02 * i, np.float32)
            k = (i - 1) // 3 if i in CHUNK_FRAMES else -1
            extras = {
                "commanded": state + np.float32(0.01),
                "achieved": state,
                "chunk": _chunk(k) if k >= 0 else np.full((H, D), np.nan, np.float32),
                "chunk_new": np.array([k >= 0]),
                "chunk_obs_time": np.array([T0 + i / FPS - 0.07 if k >= 0 else np.nan]),
                "chunk_delay_s": np.array([0.07 if k >= 0 else np.nan]),
                "holding": np.array([10 <= i < 15]),
                "server_warnings": np.array([2 if i == 7 else 0], np.int32),
                "norm_state_min": np.full(D, -0.5, np.float32),
                "live_ref": np.array([-1, -1], np.int64),
                "odd_shape": np.zeros((2, 3), np.float32),
            }
            image = np.full((8, 8, 3), i, np.uint8)
            writer.append(T0 + i / FPS, state, state + np.float32(0.05), {"top": image}, extras=extras)
    return path


@pytest.fixture(scope="module")
def viewed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("rec")
    rec = _write(root / "run.zarr")
    out = io.StringIO()
    assert main(["view", str(rec), "--save", str(root / "run.rrd"), "--no-progress"], out=out) == 0
    return out.getvalue(), root / "run.rrd"


def test_extras_become_joint_series_signals_and_norm(viewed: tuple[str, Path]) -> None:
    text, rrd = viewed
    content = read_rrd(rrd)
    for kind in ("state", "action", "commanded", "achieved"):
        series = content[f"/joints/left_joint1/{kind}"]
        assert series.static["SeriesLines:names"] == [f"left_joint1 {kind}"]
        assert len(series.values("Scalars:scalars")) == N
    delays = content["/signals/chunk_delay_s"]
    assert len(delays.values("Scalars:scalars")) == len(CHUNK_FRAMES)
    assert content["/signals/live_ref"].static["SeriesLines:names"] == ["live_ref[0]", "live_ref[1]"]
    assert "/signals/chunk_obs_time" not in content and "/signals/chunk_new" not in content
    assert len(content["/norm/right_gripper/norm_state_min"].values("Scalars:scalars")) == N
    assert "odd_shape" in text and len(content["/robot/left_link6"].values("Transform3D:translation")) == N
    assert len(content["/cameras/top"].values("EncodedImage:blob")) == N


def test_text_rows_for_holds_and_server_warnings(viewed: tuple[str, Path]) -> None:
    content = read_rrd(viewed[1])
    events = content["/events"]
    texts = [t[0] for t in events.values("TextLog:text")]
    steps = events.times("TextLog:text", "step")
    assert any(t.startswith("hold:") for t in texts) and any(t.startswith("resume:") for t in texts)
    assert steps[[i for i, t in enumerate(texts) if t.startswith("hold:")][0]] == 10
    warnings = content["/norm/warnings"]
    assert [t[0] for t in warnings.values("TextLog:text")] == ["2 server warning(s) with this frame's chunk"]
    assert warnings.values("TextLog:level") == [["WARN"]]


def test_chunks_are_fans_ahead_of_their_observation(viewed: tuple[str, Path]) -> None:
    content = read_rrd(viewed[1])
    slots = [p for p in content.under("/chunks/left_joint1/chunk")]
    assert slots == ["/chunks/left_joint1/chunk/0", "/chunks/left_joint1/chunk/1", "/chunks/left_joint1/chunk/2"]
    points = sum(len(content[p].values("Scalars:scalars")) for p in slots)
    assert points == len(CHUNK_FRAMES) * H - 1  # one padded row left out
    first = content["/chunks/left_joint1/chunk/0"]
    assert first.static["SeriesLines:names"] == ["left_joint1 chunk"]
    values = [v[0] for v in first.values("Scalars:scalars")][:H]
    np.testing.assert_allclose(values, _chunk(0)[:, 0], atol=1e-6)
    # Chunk 0 was observed 0.07 s before frame 1 (t = 0.03 s): its points run ahead from there, 1/fps apart.
    seconds = first.times("Scalars:scalars")[:H]
    np.testing.assert_allclose(seconds, 0.03 + np.arange(H) / FPS, atol=1e-6)
    assert first.times("Scalars:scalars", "step")[:H] == list(range(H))
    # Slot 0 is reused by chunk 3 (step 9), with a line break logged in between.
    clears = [r for r in first.rows if r.get("Clear:is_recursive") is not None]
    assert len(clears) >= 1 and 5 < clears[0]["step"] < 9


def test_fan_slots_never_overlap() -> None:
    slots = FanSlots(max_slots=4)
    a = slots.place(0, 0.0, 5, 0.5)
    b = slots.place(3, 0.3, 8, 0.8)
    c = slots.place(9, 0.9, 14, 1.4)
    assert (a.slot, b.slot, c.slot) == (0, 1, 0)
    assert a.clear_step is None and c.clear_step == 6 and c.clear_seconds is not None and 0.5 < c.clear_seconds < 0.9
    full = FanSlots(max_slots=1)
    full.place(0, 0.0, 10, 1.0)
    forced = full.place(2, 0.2, 12, 1.2)
    assert forced.slot == 0 and forced.clear_step == 2


def test_extras_are_sorted_by_shape() -> None:
    t = 4
    plan = plan_extras({
        "chunk_raw": np.zeros((t, 5, 3)), "achieved": np.zeros((t, 3)), "norm_x": np.zeros((t, 3)),
        "delay": np.zeros(t), "pair": np.zeros((t, 2)), "text": np.array(["a"] * t), "big": np.zeros((t, 20)),
    }, action_dim=3, length=t)
    assert list(plan.chunks) == ["chunk_raw"] and list(plan.joint_series) == ["achieved"]
    assert list(plan.norm_series) == ["norm_x"] and sorted(plan.signals) == ["delay", "pair"]
    assert sorted(plan.skipped) == ["big", "text"]


def test_a_run_recorder_recording_is_viewed(tmp_path: Path) -> None:
    """What `python -m robot_client run --record` writes today views with its chunks, commands and warnings."""
    recorder = RunRecorder(tmp_path / "run.zarr", RecorderSpec(fps=FPS, joint_names=NAMES, cameras={"top": (8, 8)},
                                                               horizon=H))
    recorder.start_episode("pick")
    zeros = np.zeros(D)
    for k in range(100):  # 1 s of a 100 Hz servo loop, a chunk every 0.3 s
        t = 50.0 + k / 100
        if k % 30 == 0:
            response = {"warnings": [{"code": "state_far", "field": "state", "message": "far"}], "norm_report": {}}
            recorder.on_chunk(ChunkRecord(t, t, t + 0.05, zeros, np.full((H, D), 0.1 * k), k, response,
                                          {"top": np.full((8, 8, 3), k, np.uint8)}))
        state = JointState(np.full(D, 0.01 * k), zeros, zeros, t, NAMES)
        recorder.on_tick(TickRecord(t, state, state.positions + 0.1, ServoStep(state.positions, zeros, zeros, zeros),
                                    holding=False))
    recorder.end_episode()
    recorder.close()
    out = io.StringIO()
    assert main(["view", str(tmp_path / "run.zarr"), "--save", str(tmp_path / "run.rrd"), "--no-progress"],
                out=out) == 0
    content = read_rrd(tmp_path / "run.rrd")
    fans = content.under("/chunks/left_gripper/chunk")
    assert fans and sum(len(content[p].values("Scalars:scalars")) for p in fans) == 4 * H
    assert len(content["/joints/left_gripper/commanded"].values("Scalars:scalars")) == 10
    assert len(content["/norm/warnings"].values("TextLog:text")) == 4
    assert "/signals/chunk_delay_s" in content and "/signals/image_age_s" in content
