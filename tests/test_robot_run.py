"""The robot client end to end: MuJoCo arms + real gRPC policy server on loopback + servo loop + chunking.

The dataset policy answers with the sample dataset's ground truth, so the sim replays a recorded episode
closed loop. Runs are paced at real time (short episodes) so that server delays mean what they mean on a robot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
from policy_server.server import PolicyServer, ServerConfig
from robot_client.chunking import ChunkingConfig
from robot_client.config import RobotConfig, load_robot_config
from robot_client.control_loop import TickRecord
from robot_client.policy_client import GrpcPolicy
from robot_client.rig import Rig, RigError, check_names
from robot_client.robot import RobotFault
from robot_client.runner import EpisodeOptions, run_episode
from robot_client.safety import EStop, FirstActionError
from robot_client.sim.camera_service import SimCameraService
from robot_client.sim.clock import SimClock
from robot_client.sim.robot import SimConfig, SimRobot
from tests.test_faults import fault_while_executing
from tests.wire_helpers import SAMPLE_DATASET, sample_dataset

CONFIG: RobotConfig = load_robot_config("bimanual_yam")


@pytest.fixture(scope="module")
def first_state() -> np.ndarray:
    return sample_dataset().episode(0).states[0].astype(np.float64)


def make_rig(start: np.ndarray | None) -> Rig:
    robot = SimRobot(CONFIG, SimConfig(initial_positions=None if start is None else tuple(start)))
    robot.connect()
    service = SimCameraService(robot.world, ("top", "left_wrist"))
    rig = Rig(robot=robot, clock=SimClock(robot, pace=1.0), capture_images=service.capture,
              camera_names=("top", "left_wrist"))
    rig._closers += [robot.close, service.close]
    robot.enable()
    return rig


@pytest.fixture
def server() -> Iterator[PolicyServer]:
    policy = DatasetPolicy(DatasetPolicyConfig(dataset=SAMPLE_DATASET, action_horizon=30))
    srv = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)).start()
    yield srv
    srv.stop(grace=0.1)


def options(mode: str = "async", seconds: float = 2.0, **kw: object) -> EpisodeOptions:
    return EpisodeOptions(chunking=ChunkingConfig(mode=mode, fps=30.0, refill_threshold=15),
                          duration_s=seconds, prompt="pick up the red cube with the left arm", **kw)  # type: ignore[arg-type]


def test_policy_names_must_match_the_robot() -> None:
    check_names(CONFIG.joint_names, CONFIG.joint_names, "state")
    swapped = list(CONFIG.joint_names)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    with pytest.raises(RigError, match="same names, different order"):
        check_names(CONFIG.joint_names, swapped, "state")
    with pytest.raises(RigError, match=r"missing on the robot: \['left_elbow'\]"):
        check_names(CONFIG.joint_names, ["left_elbow", *CONFIG.joint_names[1:]], "action")


def test_sim_replays_the_dataset_closed_loop(server: PolicyServer, first_state: np.ndarray) -> None:
    rig = make_rig(first_state)
    ticks: list[TickRecord] = []
    try:
        with GrpcPolicy(target=f"127.0.0.1:{server.port}", streaming=True) as policy:
            report = run_episode(rig, policy, options(seconds=2.5), 0, on_tick=ticks.append)
    finally:
        rig.close()
    assert report.chunks >= 3 and report.worker.failures == 0
    assert report.events.output_clamps == 0
    # The arm followed ground truth: commanded targets track the dataset's actions at the same times.
    episode = sample_dataset().episode(0)
    t0 = report.execution_start
    start = next(i for i, t in enumerate(ticks) if t.time >= t0)
    errors = []
    for rec in ticks[start + 100: start + 400]:
        k = (rec.time - t0) * 30.0
        lo = min(int(k), episode.length - 2)
        w = min(1.0, k - lo)
        expected = (1 - w) * episode.actions[lo] + w * episode.actions[lo + 1]
        assert rec.target is not None
        errors.append(np.abs(rec.target - expected).max())
    assert np.median(errors) < 0.02, np.median(errors)
    assert report.max_tracking_error < CONFIG.safety.max_tracking_error


def test_first_action_guard_refuses_and_names_the_joint(server: PolicyServer, first_state: np.ndarray) -> None:
    start = first_state.copy()
    start[2] += 0.6  # left_joint3 far from where episode 0 starts
    rig = make_rig(start)
    try:
        with GrpcPolicy(target=f"127.0.0.1:{server.port}") as policy, \
                pytest.raises(FirstActionError, match=r"left_joint3 .* \(delta -0.600\)") as err:
            run_episode(rig, policy, options(), 0)
        assert [d.name for d in err.value.deltas] == ["left_joint3"]
        np.testing.assert_allclose(rig.robot.read_state().positions[2], start[2], atol=0.01)  # never moved
    finally:
        rig.close()


def test_override_ramps_slowly_to_a_far_first_action(server: PolicyServer, first_state: np.ndarray) -> None:
    start = first_state.copy()
    start[2] += 0.6
    rig = make_rig(start)
    ticks: list[TickRecord] = []
    try:
        with GrpcPolicy(target=f"127.0.0.1:{server.port}") as policy:
            report = run_episode(rig, policy, options(seconds=0.5, allow_far_start=True), 0, on_tick=ticks.append)
    finally:
        rig.close()
    assert report.far_joints == ["left_joint3"]
    speeds = [abs(t.command.velocity[2]) for t in ticks[:300]]
    assert max(speeds) <= CONFIG.safety.ramp_velocity * 1.0001  # the ramp respects the slow velocity


def test_server_killed_mid_episode_holds_then_resumes(first_state: np.ndarray) -> None:
    dataset_policy = DatasetPolicy(DatasetPolicyConfig(dataset=SAMPLE_DATASET, action_horizon=30))
    server = PolicyServer(dataset_policy, ServerConfig(host="127.0.0.1", port=0)).start()
    port = server.port
    rig = make_rig(first_state)
    ticks: list[TickRecord] = []
    holder: dict[str, PolicyServer] = {}

    def kill_and_restart() -> None:
        server.stop(grace=0.0)
        threading.Timer(1.6, lambda: holder.setdefault(
            "restarted", PolicyServer(dataset_policy, ServerConfig(host="127.0.0.1", port=port)).start())).start()

    deadline = CONFIG.safety.server_deadline_s
    period = 1.0 / CONFIG.servo_hz
    try:
        policy = GrpcPolicy(target=f"127.0.0.1:{port}", streaming=True, timeout_s=0.5, retries=1,
                            backoff_initial_s=0.05)
        # Killed once the episode executes, restarted 1.6 s later (tests/test_faults.py: fault_while_executing).
        report = run_episode(rig, policy, options(seconds=4.5), 0, on_tick=ticks.append,
                             on_chunk=fault_while_executing(lambda: threading.Thread(target=kill_and_restart).start(),
                                                            lambda: None))
        policy.close()
    finally:
        rig.close()
        if "restarted" in holder:
            holder["restarted"].stop(grace=0.0)
    assert report.events.holds >= 1 and report.events.resumes >= 1, report.events.log
    assert report.worker.failures >= 1
    # Hold within one control period of the deadline: no tick that is past the deadline is still running.
    late_running = [t for t in ticks if t.exhausted_s > deadline + period and not t.holding]
    assert not late_running
    first_hold = next(i for i, t in enumerate(ticks) if t.holding and t.exhausted_s > deadline)
    assert ticks[first_hold - 1].exhausted_s <= deadline + 1e-9 or ticks[first_hold - 1].holding
    # While holding the arm comes to rest and stays (no drop, no jump).
    steps = [np.abs(b.command.position - a.command.position).max()
             for a, b in zip(ticks, ticks[1:], strict=False) if a.holding and b.holding]
    assert max(steps) < 0.01
    # It resumed after the restart.
    assert any(not t.holding for t in ticks[first_hold:])


def test_estop_stops_and_holds(server: PolicyServer, first_state: np.ndarray) -> None:
    rig = make_rig(first_state)
    estop = EStop()
    ticks: list[TickRecord] = []
    try:
        with GrpcPolicy(target=f"127.0.0.1:{server.port}", streaming=True) as policy:
            chunks: list[object] = []

            def on_chunk(record: object) -> None:  # e-stop once executing (after the ramp), however slow the machine
                chunks.append(record)
                if len(chunks) == 3:
                    estop.trigger("test")

            report = run_episode(rig, policy, options(seconds=4.0), 0, estop=estop, on_tick=ticks.append,
                                 on_chunk=on_chunk)
    finally:
        rig.close()
    assert any("e-stop (test)" in line for line in report.events.log)
    assert ticks[-1].time - ticks[0].time < 3.5  # ended early
    assert np.abs(ticks[-1].command.velocity).max() < 1e-3


def test_motor_fault_stops_the_episode_with_the_joint_named(server: PolicyServer, first_state: np.ndarray) -> None:
    rig = make_rig(first_state)
    sim = rig.robot
    assert isinstance(sim, SimRobot)
    try:
        with GrpcPolicy(target=f"127.0.0.1:{server.port}") as policy:
            threading.Timer(0.8, lambda: sim.inject_fault("right_joint2", code="overload")).start()
            with pytest.raises(RobotFault, match="right_joint2: overload"):
                run_episode(rig, policy, options(seconds=3.0), 0)
        assert not sim.status().ok
    finally:
        rig.close()


def test_dry_run_computes_but_never_moves(server: PolicyServer, first_state: np.ndarray, tmp_path: Path) -> None:
    rig = make_rig(first_state)
    ticks: list[TickRecord] = []
    try:
        before = rig.robot.read_state().positions
        with GrpcPolicy(target=f"127.0.0.1:{server.port}") as policy:
            run_episode(rig, policy, options(seconds=1.0, dry_run=True), 0, on_tick=ticks.append)
        after = rig.robot.read_state().positions
    finally:
        rig.close()
    commanded = np.stack([t.command.position for t in ticks])
    assert np.abs(commanded - before).max() > 0.01  # commands were computed (the policy wants motion)
    np.testing.assert_allclose(after, before, atol=5e-3)  # but the arm did not follow them


def test_the_runner_holds_deliberately_before_the_first_query_and_after_the_episode(
        server: PolicyServer, first_state: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first query blocks the servo loop, and the gap between episodes has no loop at all: the runner tells the
    robot to hold before each, so a backend with a servo deadline (the YAM sender's `command_timeout_s`) keeps the
    pose instead of calling the loop stalled. Holds are counted in order with the commands around them."""
    rig = make_rig(first_state)
    sim = rig.robot
    assert isinstance(sim, SimRobot)
    calls: list[str] = []
    original_hold, original_command = SimRobot.hold, SimRobot.command

    def hold(self: SimRobot) -> None:
        calls.append("hold")
        original_hold(self)

    def command(self: SimRobot, positions: np.ndarray, velocities: np.ndarray | None = None) -> None:
        calls.append("command")
        original_command(self, positions, velocities)

    monkeypatch.setattr(SimRobot, "hold", hold)
    monkeypatch.setattr(SimRobot, "command", command)
    try:
        with GrpcPolicy(target=f"127.0.0.1:{server.port}") as policy:
            report = run_episode(rig, policy, options(seconds=0.5), 0)
        assert report.error is None
        assert calls[0] == "hold"  # before the blocking first query, ahead of any command
        assert "command" in calls and calls[-1] == "hold"  # the episode ends on a deliberate hold
    finally:
        rig.close()
