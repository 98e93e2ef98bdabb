"""LiveLogger: fed real TickRecord / ChunkRecord objects from several threads it writes every panel; with its
consumer stalled it still never blocks the caller and counts what it drops."""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import rerun as rr

from replay.view.live import LiveConfig, LiveLogger
from replay.view.rrd_read import read_rrd
from replay.view.sinks import SinkConfig, SinkError, Sinks, serve_note
from robot_client.config import load_robot_config
from robot_client.control_loop import TickRecord
from robot_client.policy_worker import ChunkRecord
from robot_client.robot import JointState
from robot_client.servo import ServoStep

NAMES = load_robot_config("bimanual_yam").joint_names
D, H, FPS, SERVO_HZ = len(NAMES), 8, 30.0, 200.0


def tick(t: float, holding: bool = False) -> TickRecord:
    q = np.full(D, 0.1 * t)
    zeros = np.zeros(D)
    state = JointState(positions=q, velocities=zeros, efforts=zeros, timestamp=t, names=NAMES)
    step = ServoStep(position=q + 0.01, velocity=zeros, acceleration=zeros, jerk=zeros)
    return TickRecord(time=t, state=state, target=None if holding else q + 0.02, command=step, holding=holding,
                      exhausted_s=0.5 if holding else 0.0)


def chunk(t: float, image: np.ndarray) -> ChunkRecord:
    response = {
        "warnings": [{"code": "chunk_padded", "field": "actions", "message": "padded 2 of 8 actions"}],
        "norm_report": {
            "mode": "quantile",
            "state": [{"name": "left_joint1", "normalized_min": -1.4, "normalized_max": 0.2,
                       "fraction_out_of_range": 0.5, "clipped_count": 0}],
            "actions": [{"name": "left_joint1", "normalized_min": -0.3, "normalized_max": 0.9,
                         "fraction_out_of_range": 0.0, "clipped_count": 0}],
            "state_bins_out_of_range": 0,
        },
    }
    actions = np.full((H, D), 0.1 * t) + 0.01 * np.arange(H)[:, None]
    return ChunkRecord(obs_time=t, sent_time=t + 0.001, received_time=t + 0.06, state=np.zeros(D),
                       actions=actions, step_index=int(round(t * FPS)), response=response, images={"top": image})


