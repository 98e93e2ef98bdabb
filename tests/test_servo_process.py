"""The servo loop in its own process (robot_client.servo_process), against the MuJoCo arms through the MIT law.

Real child processes and real shared memory: the parent publishes plans, the servo interpolates them at its own
ticks and reports state and tick rows back. What must hold: it tracks a plan; a parent that goes silent or whose
plan runs out leaves the arm holding, and a fresh plan resumes; e-stop holds; a parent that dies leaves the servo to
come to rest and exit; a start-up failure is raised with the child's own message. Priority is not asked for here
(rt_priority 0): the tests must not take a CI machine's cores; `bench/servo.py timing` measures the timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from robot_client.servo_process import ServoProcess, ServoProcessConfig, ServoProcessError
from robot_client.servo_shm import Layout, Plan, ServoShm, ServoShmError

SPEC = ServoProcessConfig(robot_config="bimanual_yam", backend="sim", rt_priority=0, deadline_s=0.2,
                          parent_timeout_s=0.3)
DT = 0.01


def plan_from(start: np.ndarray, offset: np.ndarray, seconds: float, t0: float, tail_s: float = 1.0) -> Plan:
    """A smooth move from `start` by `offset` over `seconds`, then the end pose for `tail_s`."""
    ts = np.arange(0.0, seconds + tail_s, DT)
    s = np.clip(ts / seconds, 0.0, 1.0)
    shape = 10 * s**3 - 15 * s**4 + 6 * s**5
    rate = (30 * s**2 - 60 * s**3 + 30 * s**4) / seconds
    return Plan(t0, DT, start + shape[:, None] * offset, rate[:, None] * offset)


def run_for(proc: ServoProcess, seconds: float, plan: Plan | None = None) -> list:
    rows = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if plan is not None:
            proc.track(plan)
        else:
            proc.heartbeat()
        rows += proc.drain()
        time.sleep(0.02)
    return rows + proc.drain()


def test_plan_interpolates_and_holds_its_ends() -> None:
    plan = Plan(10.0, 0.1, np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 5.0]]), np.zeros((3, 2)))
    assert plan.end == pytest.approx(10.2)
    np.testing.assert_allclose(plan.at(9.0)[0], [0.0, 1.0])
    np.testing.assert_allclose(plan.at(10.05)[0], [0.5, 2.0])
    np.testing.assert_allclose(plan.at(10.15)[0], [1.5, 4.0])
    np.testing.assert_allclose(plan.at(11.0)[0], [2.0, 5.0])


def test_the_block_refuses_a_plan_it_cannot_carry() -> None:
    block = ServoShm.create(Layout(dof=2, horizon=4, ring=16))
    try:
        with pytest.raises(ServoShmError, match="5 samples; 1..4 fit"):
            block.publish(mode=1.0, plan=Plan(0.0, 0.1, np.zeros((5, 2)), np.zeros((5, 2))))
        with pytest.raises(ServoShmError, match=r"plan\.positions\[0, 0\] is nan: every plan value must be finite"):
            block.publish(mode=1.0, plan=Plan(0.0, 0.1, np.full((2, 2), np.nan), np.zeros((2, 2))))
        with pytest.raises(ServoShmError, match=r"must be \[2, 2\]"):
            block.publish(mode=1.0, plan=Plan(0.0, 0.1, np.zeros((2, 3)), np.zeros((2, 3))))
        block.publish(mode=1.0, plan=Plan(5.0, 0.1, np.ones((3, 2)), np.zeros((3, 2))))
        snapshot = block.control()
        _, mode, scale, plan = snapshot
        assert mode == 1.0 and scale == 1.0 and plan is not None and plan.t0 == 5.0 and plan.positions.shape == (3, 2)
        assert block.control() is snapshot  # nothing published since: the servo's tick copies nothing
        block.publish(mode=1.0, plan=Plan(6.0, 0.1, np.full((2, 2), 2.0), np.zeros((2, 2))))
        _, _, _, plan = block.control()
        assert plan is not None and plan.t0 == 6.0 and plan.positions.shape == (2, 2) and plan.positions[0, 0] == 2.0
    finally:
        block.close()


@pytest.mark.parametrize(("changes", "field"), [
    ({"backend": "mars"}, "backend 'mars' unknown"), ({"sim_actuation": "hydraulic"}, "sim_actuation 'hydraulic'"),
    ({"rt_priority": 120}, r"rt_priority must lie in \[0, 99\]"), ({"deadline_s": 0.0}, "deadline_s must be"),
    ({"yam_send_mode": "burst"}, r"yam_send_mode 'burst' unknown; known \['thread', 'tick'\]"),
    ({"cpu": -1}, r"cpu must be one of the cores this process may run on \[.*\] \(or None: any core\), got -1"),
    ({"cpu": 4096}, r"cpu must be one of the cores .* got 4096"), ({"switch_interval_s": 0.0}, "switch_interval_s"),
])
def test_bad_servo_process_settings_are_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ServoProcessError, match=field):
        ServoProcessConfig(robot_config="bimanual_yam", **changes)  # type: ignore[arg-type]


def test_tracks_a_plan_then_holds_when_it_runs_out_and_resumes() -> None:
    with ServoProcess(SPEC) as proc:
        assert proc.realtime == "none"
        start = proc.state().positions.copy()
        offset = np.zeros(14)
        offset[[0, 7]] = [0.3, -0.2]
        rows = run_for(proc, 1.0, plan_from(start, offset, 0.6, time.monotonic()))
        assert rows and not rows[-1].holding
        np.testing.assert_allclose(proc.state().positions[[0, 7]], (start + offset)[[0, 7]], atol=0.02)
        # No new plan: it runs out, the deadline passes, the servo stops and holds where the arm is.
        rows = run_for(proc, 1.2)
        assert rows[-1].holding
        np.testing.assert_allclose(proc.state().positions[[0, 7]], (start + offset)[[0, 7]], atol=0.02)
        back = proc.state().positions.copy()
        rows = run_for(proc, 1.0, plan_from(back, -offset, 0.6, time.monotonic()))
        assert not rows[-1].holding
        np.testing.assert_allclose(proc.state().positions[[0, 7]], start[[0, 7]], atol=0.02)
        periods = [r.period for r in rows if r.period > 0]
        assert np.median(periods) == pytest.approx(0.005, abs=0.001)
    assert proc.timing.lost == 0


def test_a_silent_parent_is_held_through_and_a_fresh_plan_resumes() -> None:
    with ServoProcess(SPEC) as proc:
        start = proc.state().positions.copy()
        offset = np.zeros(14)
        offset[1] = 0.4
        # A long plan (3 s), then the parent goes quiet for 0.8 s mid-move: past parent_timeout_s the servo holds,
        # although the plan itself would still have targets.
        plan = plan_from(start, offset, 3.0, time.monotonic())
        run_for(proc, 0.5, plan)
        ticks_before = proc.status()["ticks"]
        time.sleep(0.8)
        rows = proc.drain()
        assert proc.status()["ticks"] - ticks_before > 50  # it kept ticking on its own
        assert rows[-1].holding
        held = proc.state().positions[1]
        assert start[1] < held < start[1] + offset[1]
        rows = run_for(proc, 0.5, plan)
        assert not rows[-1].holding and proc.state().positions[1] > held


def test_estop_holds_until_shutdown() -> None:
    with ServoProcess(SPEC) as proc:
        start = proc.state().positions.copy()
        offset = np.zeros(14)
        offset[0] = 0.5
        plan = plan_from(start, offset, 2.0, time.monotonic())
        run_for(proc, 0.4, plan)
        proc.estop()
        time.sleep(0.5)
        rows = proc.drain()
        assert rows[-1].holding
        stopped = proc.state().positions[0]
        proc.track(plan)  # a plan after the e-stop does not move the arm
        time.sleep(0.3)
        assert proc.drain()[-1].holding
        assert proc.state().positions[0] == pytest.approx(stopped, abs=0.01)
    assert proc.proc is not None and proc.proc.returncode == 0


@pytest.mark.parametrize("send_mode", ["tick", "thread"])
def test_the_yam_driver_tracks_a_plan_in_the_servo_process(send_mode: str, tmp_path: Path) -> None:
    """The real CAN driver inside the servo process (emulated motors on virtual buses there), its frames sent by
    the loop each tick or by its 250 Hz thread: the plan is tracked and the arm holds when it runs out."""
    from robot_client.config import CONFIG_DIR

    text = (CONFIG_DIR / "bimanual_yam.toml").read_text()
    pinned = text.replace('gripper_type = "linear_4310"\n',
                          'gripper_type = "linear_4310"\ngripper_limits = [0.0, -6.57]\n')
    # No rig calibration file here: the grippers' travel pinned.
    assert pinned.count("gripper_limits = [0.0, -6.57]") == 2
    config = tmp_path / "yam.toml"
    config.write_text(pinned)
    spec = ServoProcessConfig(robot_config=str(config), backend="emulator", rt_priority=0, deadline_s=0.2,
                              parent_timeout_s=0.3, yam_send_mode=send_mode,
                              initial_positions={"left_joint2": 1.0, "right_joint2": 1.0})
    with ServoProcess(spec) as proc:
        start = proc.state().positions.copy()
        offset = np.zeros(14)
        offset[[0, 8]] = [0.3, 0.2]
        rows = run_for(proc, 1.2, plan_from(start, offset, 0.6, time.monotonic()))
        assert rows and not rows[-1].holding
        np.testing.assert_allclose(proc.state().positions[[0, 8]], (start + offset)[[0, 8]], atol=0.03)
        rows = run_for(proc, 0.8)
        assert rows[-1].holding
        assert proc.status()["overruns"] < len(rows)  # it ticked on its own clock (timing: bench/servo.py)


def test_initial_positions_of_joints_the_robot_lacks_are_named() -> None:
    with pytest.raises(ServoProcessError, match=r"initial_positions names joints \['left_elbow'\] that bimanual_yam"):
        ServoProcess(ServoProcessConfig(robot_config="bimanual_yam", backend="sim",
                                        initial_positions={"left_elbow": 1.0, "left_joint2": 1.0}))


def test_a_start_up_failure_is_raised_with_the_childs_message() -> None:
    """The YAM backend on a machine without its CAN links: the servo process's own error reaches the parent."""
    with pytest.raises(ServoProcessError, match="exited during start-up: CanBusUnavailable: .*can_left"):
        ServoProcess(ServoProcessConfig(robot_config="bimanual_yam", backend="yam", rt_priority=0)).start()


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: its parent is gone and nobody may reap it)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return True


