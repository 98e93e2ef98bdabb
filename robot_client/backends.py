"""Robot backends by name (`--robot sim|yam`): how to build each one's rig, and the facts commands decide on.

Why a registry: every command that drives a robot (`robot_client run`, `calibration latency`, `replay sim|real`)
needs the same three answers for its `--robot` value: which names exist, how to build the rig, and whether the
commands reach physical motors (then nothing moves without the explicit confirmation flag). Kept here once, a
new backend is one `register_backend` call beside its builder, and no command grows another if/else.

The built-in backends are defined and registered in `robot_client.rig`, next to their builders; the lookups
below import it first, so they answer the same whichever module was imported before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robot_client.config import RobotConfig
    from robot_client.rig import Rig
    from robot_client.sim.robot import SimConfig


# How the simulated arms' joints are driven (SimConfig.actuation, `--sim-actuation`): "position" = stiff position
# servos with gravity cancelled per body (what the embedded demo policy was trained on); "mit" = the real motors'
# MIT law with their gains, torque limits, real gravity and the gravity feed-forward (robot_client.sim.mit).
SIM_ACTUATIONS = ("position", "mit")


class UnknownBackendError(KeyError):
    """A `--robot` name that no backend registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class RigOptions:
    """What a command asks of the rig, whatever the backend. A backend takes what applies to it and ignores the
    rest: real arms have no scene seed, no pace and no injected delays."""

    seed: int = 0  # scene seed of episode 0
    pace: float | None = 1.0  # simulated seconds per wall second; None = as fast as possible
    sim: SimConfig | None = None  # simulation settings (its seed is replaced by `seed`); None = the defaults
    camera_delays_s: Mapping[str, float] | None = None  # injected camera latency per camera
    # Backends whose servo loop runs in another process start it knowing whether this is a dry run.
    dry_run: bool = False
    # Backends whose servo loop runs in another process pin it to this core (None: any core).
    servo_cpu: int | None = None


RigBuilder = Callable[["RobotConfig", Sequence[str], RigOptions], "Rig"]


@dataclass(frozen=True)
class RobotBackend:
    """One `--robot` choice."""

    name: str
    # (robot config, camera names the policy needs, options) -> a connected rig (not enabled).
    build: RigBuilder
    # Commands reach physical motors: a command moves them only with --i-understand-this-moves-the-arm.
    moves_real_hardware: bool
    # Time, motion and cameras are simulated: seeds, pace and injected delays apply, frames are rendered.
    simulated: bool
    # The cameras this backend can provide for a config, when a command is not told which ones to use.
    default_cameras: Callable[[RobotConfig], tuple[str, ...]]
    help: str = ""


_BACKENDS: dict[str, RobotBackend] = {}


def register_backend(backend: RobotBackend) -> RobotBackend:
    """Add a backend under its name; a name is registered once (a second one would silently shadow it)."""
    if backend.name in _BACKENDS:
        raise ValueError(f"robot backend {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend
    return backend


def _registry() -> Mapping[str, RobotBackend]:
    import robot_client.rig  # noqa: F401  (defines and registers the built-in backends)

    return _BACKENDS


def backend_names() -> tuple[str, ...]:
    """The `--robot` choices, in registration order."""
    return tuple(_registry())


def get_backend(name: str) -> RobotBackend:
    backends = _registry()
    if name not in backends:
        raise UnknownBackendError(f"unknown robot backend {name!r}; known: {list(backends)}")
    return backends[name]
