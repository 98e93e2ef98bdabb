"""Shared by the joint and gripper calibration tests: the bundled YAM config on python-can virtual buses with
emulated Damiao motors, and the procedures' CLIs run in-process on real files."""

from __future__ import annotations

import argparse
import io
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from robot_client.config import CONFIG_DIR, RobotConfig, load_robot_config
from robot_client.yam.emulator import EmulatorConfig, ManualClock, MotorEmulator

_channels = itertools.count()
# The emulated motors share two busy cores with the test: patient reply timeouts, and a manual clock for the
# emulated watchdogs (a scheduling hiccup of the test process must not read as a dead host).
SLOW_BUS = ("--reply-timeout-ms", "100")


def write_config(tmp_path: Path, *, calibration: str | None = None,
                 gripper_limits: tuple[float, float] | None = None) -> Path:
    """The bundled bimanual config on fresh virtual channels; optionally naming a calibration file (relative)."""
    prefix = f"cal-{os.getpid()}-{next(_channels)}"
    text = (CONFIG_DIR / "bimanual_yam.toml").read_text().replace('can_interface = "socketcan"',
                                                                  'can_interface = "virtual"')
    for arm in ("left", "right"):
        extra = "" if gripper_limits is None else f"\ngripper_limits = [{gripper_limits[0]}, {gripper_limits[1]}]"
        text = text.replace(f'can_channel = "can_{arm}"', f'can_channel = "{prefix}-{arm}"{extra}')
    if calibration is not None:
        text = text.replace('servo_hz = 200\n', f'servo_hz = 200\ncalibration = "{calibration}"\n')
    path = tmp_path / "robot.toml"
    path.write_text(text)
    return path


@dataclass
class Bench:
    config_path: Path
    config: RobotConfig
    emus: dict[str, MotorEmulator]

    def ids(self, arm: str) -> dict[str, int]:
        """Motor id by joint name."""
        cfg = next(a for a in self.config.arms if a.name == arm)
        return dict(zip(cfg.names, cfg.motor_ids, strict=True))


def bench(tmp_path: Path, *, command_dt_s: float = 0.004, stops: Mapping[str, tuple[float, float]] | None = None,
          positions: Mapping[str, float] | None = None, calibration: str | None = None,
          gripper_limits: tuple[float, float] | None = None) -> Iterator[Bench]:
    """Config + started emulators (every motor physically at 0 unless `positions` says otherwise)."""
    path = write_config(tmp_path, calibration=calibration, gripper_limits=gripper_limits)
    config = load_robot_config(path)
    clock = ManualClock()
    emus = {a.name: MotorEmulator.for_arm(a, positions=positions, stops=stops, clock=clock,
                                          config=EmulatorConfig(command_dt_s=command_dt_s)).start()
            for a in config.arms}
    try:
        yield Bench(path, config, emus)
    finally:
        for emu in emus.values():
            emu.stop()


def run_cli(module: ModuleType, *argv: str, ask: Callable[[str], str] | None = None) -> tuple[int, str, str]:
    """Parse `argv` with the command module's own arguments and run it; (exit status, stdout, stderr)."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    kwargs: dict[str, object] = {"out": out, "err": err}
    if ask is not None:
        kwargs["ask"] = ask
    code = module.run(parser.parse_args(list(argv)), **kwargs)
    return int(code), out.getvalue(), err.getvalue()
