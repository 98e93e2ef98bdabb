"""`python -m calibration latency` recovers latencies injected into the MuJoCo sim (no mocks).

Tolerances (lockstep sim at 200 Hz, servo period 5 ms; cameras polled every 7 ticks = one frame per 35 ms):
- command-to-motion: each reading is taken one servo period after its command, so with no injected delay the
  measured latency is one or two periods (5..10 ms); with an injected delay D the measurement minus D must
  equal the undelayed one within +/- 1 servo period (5 ms).
- cameras: measured latency within +/- 10 ms of the injected delay (under a third of a frame period; the fit
  evaluates the encoder at 1 ms lag steps; measured error 0..2 ms), with a correlation peak >= 0.9.
The sim's own delay mechanisms are pinned too: a delayed camera renders exactly the scene of D seconds
earlier with a fresh stamp, a delayed command leaves the joint untouched until D has passed, and hold() acts at
once. The camera measurement renders two 320x240 cameras ~57 times each (~6 s of CPU), the CLI test one camera.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
from pathlib import Path

import numpy as np
import pytest

from calibration import latency_cli
from calibration.latency_camera import CameraLatencyConfig, measure_camera_latency
from calibration.latency_command import StepConfig, measure_command_latency, signed_step
from calibration.latency_pattern import PatternConfig, make_pattern
from calibration.latency_signal import LatencyError, camera_lag, predicted_motion
from calibration.latency_ticks import Ticker
from robot_client.calfile import GripperRange, Measured, RigCalibration, load_calibration, save_calibration
from robot_client.config import load_robot_config
from robot_client.rig import build_sim_rig
from robot_client.sim import SimCameraConfig, SimCameras, SimConfig, SimRobot
from robot_client.sim.clock import SimClock

CONFIG = load_robot_config("bimanual_yam")
PERIOD = 1.0 / CONFIG.servo_hz
HOME = (0.0, 0.9, 1.3, 0.0, 0.0, 0.0, 1.0) * 2  # arm raised, grippers in the top camera's view
FRAME_EVERY = 7
CAMERA_TOLERANCE_MS = 10.0
PATTERN = PatternConfig(duration_s=2.0)  # ~57 frames per camera: enough for a clear peak, cheap to render


def _robot(command_delay_s: float = 0.0) -> SimRobot:
    robot = SimRobot(CONFIG, SimConfig(command_delay_s=command_delay_s, initial_positions=HOME))
    robot.connect()
    robot.enable()
    return robot


# ---- the sim's injected delays --------------------------------------------------------------------------------


def test_command_delay_postpones_commands_and_hold_acts_at_once() -> None:
    robot = _robot(command_delay_s=0.02)
    j = CONFIG.joint_names.index("left_joint6")
    rest = robot.read_state().positions
    target = rest.copy()
    target[j] += 0.05
    for _ in range(3):  # 15 ms < 20 ms: nothing has arrived yet
        robot.command(target)
    assert robot.read_state().positions[j] == pytest.approx(rest[j], abs=1e-9)
    for _ in range(4):
        robot.command(target)
    assert robot.read_state().positions[j] > rest[j] + 0.005
    robot.hold()  # drops what is still in flight and holds where the joint is
    held = robot.read_state().positions[j]
    robot.step(0.1)
    assert robot.read_state().positions[j] == pytest.approx(held, abs=0.01)
    with pytest.raises(ValueError, match="command_delay_s"):
        SimConfig(command_delay_s=-1.0)


def test_delayed_camera_shows_the_past_with_a_fresh_stamp() -> None:
    robot = _robot()
    j = CONFIG.joint_names.index("left_joint6")
    delay = 0.1
    with SimCameras(robot.world, SimCameraConfig(names=("left_wrist",))) as fresh, \
            SimCameras(robot.world, SimCameraConfig(names=("left_wrist",), delays_s={"left_wrist": delay})) as late:
        before = fresh.capture("left_wrist")
        target = robot.read_state().positions
        for k in range(round(delay / PERIOD)):
            target[j] = HOME[j] + 0.3 * (k + 1) / round(delay / PERIOD)
            robot.command(target)
        now_fresh, now_late = fresh.capture("left_wrist"), late.capture("left_wrist")
    assert now_late.timestamp == pytest.approx(robot.now()) and now_late.timestamp > before.timestamp
    assert np.abs(now_fresh.rgb.astype(int) - before.rgb.astype(int)).mean() > 1.0  # the view did change
    assert np.abs(now_late.rgb.astype(int) - before.rgb.astype(int)).max() <= 1  # ...but not yet for `late`
    with pytest.raises(Exception, match="delays_s"):
        SimCameraConfig(names=("top",), delays_s={"left_wrist": 0.1})


# ---- command-to-motion ----------------------------------------------------------------------------------------


def _command_ms(delay_s: float) -> float:
    robot = _robot(delay_s)
    result = measure_command_latency(robot, SimClock(robot, pace=None), PERIOD, StepConfig(repeats=3))
    assert len(result.spread.samples_ms) == 3 and result.joint == "left_joint6"
    end = robot.read_state().positions
    assert end[CONFIG.joint_names.index("left_joint6")] == pytest.approx(HOME[5], abs=0.01)  # back at rest
    return result.spread.median_ms


def test_command_latency_recovers_injected_delay() -> None:
    base = _command_ms(0.0)
    assert PERIOD * 1e3 - 1e-6 <= base <= 2 * PERIOD * 1e3 + 1e-6
    delayed = _command_ms(0.04)
    assert delayed - 40.0 == pytest.approx(base, abs=PERIOD * 1e3 + 1e-6)


def test_step_direction_and_refusals() -> None:
    assert signed_step("j", 0.0, 0.05, -1.0, 1.0, 0.05) == 0.05
    assert signed_step("j", 0.93, 0.05, -1.0, 1.0, 0.05) == -0.05  # + would come within the margin
    with pytest.raises(LatencyError, match="j rests at"):
        signed_step("j", 0.0, 0.05, -0.08, 0.08, 0.05)
    with pytest.raises(LatencyError, match="--step"):
        StepConfig(step=0.5)
    robot = _robot()
    with pytest.raises(LatencyError, match="--joint 'left_joint9'"):
        measure_command_latency(robot, SimClock(robot, pace=None), PERIOD, StepConfig(joint="left_joint9"))


def test_guard_holds_the_arm_when_a_joint_leaves_its_planned_range() -> None:
    robot = _robot()
    rest = robot.read_state().positions
    j = CONFIG.joint_names.index("left_joint6")
    ticker = Ticker(robot, SimClock(robot, pace=None), PERIOD, rest, np.full(len(rest), 0.05))
    target = rest.copy()
    target[j] += 0.3
    with pytest.raises(LatencyError, match="left_joint6 moved to"):
        for _ in range(100):
            ticker.tick(target)
    assert abs(robot.read_state().positions[j] - rest[j]) < 0.1


# ---- camera latency -------------------------------------------------------------------------------------------


def test_camera_lag_on_synthetic_signals() -> None:
    """Known lag 73 ms, irregular frame stamps, a motion signal that is a saturating function of the motion."""
    rng = np.random.default_rng(3)
    pattern = make_pattern(PatternConfig(seed=3), "j", 0.0, CONFIG.limits["left_joint6"])
    et = np.arange(0.0, pattern.duration_s, PERIOD)
    eq = np.array([pattern.offset(t) for t in et])
    ft = np.cumsum(rng.uniform(0.028, 0.04, size=90))
    ft = ft[ft < et[-1]]
    truth = predicted_motion(et, eq, ft, 0.073)
    motion = np.tanh(truth / truth.max() * 2) + rng.normal(0, 0.01, size=truth.shape)
    fit = camera_lag(et, eq, ft, motion)
    assert fit.lag_ms == pytest.approx(73.0, abs=3.0) and fit.peak > 0.9


def test_pattern_is_small_smooth_and_refused_near_limits() -> None:
    lim = CONFIG.limits["left_joint6"]
    pattern = make_pattern(PatternConfig(amplitude=0.15), "left_joint6", 0.0, lim)
    offsets = np.array([pattern.offset(t) for t in np.arange(0.0, pattern.duration_s, PERIOD)])
    assert np.abs(offsets).max() <= 0.15 + 1e-12 and offsets[0] == 0.0 and offsets[-1] == pytest.approx(0.0)
    assert pattern.peak_velocity() <= 0.5 * lim.velocity + 1e-9
    with pytest.raises(LatencyError, match="left_joint6: the pattern would span"):
        make_pattern(PatternConfig(amplitude=0.15), "left_joint6", lim.upper - 0.1, lim)


def test_camera_latency_recovers_injected_delays() -> None:
    """0 ms on one camera, 100 ms on the other, in one recording (the CLI test adds 50 ms on its own)."""
    delays_ms = {"top": 0.0, "left_wrist": 100.0}
    rig = build_sim_rig(CONFIG, ["top", "left_wrist"], pace=None, sim=SimConfig(initial_positions=HOME),
                        camera_delays_s={k: v / 1e3 for k, v in delays_ms.items()})
    try:
        rig.robot.enable()

        def capture(names: object) -> dict[str, tuple[np.ndarray, float]]:
            return dict(rig.capture_images())

        result = measure_camera_latency(rig.robot, rig.clock, PERIOD, capture,
                                        {"top": "left_joint6", "left_wrist": "left_joint6"},
                                        CameraLatencyConfig(frame_every=FRAME_EVERY, pattern=PATTERN))
    finally:
        rig.close()
    for camera, injected in delays_ms.items():
        measured = result[camera]
        assert measured.fit.lag_ms == pytest.approx(injected, abs=CAMERA_TOLERANCE_MS), measured.summary()
        assert measured.fit.peak >= 0.9, measured.summary()
        assert measured.frame_period_ms == pytest.approx(FRAME_EVERY * PERIOD * 1e3)


# ---- the command line -----------------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    latency_cli.add_arguments(parser)
    return latency_cli.run(parser.parse_args(list(argv)))


def test_cli_writes_the_latency_section_and_keeps_the_others(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cal_path = tmp_path / "rig.toml"
    gripper = GripperRange(0.0, -6.5, Measured("2026-01-01T00:00:00+00:00", "stall"))
    save_calibration(RigCalibration(rig="bimanual_yam", gripper={"left": gripper}), cal_path)
    code = _cli("--robot", "sim", "--calibration", str(cal_path), "--camera", "left_wrist", "--repeats", "3",
                "--pattern-seconds", "2.0", "--sim-command-delay-ms", "20", "--sim-camera-delay-ms", "left_wrist=50")
    out = capsys.readouterr().out
    assert code == 0, out
    cal = load_calibration(cal_path)
    assert cal.gripper["left"] == gripper
    assert cal.latency is not None and cal.latency.command_to_motion_ms is not None
    assert cal.latency.command_to_motion_ms - 20.0 == pytest.approx(PERIOD * 1e3, abs=PERIOD * 1e3 + 1e-6)
    assert cal.latency.camera_ms["left_wrist"] == pytest.approx(50.0, abs=CAMERA_TOLERANCE_MS)
    assert "left_joint6" in cal.latency.measured.method and "wrote [latency]" in out


def test_cli_dry_run_and_real_arm_refusal_touch_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cal_path = tmp_path / "rig.toml"
    assert _cli("--robot", "yam", "--calibration", str(cal_path), "--camera", "top", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "a direct step of 0.05 on left_joint6" in out and "cameras top: watch left_joint6" in out
    assert "nothing connected" in out and not cal_path.exists()
    assert _cli("--robot", "yam", "--calibration", str(cal_path)) == 2
    assert "refusing to move real arms" in capsys.readouterr().err and not cal_path.exists()
    assert _cli("--robot", "sim", "--calibration", str(cal_path), "--camera", "top", "--camera-joint",
                "top=left_joint9", "--dry-run") == 2
    assert "left_joint9" in capsys.readouterr().err
