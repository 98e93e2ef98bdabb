"""`python -m replay real` without hardware: the preview, the refusals and the confirmation gate.

The rig factory is injected: a MuJoCo SimRobot that counts its commands stands in for the arms, and the real
factory (build_yam_rig, the YamRobot driver) runs against emulated Damiao motors on python-can virtual buses.
Neither moves anything physical.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from replay.arm_replay.command import EXIT_OK, EXIT_REFUSED, replay_real
from replay.cli import build_parser
from robodata.open import open_dataset
from robot_client.config import CONFIG_DIR, RobotConfig, load_robot_config
from robot_client.rig import Rig
from robot_client.robot import F64
from robot_client.sim.clock import SimClock
from robot_client.sim.robot import SimConfig, SimRobot
from robot_client.yam import protocol as dm
from robot_client.yam.driver import YamRobot
from robot_client.yam.emulator import MotorEmulator, gravity_load

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample_yam"
CONFIG: RobotConfig = load_robot_config("bimanual_yam")
_channels = itertools.count()


class CountingSimRobot(SimRobot):
    """A SimRobot that counts commands and holds."""

    commands = 0
    holds = 0

    def command(self, positions: F64, velocities: F64 | None = None) -> None:
        self.commands += 1
        super().command(positions, velocities)

    def hold(self) -> None:
        self.holds += 1
        super().hold()


@pytest.fixture
def first_state() -> F64:
    return np.asarray(open_dataset(SAMPLE).episode(0).states[0], dtype=np.float64)


class SimFactory:
    """Builds the stand-in rig at `start`, keeping the robot for the test to inspect."""

    def __init__(self, start: F64) -> None:
        self.start = start
        self.robot: CountingSimRobot | None = None

    def __call__(self, config: RobotConfig) -> Rig:
        robot = CountingSimRobot(config, SimConfig(initial_positions=tuple(float(v) for v in self.start)))
        robot.connect()
        self.robot = robot
        rig = Rig(robot=robot, clock=SimClock(robot, pace=None), capture_images=dict, camera_names=())
        rig._closers.append(robot.close)
        return rig


def _real(factory: SimFactory | None, tmp_path: Path, *extra: str) -> tuple[int, str]:
    args = build_parser().parse_args(["real", "--dataset", str(SAMPLE), "--episode", "0", "--no-plots",
                                      "--out", str(tmp_path / "out"), *extra])
    out = io.StringIO()
    code = replay_real(args, out) if factory is None else replay_real(args, out, rig_factory=factory)
    return code, out.getvalue()


def test_without_confirmation_it_previews_and_stops(first_state: F64, tmp_path: Path) -> None:
    factory = SimFactory(first_state)
    code, out = _real(factory, tmp_path)
    assert code == EXIT_REFUSED
    assert "dry-run preview (commands computed, none sent)" in out
    assert "largest distance from the current state to the first action" in out
    assert "duration: ramp" in out and "position-limit clamps of dataset targets: none" in out
    assert "peak commanded velocity" in out
    assert "--i-understand-this-moves-the-arm" in out.split("dry-run preview")[1]
    robot = factory.robot
    assert robot is not None and robot.commands == 0
    assert robot.holds >= 1  # the preview keeps a real arm's motor watchdog fed by holding
    np.testing.assert_allclose(robot.measured_state().positions, first_state, atol=1e-6)
    assert not (tmp_path / "out").exists()


def test_dry_run_is_the_preview_alone(first_state: F64, tmp_path: Path) -> None:
    factory = SimFactory(first_state)
    code, out = _real(factory, tmp_path, "--dry-run", "--i-understand-this-moves-the-arm")
    assert code == EXIT_OK
    assert "dry run: nothing was sent" in out
    assert factory.robot is not None and factory.robot.commands == 0


def test_far_start_is_refused_after_the_preview(tmp_path: Path) -> None:
    factory = SimFactory(np.zeros(CONFIG.dof))  # home: far from episode 0's first action
    code, out = _real(factory, tmp_path, "--i-understand-this-moves-the-arm")
    assert code == EXIT_REFUSED
    assert "first-action guard: REFUSED" in out
    assert "refused: the first action is farther than 0.35" in out and "left_joint2" in out
    assert factory.robot is not None and factory.robot.commands == 0


def test_with_confirmation_it_replays_and_reports(first_state: F64, tmp_path: Path) -> None:
    factory = SimFactory(first_state)
    code, out = _real(factory, tmp_path, "--i-understand-this-moves-the-arm", "--max-error", "0.25",
                      "--max-gripper-error", "0.7")
    assert code == EXIT_OK, out
    assert out.index("dry-run preview") < out.index("replaying") < out.index("result: PASS")
    assert factory.robot is not None and factory.robot.commands > 800
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.startswith("# Arm replay (real)") and "## Preview" in report


# ---- the real driver on emulated motors ----------------------------------------------------------------------


@dataclass
class VirtualRig:
    config_path: Path
    emulators: list[MotorEmulator]
    initial: dict[tuple[str, int], float]


@pytest.fixture
def virtual_rig(tmp_path: Path, first_state: F64) -> Iterator[VirtualRig]:
    """The bundled config on virtual CAN channels with calibrated grippers, and emulated motors holding the arms
    at episode 0's first state (grippers closed: the guard does not check grippers)."""
    prefix = f"arm-replay-{os.getpid()}-{next(_channels)}"
    text = (CONFIG_DIR / "bimanual_yam.toml").read_text().replace('can_interface = "socketcan"',
                                                                  'can_interface = "virtual"')
    for arm in ("left", "right"):
        text = text.replace(f'can_channel = "can_{arm}"',
                            f'can_channel = "{prefix}-{arm}"\ngripper_limits = [0.0, -6.57]')
    path = tmp_path / "virtual_yam.toml"
    path.write_text(text)
    config = load_robot_config(path)
    positions = {n: float(first_state[i]) for i, n in enumerate(config.joint_names) if "gripper" not in n}
    # The emulated arms carry their gravity (the driver's feed-forward cancels it, as on the real arm).
    emus = [MotorEmulator.for_arm(arm, positions=positions,
                                  load=gravity_load(arm, arm.gravity_factors, arm.gripper_limits)).start()
            for arm in config.arms]
    initial = {(emu.channel, mid): emu.snapshot(mid).physical_position for emu, arm in zip(emus, config.arms,
                                                                                           strict=True)
               for mid in arm.motor_ids}
    yield VirtualRig(path, emus, initial)
    for emu in emus:
        emu.stop()