def test_the_servo_comes_to_rest_and_exits_when_its_parent_dies() -> None:
    script = textwrap.dedent("""
        import os, sys, time
        from robot_client.servo_process import ServoProcess, ServoProcessConfig
        proc = ServoProcess(ServoProcessConfig(robot_config="bimanual_yam", backend="sim", rt_priority=0)).start()
        print(proc.proc.pid, flush=True)
        os._exit(0)  # dies without shutting the servo down
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the servo process outlived its parent by 15 s")


def test_an_episode_runs_through_a_servo_process(tmp_path: object) -> None:
    """The runner against a real gRPC policy server with the loop in a servo process (the sim arms through the
    MIT law there): the first-action guard, the ramp, chunks executed, tick records for the recorder, and the
    arm at rest and disabled after."""
    from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
    from policy_server.server import PolicyServer, ServerConfig
    from robot_client.backends import RigOptions
    from robot_client.chunking import ChunkingConfig
    from robot_client.config import load_robot_config
    from robot_client.control_loop import TickRecord
    from robot_client.policy_client import GrpcPolicy
    from robot_client.rig import build_servo_process_rig
    from robot_client.runner import EpisodeOptions, run_episode
    from robot_client.sim.robot import SimConfig
    from tests.wire_helpers import SAMPLE_DATASET, sample_dataset

    config = load_robot_config("bimanual_yam")
    first = sample_dataset().episode(0).states[0].astype(np.float64)
    policy = DatasetPolicy(DatasetPolicyConfig(dataset=SAMPLE_DATASET, action_horizon=30, require_images=False))
    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)).start()
    core = max(os.sched_getaffinity(0))  # `run --servo-cpu`: the servo process runs on this core only
    rig = build_servo_process_rig(config, (), RigOptions(sim=SimConfig(initial_positions=tuple(first)),
                                                         servo_cpu=core), backend="sim")
    ticks: list[TickRecord] = []
    try:
        assert rig.remote_loop is not None
        servo = rig.robot.proc.proc  # type: ignore[attr-defined]
        assert os.sched_getaffinity(servo.pid) == {core}
        with GrpcPolicy(target=f"127.0.0.1:{server.port}", streaming=True) as grpc_policy:
            options = EpisodeOptions(chunking=ChunkingConfig(mode="async", fps=30.0, refill_threshold=15),
                                     duration_s=2.0, prompt="pick up the red cube with the left arm")
            report = run_episode(rig, grpc_policy, options, 0, on_tick=ticks.append)
    finally:
        rig.close()
        server.stop(grace=0.1)
    assert not report.aborted, report.reason
    assert report.chunks >= 3 and report.ticks > 300
    assert report.max_tracking_error < 0.1, report.max_tracking_error
    assert ticks and any(not t.holding for t in ticks) and ticks[-1].holding
    # The arm followed the dataset's actions: it moved away from the first state.
    moved = np.max(np.abs(ticks[-1].state.positions - first))
    assert moved > 0.01, moved
    assert not rig.robot.status().enabled


def test_the_remote_servo_is_still_by_the_same_velocity_measure_as_the_local_one() -> None:
    """`is_still` (the e-stop settle and the ramp's end) compares rad/s, as JerkLimitedServo.is_still does: a
    command moving 1e-6 rad per 5 ms tick (2e-4 rad/s) is not still at the default 1e-4 rad/s."""
    from types import SimpleNamespace

    from robot_client.remote_loop import _RemoteServo
    from robot_client.servo_shm import TickRow

    def row(t: float, q: float) -> TickRow:
        z = np.zeros(2)
        return TickRow(t, 0.005, z, z, z, z, np.full(2, q), False)

    loop = SimpleNamespace(last_rows=[row(1.000, 0.0), row(1.005, 1e-6)])
    servo = _RemoteServo(loop)  # type: ignore[arg-type]
    assert not servo.is_still()
    loop.last_rows = [row(1.000, 0.0), row(1.005, 1e-7)]  # 2e-5 rad/s
    assert servo.is_still()
    loop.last_rows = loop.last_rows[-1:]  # one tick says nothing about motion
    assert not servo.is_still()
