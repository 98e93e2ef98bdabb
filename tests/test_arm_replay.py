"""Arm replay in MuJoCo: the sample dataset's episode 0 through the policy runs' guard, ramp and servo loop.

Stated tracking of episode 0 in the sim (lockstep, deterministic; settle 0.25 s; measured in brackets):
- arm joints, achieved vs dataset action: mean <= 0.03 rad [<= 0.012], max <= 0.08 rad [0.047, left_joint2].
  The servo tracks the interpolated actions with their velocity as feedforward, so what is left is mostly the
  motors' own delay;
- arm joints with that delay taken out (one latency for the arm): max <= 0.04 rad [0.026];
- arm joints, achieved vs servo command (the simulated motors alone): max <= 0.04 rad [0.030];
- lag of achieved behind the action: 0..80 ms on every moving arm joint [13..48], arm median 10..50 ms [27],
  the same on a second run; achieved behind the command (motors alone) <= 40 ms [12..25];
- left gripper: its dataset opening changes faster than its 2 /s velocity limit, so it is rate-limited by the
  servo: max <= 0.7 [0.55]; achieved vs command max <= 0.05 [0.028] (episode 0 closes on nothing).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from replay.arm_replay.command import EXIT_OK, EXIT_REFUSED, EXIT_TRACKING, build_replay_sim_rig
from replay.arm_replay.metrics import ReplayMetrics, TrackingThresholds, compute_metrics
from replay.arm_replay.plan import ReplayError, ReplayPlan, check_action_names, load_plan
from replay.arm_replay.preview import SnapshotRobot, preview_replay
from replay.arm_replay.run import ReplayOptions, ReplayTrace, run_replay
from replay.cli import main
from robodata.lerobot_writer import EpisodeData, LeRobotWriterConfig, write_lerobot_dataset
from robodata.open import open_dataset
from robot_client.config import RobotConfig, load_robot_config
from robot_client.control_loop import TickRecord
from robot_client.robot import RobotCommandError
from robot_client.safety import EStop, FirstActionError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample_yam"
CONFIG: RobotConfig = load_robot_config("bimanual_yam")
ARM = [i for i in range(CONFIG.dof) if i not in CONFIG.gripper_indices()]
MOVING_ARM = ("left_joint1", "left_joint2", "left_joint3", "left_joint4", "left_joint6")


@dataclass(frozen=True)
class Run:
    plan: ReplayPlan
    trace: ReplayTrace
    metrics: ReplayMetrics


def _replay(episode: int = 0, speed: float = 1.0) -> Run:
    plan = load_plan(open_dataset(SAMPLE), episode, CONFIG, speed)
    rig = build_replay_sim_rig(CONFIG, plan)
    try:
        trace = run_replay(rig.robot, rig.clock, plan, ReplayOptions())
    finally:
        rig.close()
    return Run(plan, trace, compute_metrics(trace, plan, CONFIG.gripper_indices(), TrackingThresholds()))


@pytest.fixture(scope="module")
def episode0() -> Run:
    return _replay(0)


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


# ---- tracking and lag ----------------------------------------------------------------------------------------


def test_episode_0_tracks_within_the_stated_error(episode0: Run) -> None:
    m = episode0.metrics
    assert m.samples > 800
    for j in (m.joints[i] for i in ARM):
        assert j.mean <= 0.03, j
        assert j.max <= 0.08, j
        assert j.aligned_max <= 0.04, j
        assert j.command_max <= 0.04, j
    gripper = m.joints[CONFIG.joint_names.index("left_gripper")]
    assert gripper.max <= 0.7
    assert gripper.command_max <= 0.05
    # The right arm does not move in episode 0: it holds the pose it started at.
    right = [m.joints[CONFIG.joint_names.index(f"right_joint{k}")] for k in range(1, 7)]
    assert max(j.max for j in right) < 1e-3


def test_lag_is_small_and_consistent(episode0: Run) -> None:
    m = episode0.metrics
    by_name = {j.name: j for j in m.joints}
    for name in MOVING_ARM:
        j = by_name[name]
        assert j.lag_ms is not None and 0 <= j.lag_ms <= 80, j
        assert j.lag_frames == pytest.approx(j.lag_ms * 1e-3 * 30, rel=1e-9)
        assert j.command_lag_ms is not None and 0 <= j.command_lag_ms <= 40, j
    assert 10 <= m.latency_ms <= 50
    again = _replay(0).metrics
    assert again.latency_ms == pytest.approx(m.latency_ms, abs=1.0)
    assert [j.lag_ms for j in again.joints] == pytest.approx([j.lag_ms for j in m.joints], abs=1.0)


def test_records_target_command_and_achieved_per_tick(episode0: Run) -> None:
    tr, plan = episode0.trace, episode0.plan
    n = tr.ticks
    assert tr.targets.shape == tr.commands.shape == tr.achieved.shape == (n, CONFIG.dof)
    assert np.all(np.diff(tr.times) == pytest.approx(1.0 / CONFIG.servo_hz))
    # The target is the dataset action interpolated at the tick's time; it starts at the first action.
    np.testing.assert_allclose(tr.targets[0], plan.actions[0], atol=1e-6)
    k = int(np.searchsorted(tr.times, 1.0))
    np.testing.assert_allclose(tr.targets[k], [np.interp(tr.times[k], plan.times, plan.actions[:, j])
                                               for j in range(CONFIG.dof)], atol=1e-9)
    assert tr.far_joints == ()
    assert tr.target_clamps == {} and tr.output_clamps == {}


def test_speed_two_halves_the_duration(episode0: Run) -> None:
    fast = _replay(0, speed=2.0)
    assert fast.plan.duration_s == pytest.approx(episode0.plan.duration_s / 2)
    slow_ticks = int(np.sum(episode0.trace.times <= episode0.plan.duration_s + 1e-9))
    fast_ticks = int(np.sum(fast.trace.times <= fast.plan.duration_s + 1e-9))
    assert abs(2 * fast_ticks - slow_ticks) <= 2
    assert fast.plan.frame_period_s == pytest.approx(1 / 60)
    with pytest.raises(ReplayError, match="--speed"):
        load_plan(open_dataset(SAMPLE), 0, CONFIG, 0.0)


def test_estop_mid_replay_stops_the_arm_and_fails_the_run() -> None:
    plan = load_plan(open_dataset(SAMPLE), 0, CONFIG, 1.0)
    rig = build_replay_sim_rig(CONFIG, plan)
    estop = EStop()
    ticks: list[TickRecord] = []

    def on_tick(record: TickRecord) -> None:
        ticks.append(record)
        if len(ticks) == 25 + 200:  # 25 ramp ticks, then 1 s into the replay
            estop.trigger("test")

    try:
        trace = run_replay(rig.robot, rig.clock, plan, ReplayOptions(), estop=estop, on_tick=on_tick)
        assert np.all(np.abs(rig.robot.read_state().velocities[ARM]) < 0.05)
    finally:
        rig.close()
    assert trace.estopped and trace.ticks < 400
    assert np.all(np.abs(trace.velocities[-1]) < 1e-3)  # the servo came to a jerk-limited stop
    metrics = compute_metrics(trace, plan, CONFIG.gripper_indices(), TrackingThresholds(max_arm_error=1.0,
                                                                                         max_gripper_error=1.0))
    assert metrics.estopped and not metrics.passed


# ---- refusals ------------------------------------------------------------------------------------------------


def test_first_action_guard_refuses_a_far_start_naming_the_joints(capsys: pytest.CaptureFixture[str]) -> None:
    plan = load_plan(open_dataset(SAMPLE), 0, CONFIG, 1.0)
    rig = build_replay_sim_rig(CONFIG, plan, start="home")
    try:
        with pytest.raises(FirstActionError) as err:
            run_replay(rig.robot, rig.clock, plan, ReplayOptions())
        assert {d.name for d in err.value.deltas} == {"left_joint2", "left_joint3", "right_joint2", "right_joint3"}
        assert np.all(rig.robot.read_state().positions[ARM] == pytest.approx(0.0, abs=1e-3))  # nothing moved
    finally:
        rig.close()
    code, _ = _cli("sim", "--dataset", str(SAMPLE), "--episode", "0", "--start", "home", "--no-plots")
    assert code == EXIT_REFUSED
    err_text = capsys.readouterr().err
    assert "left_joint2" in err_text and "--allow-far-start" in err_text


def test_allow_far_start_ramps_slowly_then_replays(tmp_path: Path) -> None:
    code, out = _cli("sim", "--dataset", str(SAMPLE), "--episode", "0", "--start", "home", "--allow-far-start",
                     "--no-plots", "--out", str(tmp_path), "--max-error", "0.25", "--max-gripper-error", "0.7")
    assert code == EXIT_OK, out
    report = (tmp_path / "report.md").read_text()
    assert "far joints ['left_joint2', 'left_joint3', 'right_joint2', 'right_joint3']" in report
    ramp_s = float(report.split("ramp ")[1].split(" s")[0])
    assert ramp_s > 1.256 / CONFIG.safety.ramp_velocity  # right_joint3's 1.256 rad at the ramp velocity


def _named_dataset(root: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    cfg = LeRobotWriterConfig(fps=30, state_names=tuple(names), action_names=tuple(names))
    data = rng.uniform(0.2, 0.4, size=(20, len(names)))
    return write_lerobot_dataset(root, cfg, [EpisodeData(task="t", states=data, actions=data)])


def test_action_names_must_be_the_robot_joints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = list(CONFIG.joint_names)
    check_action_names(names, names)
    swapped = names.copy()
    swapped[1], swapped[2] = swapped[2], swapped[1]
    with pytest.raises(ReplayError, match=r"first mismatch at action\[1\]: dataset 'left_joint3', robot "
                                          r"'left_joint2'; same names, different order") as reorder:
        check_action_names(names, swapped)
    assert "--name-map" not in str(reorder.value)  # a reorder is never offered a renaming
    renamed = ["left_shoulder", *names[1:]]
    with pytest.raises(ReplayError, match=r"dataset action names missing on the robot: \['left_shoulder'\]; robot "
                                          r"joints the dataset lacks: \['left_joint1'\]; to map the names pass "
                                          r"--name-map left_shoulder=left_joint1"):
        check_action_names(names, renamed)
    ds = _named_dataset(tmp_path / "swapped", swapped)
    code, _ = _cli("sim", "--dataset", str(ds), "--episode", "0", "--no-plots", "--out", str(tmp_path / "o"))
    assert code == EXIT_REFUSED
    assert "same names, different order" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_episode_or_dataset_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("sim", "--dataset", str(SAMPLE), "--episode", "7")[0] == EXIT_REFUSED
    assert "--episode 7: no such episode" in capsys.readouterr().err
    assert _cli("sim", "--dataset", str(tmp_path / "nothing"), "--episode", "0")[0] == EXIT_REFUSED
    assert "no such file or directory" in capsys.readouterr().err
    assert _cli("sim", "--dataset", str(SAMPLE), "--episode", "0", "--speed", "9")[0] == EXIT_REFUSED
    assert "--speed must be in (0, 4]" in capsys.readouterr().err
    assert _cli("sim", "--dataset", str(SAMPLE), "--episode", "0", "--max-error", "-1")[0] == EXIT_REFUSED
    assert "--max-error must be a finite number > 0" in capsys.readouterr().err


# ---- report, exit codes, preview -----------------------------------------------------------------------------


def test_report_plots_and_exit_codes(tmp_path: Path) -> None:
    code, out = _cli("sim", "--dataset", str(SAMPLE), "--episode", "0", "--out", str(tmp_path / "loose"),
                     "--max-gripper-error", "0.7")
    assert code == EXIT_OK, out
    assert "result: PASS" in out
    files = {p.relative_to(tmp_path / "loose").as_posix() for p in (tmp_path / "loose").rglob("*")}
    assert {"report.md", "trace.npz", "plots/joints.png", "plots/tracking_error.png"} <= files
    report = (tmp_path / "loose" / "report.md").read_text()
    assert "| left_joint2 |" in report and "lag (ms)" in report and "aligned" in report
    with np.load(tmp_path / "loose" / "trace.npz", allow_pickle=False) as z:
        assert z["achieved"].shape == z["targets"].shape == z["commands"].shape
        assert tuple(z["joint_names"]) == CONFIG.joint_names
    code, out = _cli("sim", "--dataset", str(SAMPLE), "--episode", "0", "--out", str(tmp_path / "tight"),
                     "--no-plots", "--max-error", "0.03")
    assert code == EXIT_TRACKING
    assert "result: FAIL" in out and "left_joint2" in out.split("result: FAIL")[1]


def test_sim_dry_run_previews_without_commanding(tmp_path: Path) -> None:
    code, out = _cli("sim", "--dataset", str(SAMPLE), "--episode", "0", "--dry-run", "--out", str(tmp_path))
    assert code == EXIT_OK
    assert "dry-run preview" in out and "first-action guard: ok" in out
    assert "joints at their velocity limit: ['left_gripper']" in out
    assert not any(tmp_path.iterdir())


def test_preview_reports_clamps_and_never_commands() -> None:
    plan = load_plan(open_dataset(SAMPLE), 0, CONFIG, 1.0)
    beyond = plan.actions.copy()
    j2 = CONFIG.joint_names.index("left_joint2")
    beyond[60:70, j2] = CONFIG.limits["left_joint2"].upper + 0.2
    clamped = ReplayPlan(plan.dataset_name, 0, "", plan.joint_names, beyond, plan.fps, plan.speed, plan.first_state)
    rig = build_replay_sim_rig(CONFIG, plan)
    try:
        state = rig.robot.read_state()
    finally:
        rig.close()
    preview = preview_replay(state, CONFIG, clamped, ReplayOptions())
    assert set(preview.target_clamps) == {"left_joint2"}
    assert preview.output_clamps == {}
    assert preview.replay_s == pytest.approx(133 / 30)
    assert not preview.refused
    with pytest.raises(RobotCommandError, match="never sent"):
        SnapshotRobot(CONFIG, state).command(state.positions)


@pytest.fixture(autouse=True)
def _no_stray_reports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Runs without --out write under the working directory: keep that inside the test's folder."""
    monkeypatch.chdir(tmp_path)
    yield
