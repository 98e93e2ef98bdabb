"""The one robot interface the servo loop, replay and calibration drive: real YAM arms over CAN or MuJoCo.

Contract (every backend):
- `read_state()` returns positions/velocities/efforts in joint order (`config.joint_names`): joints in rad,
  grippers 0 (closed) .. 1 (open), stamped with `time.monotonic()` when read.
- `command(positions)` sets joint targets in the same units and order. Backends do not smooth or rate-limit:
  that is the servo loop's job. They do refuse non-finite or out-of-limit targets (RobotCommandError naming the
  joint) rather than clip silently: the loop already clamps and reports, so a violation here is a bug.
- Faults (motor error codes, lost communication, over-temperature, tracking error) raise RobotFault naming the
  joint and the cause, and leave the robot in a safe state (motors holding or damped, never free-falling
  because of us).
- `hold()` commands the current measured position. `disable()` is the last resort (motors limp).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import numpy.typing as npt

from robot_client.config import RobotConfig

F64 = npt.NDArray[np.float64]


class RobotError(RuntimeError):
    """Base class of robot backend errors."""


class RobotCommandError(RobotError, ValueError):
    """A command was refused before reaching the motors (non-finite, wrong size, beyond limits)."""


class RobotFault(RobotError):
    """The hardware (or simulation) reported a fault. `joint` and `code` name it."""

    def __init__(self, joint: str, code: str, message: str) -> None:
        super().__init__(f"{joint}: {code}: {message}")
        self.joint = joint
        self.code = code
        self.detail = message


@dataclass(frozen=True)
class JointState:
    positions: F64
    velocities: F64
    efforts: F64
    timestamp: float
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.names)
        for label in ("positions", "velocities", "efforts"):
            arr = getattr(self, label)
            if arr.shape != (n,):
                raise RobotError(f"JointState.{label}: expected shape ({n},), got {arr.shape}")


@dataclass(frozen=True)
class FaultRecord:
    joint: str
    code: str
    message: str


@dataclass(frozen=True)
class RobotStatus:
    enabled: bool
    faults: tuple[FaultRecord, ...] = ()
    temperatures_c: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.enabled and not self.faults


@dataclass(frozen=True)
class GraspReport:
    """One gripper's force limiting over a period: was it grasping at the end, how often it stalled on
    something, and the largest |effort| (motor N m) seen at all and after a stall was detected (against the cap)."""

    gripper: str
    grasping: bool
    grasps: int
    peak_effort_nm: float
    peak_grasp_effort_nm: float
    cap_nm: float


@dataclass(frozen=True)
class ActuationReport:
    """What the motors were given beyond the position targets over a period (e.g. an episode): the gravity
    feed-forward per joint (mean and max |tau_ff|, N m, over the frames sent) and each gripper's grasp state."""

    joints: tuple[str, ...] = ()
    feedforward_mean_nm: tuple[float, ...] = ()
    feedforward_max_nm: tuple[float, ...] = ()
    grippers: tuple[GraspReport, ...] = ()

    def describe(self) -> str:
        parts = []
        if self.joints:
            worst = max(range(len(self.joints)), key=lambda i: self.feedforward_max_nm[i])
            parts.append(f"gravity feed-forward max |tau| {self.feedforward_max_nm[worst]:.2f} N m "
                         f"({self.joints[worst]})")
        for g in self.grippers:
            parts.append(f"{g.gripper} {'grasping' if g.grasping else 'free'}, {g.grasps} grasps, peak effort "
                         f"{g.peak_effort_nm:.2f} N m (after stall {g.peak_grasp_effort_nm:.2f}, cap {g.cap_nm:.2f})")
        return "; ".join(parts)


class Robot(ABC):
    """Abstract robot. Backends: robot_client.sim.SimRobot, robot_client.yam.driver.YamRobot."""

    config: RobotConfig

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.config.joint_names

    @abstractmethod
    def connect(self) -> None:
        """Open buses / load the model. Does not enable motors."""

    @abstractmethod
    def enable(self) -> None:
        """Energize motors holding their current position."""

    @abstractmethod
    def disable(self) -> None:
        """De-energize motors (limp). Safe to call repeatedly and after faults."""

    @abstractmethod
    def read_state(self) -> JointState:
        """Latest measured state (raises RobotFault on a hardware fault)."""

    @abstractmethod
    def command(self, positions: F64, velocities: F64 | None = None) -> None:
        """Set joint targets (robot units, joint order) and, optionally, the velocities planned at them (robot
        units/s, the servo's trajectory): motors driven through the MIT law send them as v_des, so their damping
        resists only deviations from the plan; position-servo backends may ignore them."""

    @abstractmethod
    def status(self) -> RobotStatus:
        """Enabled flag, active faults and temperatures."""

    def hold(self) -> None:
        """Command the current measured position (stop where we are)."""
        self.command(self.read_state().positions)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; backends override to also disable."""

    def actuation_report(self, reset: bool = False) -> ActuationReport | None:
        """Feed-forward and grasp figures since the last reset (None: the backend does not track them).
        `reset=True` starts a new period after reading. Never raises for a faulted robot."""
        return None

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- shared checks ------------------------------------------------------------------------------------------
    def check_command(self, positions: F64) -> F64:
        """Refuse (never clip) a command that is not finite, not of joint size, or beyond position limits."""
        arr = np.asarray(positions, dtype=np.float64)
        names = self.joint_names
        if arr.shape != (len(names),):
            raise RobotCommandError(f"command: expected {len(names)} joint targets, got shape {arr.shape}")
        limits = self.config.limits
        for i, name in enumerate(names):
            v = float(arr[i])
            if not math.isfinite(v):
                raise RobotCommandError(f"command[{i}] ({name}): target is {v}")
            lim = limits[name]
            if not lim.lower - 1e-9 <= v <= lim.upper + 1e-9:
                raise RobotCommandError(f"command[{i}] ({name}): target {v:.4f} outside [{lim.lower}, {lim.upper}]")
        return arr

    def check_velocities(self, velocities: F64) -> F64:
        """Refuse (never clip) planned velocities that are not finite, not of joint size, or beyond the configured
        velocity limit by more than 10% (the servo plans within it; more is a caller's bug)."""
        arr = np.asarray(velocities, dtype=np.float64)
        names = self.joint_names
        if arr.shape != (len(names),):
            raise RobotCommandError(f"command velocities: expected {len(names)} joint velocities, got shape "
                                    f"{arr.shape}")
        limits = self.config.limits
        for i, name in enumerate(names):
            v = float(arr[i])
            if not math.isfinite(v) or abs(v) > 1.1 * limits[name].velocity:
                raise RobotCommandError(f"command velocities[{i}] ({name}): {v} not finite or beyond 1.1 x the "
                                        f"{limits[name].velocity} limit")
        return arr
