"""Faults mid-episode, with the real pieces: MuJoCo arms, a real policy server on loopback, the servo loop.

What is held under every fault here: no crash, no command beyond the position/velocity limits, the arm holds
(jerk-limited stop) while the policy cannot be trusted and resumes when it can, and the cause is named.
- network: a link with 40 +/- 30 ms of delay and jitter each way (loopback TCP proxy) still runs the episode
  without a hold; a 2 s stall of the link makes the arm hold within one servo period of the deadline and
  resume after;
- cameras: a camera whose frames freeze (the same old frame, as a stuck USB camera delivers) is refused by its
  staleness check with the camera named; the arm holds, and resumes once frames are fresh again.
(A server killed and restarted mid-episode and motor faults are in tests/test_robot_run.py; CAN faults on the
real driver in tests/test_yam_driver.py and tests/test_arm_replay_real.py.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
from policy_server.server import PolicyServer, ServerConfig
from robot_client.cameras import CameraRig, FrameSourceCamera, SourceFrame, StalenessConfig
from robot_client.chunking import ChunkingConfig
from robot_client.config import RobotConfig, load_robot_config
from robot_client.control_loop import TickRecord
from robot_client.policy_client import GrpcPolicy
from robot_client.rig import Frames, Rig
from robot_client.runner import EpisodeOptions, EpisodeReport, run_episode
from robot_client.servo import ServoLimits
from robot_client.sim.camera_service import SimCameraService
from robot_client.sim.clock import SimClock
from robot_client.sim.robot import SimConfig, SimRobot
from tests.net_proxy import DelayProxy, LinkProfile
from tests.wire_helpers import SAMPLE_DATASET, sample_dataset

CONFIG: RobotConfig = load_robot_config("bimanual_yam")
LIMITS = ServoLimits.from_config(CONFIG)
PERIOD = 1.0 / CONFIG.servo_hz
DEADLINE = CONFIG.safety.server_deadline_s
CAMERAS = ("top", "left_wrist")


@pytest.fixture(scope="module")
def first_state() -> np.ndarray:
    return sample_dataset().episode(0).states[0].astype(np.float64)


@pytest.fixture(scope="module")
def server() -> Iterator[PolicyServer]:
    policy = DatasetPolicy(DatasetPolicyConfig(dataset=SAMPLE_DATASET, action_horizon=30))
    srv = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)).start()
    yield srv
    srv.stop(grace=0.1)


def _options(seconds: float) -> EpisodeOptions:
    return EpisodeOptions(chunking=ChunkingConfig(mode="async", fps=30.0, refill_threshold=15), duration_s=seconds,
                          prompt="pick up the red cube with the left arm")


def _sim(first_state: np.ndarray) -> tuple[SimRobot, SimCameraService, SimClock]:
    robot = SimRobot(CONFIG, SimConfig(initial_positions=tuple(first_state)))
    robot.connect()
    robot.enable()
    return robot, SimCameraService(robot.world, CAMERAS), SimClock(robot, pace=1.0)


def _assert_within_limits(ticks: list[TickRecord]) -> None:
    """Every command inside the position limits and under the velocity limits (sample by sample)."""
    commands = np.stack([t.command.position for t in ticks])
    assert np.all(commands >= LIMITS.lower - 1e-9) and np.all(commands <= LIMITS.upper + 1e-9)
    velocities = np.stack([t.command.velocity for t in ticks])
    assert np.all(np.abs(velocities) <= LIMITS.velocity * (1 + 1e-6) + 1e-9)


def _assert_holds_on_time_and_resumes(ticks: list[TickRecord], report: EpisodeReport) -> None:
    assert report.events.holds >= 1 and report.events.resumes >= 1, report.events.log
    late_running = [t for t in ticks if t.exhausted_s > DEADLINE + PERIOD and not t.holding]
    assert not late_running, "a tick past the deadline still tracked stale actions"
    first_hold = next(i for i, t in enumerate(ticks) if t.holding)
    assert any(not t.holding for t in ticks[first_hold:]), "never resumed"


def _run(rig: Rig, target: str, seconds: float, ticks: list[TickRecord],
         on_chunk: Callable[[object], None] | None = None) -> EpisodeReport:
    with GrpcPolicy(target=target, streaming=True, timeout_s=0.5, retries=1, backoff_initial_s=0.05) as policy:
        return run_episode(rig, policy, _options(seconds), 0, on_tick=ticks.append, on_chunk=on_chunk)


def fault_while_executing(start: Callable[[], None], end: Callable[[], None],
                          duration_s: float = 2.0) -> Callable[[object], None]:
    """An on_chunk hook that starts the fault when the second chunk arrives (the episode is executing: the worker
    only runs after the first action's ramp) and ends it `duration_s` later. Tied to the episode, not to a
    wall-clock delay from the test's start, so a slow machine cannot move the fault before the motion starts.
    2 s outlasts the ~1 s of queued actions plus the deadline, so the arm must hold, and leaves time to resume."""
    seen: list[object] = []

    def on_chunk(record: object) -> None:
        seen.append(record)
        if len(seen) == 2:
            start()
            threading.Timer(duration_s, end).start()

    return on_chunk


def _plain_rig(first_state: np.ndarray) -> Rig:
    robot, service, clock = _sim(first_state)
    rig = Rig(robot=robot, clock=clock, capture_images=service.capture, camera_names=CAMERAS)
    rig._closers += [robot.close, service.close]
    return rig


def test_delay_and_jitter_then_a_stalled_link(server: PolicyServer, first_state: np.ndarray) -> None:
    ticks: list[TickRecord] = []
    stalled: list[TickRecord] = []
    with DelayProxy(server.port, LinkProfile(delay_s=0.04, jitter_s=0.03, seed=1)) as proxy:
        rig = _plain_rig(first_state)
        try:
            report = _run(rig, f"127.0.0.1:{proxy.port}", 2.0, ticks)
        finally:
            rig.close()
        # 40 +/- 30 ms each way is well inside the 0.5 s deadline: no hold for lack of fresh actions (the
        # episode's end holds with "no target", as every episode does).
        assert not any("no fresh actions" in e for e in report.events.log), report.events.log
        assert report.chunks >= 3 and report.worker.failures == 0
        _assert_within_limits(ticks)

        rig = _plain_rig(first_state)
        try:
            report = _run(rig, f"127.0.0.1:{proxy.port}", 4.5, stalled,
                          fault_while_executing(proxy.stall, proxy.resume))
        finally:
            proxy.resume()
            rig.close()
    _assert_holds_on_time_and_resumes(stalled, report)
    _assert_within_limits(stalled)


def test_frozen_camera_is_refused_named_and_the_arm_holds(server: PolicyServer, first_state: np.ndarray) -> None:
    robot, service, clock = _sim(first_state)
    frozen = threading.Event()
    latest: dict[str, SourceFrame] = {}

    def producer(name: str) -> SourceFrame:
        if frozen.is_set() and name == "left_wrist":
            return latest[name]  # the same old frame, with its old timestamp and sequence
        rgb, stamp = service.capture()[name]
        frame = SourceFrame(rgb=rgb, timestamp=stamp)
        latest[name] = frame
        return frame

    staleness = StalenessConfig(max_age_s=0.3, max_reads_without_new_frame=3)
    cameras = CameraRig([FrameSourceCamera(name, lambda n=name: producer(n), staleness=staleness, clock=clock.now)
                         for name in CAMERAS])
    cameras.start()

    def capture() -> Frames:
        frames = cameras.read()
        return {name: (frame.rgb, frame.capture_timestamp) for name, frame in frames.frames.items()}

    rig = Rig(robot=robot, clock=clock, capture_images=capture, camera_names=CAMERAS)
    rig._closers += [robot.close, cameras.stop, service.close]
    ticks: list[TickRecord] = []
    try:
        # 4.2 s: the sample episode's 134 steps at 30 Hz last 4.47 s, past which the dataset policy refuses the step
        # index, and the last error must stay the camera's.
        report = _run(rig, f"127.0.0.1:{server.port}", 4.2, ticks, fault_while_executing(frozen.set, frozen.clear))
    finally:
        frozen.clear()
        rig.close()
    assert report.worker.failures >= 1 and "left_wrist" in report.worker.last_error, report.worker
    _assert_holds_on_time_and_resumes(ticks, report)
    _assert_within_limits(ticks)