def test_preview_on_the_real_driver_sends_no_command(virtual_rig: VirtualRig, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The production factory (the YamRobot driver over CAN) on emulated motors: the preview reads the state,
    keeps the motor watchdogs fed with holds (no lost-communication fault), never calls command(), and nothing
    moves."""
    calls: list[int] = []
    original = YamRobot.command

    def counting(self: YamRobot, positions: F64) -> None:
        calls.append(1)
        original(self, positions)

    monkeypatch.setattr(YamRobot, "command", counting)
    code, out = _real(None, tmp_path, "--robot-config", str(virtual_rig.config_path))
    assert code == EXIT_REFUSED, out
    assert "first-action guard: ok" in out and "not moving the arms" in out
    assert calls == []
    for emu in virtual_rig.emulators:
        for (channel, mid), q0 in virtual_rig.initial.items():
            if channel != emu.channel:
                continue
            snap = emu.snapshot(mid)
            assert snap.status != dm.StatusCode.LOST_COMMUNICATION, (channel, mid)
            # Held, not moved: a motor holding with MIT frames settles within a few mrad of where it was (zero
            # velocity is not representable in 12 bits, so kd x half a step / kp: 1.1 mrad on a DM4310 joint, plus
            # a position step); any command toward the first action would move it far more.
            assert abs(snap.physical_position - q0) < 3e-3, (channel, mid)
