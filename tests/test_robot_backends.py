"""The robot backend registry: `--robot` choices, builders and the real-hardware confirmation all come from it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pytest

from calibration import latency_cli
from replay.arm_replay import command as arm_replay
from robot_client import backends, run_cli
from robot_client.backends import RigOptions, RobotBackend, UnknownBackendError, backend_names, get_backend
from robot_client.config import RobotConfig, load_robot_config
from robot_client.rig import SIM_CAMERAS, Rig

CONFIG = load_robot_config("bimanual_yam")


def _never_built(config: RobotConfig, cameras: Sequence[str], options: RigOptions) -> Rig:
    raise AssertionError("a refused command must not build a rig")


def _register(monkeypatch: pytest.MonkeyPatch, name: str, *, real: bool) -> RobotBackend:
    backend = RobotBackend(name=name, build=_never_built, moves_real_hardware=real, simulated=False,
                           default_cameras=lambda config: ())
    backend_names()  # the built-ins first, as a command would see them
    monkeypatch.setitem(backends._BACKENDS, name, backend)
    return backend


def test_builtin_backends_and_their_facts() -> None:
    assert backend_names() == ("sim", "yam", "yam-process")
    sim, yam, process = get_backend("sim"), get_backend("yam"), get_backend("yam-process")
    assert not sim.moves_real_hardware and sim.simulated and sim.default_cameras(CONFIG) == SIM_CAMERAS
    for real in (yam, process):
        assert real.moves_real_hardware and not real.simulated
        assert real.default_cameras(CONFIG) == tuple(c.name for c in CONFIG.cameras)
    with pytest.raises(UnknownBackendError,
                       match=r"unknown robot backend 'mars'; known: \['sim', 'yam', 'yam-process'\]"):
        get_backend("mars")
    with pytest.raises(ValueError, match="'sim' is already registered"):
        backends.register_backend(sim)


def test_every_command_offers_the_registered_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, "bench_arm", real=True)
    for add in (run_cli.add_arguments, latency_cli.add_arguments):
        parser = argparse.ArgumentParser()
        add(parser)
        (robot,) = [a for a in parser._actions if a.dest == "robot"]
        assert tuple(robot.choices or ()) == ("sim", "yam", "yam-process", "bench_arm")


def test_a_real_hardware_backend_needs_the_confirmation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal follows the backend's flag, not its name: nothing is connected or built."""
    _register(monkeypatch, "bench_arm", real=True)
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    with pytest.raises(run_cli.ArmsNotConfirmed, match="refusing to move real arms"):
        run_cli.run_session(parser.parse_args(["--server", "127.0.0.1:1", "--robot", "bench_arm"]))

    parser = argparse.ArgumentParser()
    latency_cli.add_arguments(parser)
    args = parser.parse_args(["--robot", "bench_arm", "--calibration", str(tmp_path / "rig.toml"),
                              "--only", "command"])
    assert latency_cli.run(args) == 2
    assert "refusing to move real arms" in capsys.readouterr().err
    assert not (tmp_path / "rig.toml").exists()


def test_replay_builds_its_rigs_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, tuple[str, ...], RigOptions]] = []

    def recording(name: str) -> RobotBackend:
        def build(config: RobotConfig, cameras: Sequence[str], options: RigOptions) -> Rig:
            built.append((name, tuple(cameras), options))
            raise RuntimeError("stop here")

        return RobotBackend(name=name, build=build, moves_real_hardware=name == "yam", simulated=name == "sim",
                            default_cameras=lambda config: ())

    backend_names()
    for name in ("sim", "yam"):
        monkeypatch.setitem(backends._BACKENDS, name, recording(name))
    with pytest.raises(RuntimeError, match="stop here"):
        arm_replay.build_real_rig(CONFIG)
    with pytest.raises(RuntimeError, match="stop here"):
        arm_replay.build_replay_sim_rig(CONFIG, None, seed=3, pace=2.0)  # type: ignore[arg-type]
    assert built == [("yam", (), RigOptions()), ("sim", (), RigOptions(seed=3, pace=2.0))]