def test_live_logger_writes_every_panel_from_several_threads(tmp_path: Path) -> None:
    rrd = tmp_path / "live.rrd"
    config = LiveConfig(joint_names=NAMES, fps=FPS, sink=SinkConfig(save=rrd), camera_names=("top",),
                        tick_every=5, start_time=0.0)
    logger = LiveLogger(config)
    first, second = np.zeros((6, 8, 3), np.uint8), np.full((6, 8, 3), 200, np.uint8)

    def servo() -> None:
        for k in range(400):  # 2 s at 200 Hz, holding for 0.5 s in the middle
            logger.log_tick(tick(k / SERVO_HZ, holding=150 <= k < 250))

    def worker() -> None:
        for k in range(6):
            image = first if k < 3 else second  # the same frame three times, then a new one
            logger.log_chunk(chunk(0.3 * k, image))
        logger.log_event(1.9, "e-stop (keyboard): stopping and holding", "WARN")

    threads = [threading.Thread(target=servo), threading.Thread(target=worker)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stats = logger.close()
    assert stats.total_dropped == 0 and stats.errors == 0, stats.summary()
    assert stats.written.ticks == 80 and stats.written.chunks == 6 and stats.written.images == 2

    content = read_rrd(rrd)
    assert content.blueprints == 1
    for kind in ("state", "target", "commanded"):
        series = content[f"/joints/right_joint3/{kind}"]
        assert series.static["SeriesLines:names"] == [f"right_joint3 {kind}"]
    assert len(content["/joints/left_joint1/state"].values("Scalars:scalars")) == 80
    assert len(content["/joints/left_joint1/target"].values("Scalars:scalars")) == 60  # none while holding
    steps = content["/joints/left_joint1/state"].times("Scalars:scalars", "step")
    assert steps[:3] == [0, 1, 2]  # ticks 0, 5, 10 at 200 Hz = 0, 25, 50 ms = 0, 0.75, 1.5 steps at 30 fps
    assert len(content["/robot/left_link6"].values("Transform3D:translation")) == 80
    assert len(content["/cameras/top"].values("EncodedImage:blob")) == 2

    fans = content.under("/chunks/left_joint1/chunk")
    assert fans and sum(len(content[p].values("Scalars:scalars")) for p in fans) == 6 * H
    last = max(fans, key=lambda p: max(content[p].times("Scalars:scalars")))
    assert max(content[last].times("Scalars:scalars")) == pytest.approx(1.5 + (H - 1) / FPS)

    warnings = [t[0] for t in content["/norm/warnings"].values("TextLog:text")]
    assert warnings.count("[chunk_padded] actions: padded 2 of 8 actions") == 6
    assert any(w.startswith("norm state left_joint1: 50% outside") for w in warnings)
    assert len(content["/norm/left_joint1/norm_state_min"].values("Scalars:scalars")) == 6
    assert len(content["/signals/chunk_delay_s"].values("Scalars:scalars")) == 6

    events = content["/events"]
    texts = [t[0] for t in events.values("TextLog:text")]
    assert [t.split(":")[0] for t in texts] == ["hold", "resume", "e-stop (keyboard)"]
    np.testing.assert_allclose(events.times("TextLog:text"), [0.75, 1.25, 1.9])


def test_log_tick_never_blocks_on_a_stalled_consumer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = LiveConfig(joint_names=NAMES, fps=FPS, sink=SinkConfig(save=tmp_path / "stall.rrd"), tick_every=1,
                        queue_size=16, robot=False)
    logger = LiveLogger(config)
    release, entered = threading.Event(), threading.Event()
    handle = logger._handle

    def stalled(item: object) -> None:
        entered.set()
        release.wait()
        handle(item)  # type: ignore[arg-type]

    monkeypatch.setattr(logger, "_handle", stalled)
    record = tick(0.0)
    logger.log_tick(record)
    assert entered.wait(10.0)  # the consumer now sits in the stalled handler

    done = threading.Event()

    def producer() -> None:
        for _ in range(10_000):
            logger.log_tick(record)
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    # A blocking put would wait for the stalled consumer forever; a non-blocking one finishes.
    assert done.wait(30.0), "log_tick blocked while the consumer was stalled"
    assert logger.dropped["ticks"] == 10_000 - config.queue_size
    release.set()
    stats = logger.close()
    assert stats.dropped["ticks"] == 10_000 - config.queue_size and stats.written.ticks == config.queue_size + 1
    assert "dropped" in stats.summary()


def test_serving_binds_where_asked_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = io.StringIO()
    sinks = Sinks(SinkConfig(serve=True, bind="127.0.0.1", grpc_port=port, web_viewer=False), out)
    first, second = rr.RecordingStream("serve_test"), rr.RecordingStream("serve_test")
    sinks.attach(first, None)
    sinks.attach(second, None)  # streams to the server the first one hosts
    assert sinks.server_url == f"rerun+http://127.0.0.1:{port}/proxy"
    assert f"listens on 127.0.0.1:{port} only" in out.getvalue()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    second.disconnect()
    first.disconnect()
    assert SinkConfig(serve=True).bind == "127.0.0.1" and not SinkConfig(serve=True).web_viewer  # safe defaults
    note = serve_note(SinkConfig(serve=True, bind="0.0.0.0", web_viewer=True))
    assert "every network interface" in note and "0.0.0.0:9876" in note and "0.0.0.0:9090" in note
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = SinkConfig(serve=True, bind="127.0.0.1", grpc_port=busy.getsockname()[1], web_viewer=False)
        with pytest.raises(SinkError, match="cannot serve on 127.0.0.1"):
            Sinks(taken).attach(rr.RecordingStream("serve_test"), None)
