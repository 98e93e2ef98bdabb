"""Robot configuration: one TOML file describing the arms, their joints, limits, gains and buses.

Loaded and validated once at the edge (`load_robot_config`); everything downstream trusts the typed values.
Units: joint positions in rad, gripper in 0 (closed) .. 1 (open); velocities per second, accelerations per
second^2, jerks per second^3 in the same units.

    [robot]
    name = "bimanual_yam"
    servo_hz = 200
    calibration = "calibration/bimanual_yam.toml"   # optional rig calibration file, relative to this file

    [[arm]]
    name = "left"
    joints = ["left_joint1", ..., "left_joint6"]
    gripper = "left_gripper"
    can_channel = "can_left"
    can_interface = "socketcan"          # socketcan | slcan | virtual | unix_link | udp_multicast
    motor_ids = [1, 2, 3, 4, 5, 6, 7]    # gripper last
    motor_types = ["DM4340", "DM4340", "DM4340", "DM4310", "DM4310", "DM4310", "DM4310"]
    kp = [80, 80, 80, 10, 10, 10]
    kd = [5, 5, 5, 1.5, 1.5, 1.5]
    gripper_kp = 20.0
    gripper_kd = 0.5
    gripper_type = "linear_4310"
    gripper_limits = [0.0, -6.57]        # motor rad at [closed, open]; required for the real arm
    gravity_compensation = true           # gravity feed-forward from the arm model (default true)
    gravity_factors = [1.0, 1.1, 1.1, 1.2, 1.0, 1.0]   # per joint; the rig calibration file's fit wins
    gravity_clip_nm = 20.0                # per-joint bound on the feed-forward (see ArmConfig)
    gripper_force_limit = true            # cap the grasp force once the gripper stalls (default true)
    gripper_max_force_n = 50.0            # that cap, at the jaws

    [limits.joint]                        # per joint index within an arm (1..6) plus "gripper"
    ...
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MOTOR_TYPES = ("DM4340", "DM4310", "DM3507", "DM6248")
CAN_INTERFACES = ("socketcan", "slcan", "virtual", "unix_link", "udp_multicast")
GRAVITY_JOINTS = 6  # joints of the arm model the gravity feed-forward uses


class RobotConfigError(ValueError):
    """The robot config is missing a key or holds an impossible value; the message names the key."""


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, in robot units. The servo loop never commands beyond any of them."""

    lower: float
    upper: float
    velocity: float
    acceleration: float
    jerk: float

    def __post_init__(self) -> None:
        if not self.upper > self.lower:
            raise RobotConfigError(f"limits: upper {self.upper} must be > lower {self.lower}")
        for label in ("velocity", "acceleration", "jerk"):
            value = getattr(self, label)
            if not (math.isfinite(value) and value > 0):
                raise RobotConfigError(f"limits.{label} must be a positive number, got {value}")


@dataclass(frozen=True)
class ArmConfig:
    name: str
    joints: tuple[str, ...]
    gripper: str
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    gripper_kp: float
    gripper_kd: float
    can_channel: str = ""
    can_interface: str = "socketcan"
    can_bitrate: int = 1_000_000
    motor_ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    motor_types: tuple[str, ...] = ("DM4340", "DM4340", "DM4340", "DM4310", "DM4310", "DM4310", "DM4310")
    gripper_type: str = "linear_4310"
    # Motor positions (rad) of the gripper fully closed and fully open; None = not calibrated.
    gripper_limits: tuple[float, float] | None = None
    # Motor-side watchdog (register 9): the motor drops to damping mode after this long without a frame (0 = off).
    # 400 ms is the factory value, which the maker's driver keeps: the driver's background sender feeds the motors
    # at 250 Hz whatever the servo loop does, so this only has to catch a dead process; 100 ms tripped on a live
    # but busy one. The servo loop's own deadline is YamOptions.command_timeout_s.
    watchdog_ms: float = 400.0
    # Gravity feed-forward (robot_client.gravity): on in hold and tracking, as the maker's driver does. Factors
    # scale the arm model's torque per joint (the maker's defaults; `python -m calibration gravity` fits them into
    # the rig calibration file, which wins); each joint's feed-forward is clipped to +-gravity_clip_nm. 20 N m, not
    # LeRobot's 10: the arm model needs 14.9 N m on joint 2 with the forearm stretched out, where a 10 N m clip
    # leaves 0.06 rad of sag (bench/sim_gravity.py); 20 stays under the maker's 25 N m "too large torques" alarm and
    # the DM4340's 28 N m range, so a wrong model or zero offset still cannot command the motor's full torque.
    gravity_compensation: bool = True
    gravity_factors: tuple[float, ...] = (1.0, 1.1, 1.1, 1.2, 1.0, 1.0)
    gravity_clip_nm: float = 20.0
    # Gripper force limit (robot_client.gripper_force): once the gripper stalls on an object its push is capped
    # at this jaw force (the maker's 50 N, about 1.03 N m at a linear_4310's motor).
    gripper_force_limit: bool = True
    gripper_max_force_n: float = 50.0

    @property
    def names(self) -> tuple[str, ...]:
        """Joint names of this arm, gripper last (the order of states and actions)."""
        return (*self.joints, self.gripper)

    def __post_init__(self) -> None:
        n = len(self.joints)
        if n == 0:
            raise RobotConfigError(f"arm '{self.name}': joints must not be empty")
        for label, values in (("kp", self.kp), ("kd", self.kd)):
            if len(values) != n:
                raise RobotConfigError(f"arm '{self.name}': {label} has {len(values)} entries, expected {n}")
            if any(v < 0 for v in values):
                raise RobotConfigError(f"arm '{self.name}': {label} must be >= 0")
        if len(self.motor_ids) != n + 1 or len(self.motor_types) != n + 1:
            raise RobotConfigError(f"arm '{self.name}': motor_ids and motor_types need {n + 1} entries "
                                   f"(joints then gripper)")
        if len(set(self.motor_ids)) != len(self.motor_ids) or not all(0 < m < 0x10 for m in self.motor_ids):
            raise RobotConfigError(f"arm '{self.name}': motor_ids must be distinct in 1..15, got {self.motor_ids}")
        unknown = [t for t in self.motor_types if t not in MOTOR_TYPES]
        if unknown:
            raise RobotConfigError(f"arm '{self.name}': unknown motor types {unknown}; known {MOTOR_TYPES}")
        if self.can_interface not in CAN_INTERFACES:
            raise RobotConfigError(f"arm '{self.name}': can_interface must be one of {CAN_INTERFACES}")
        if self.gripper_limits is not None and abs(self.gripper_limits[1] - self.gripper_limits[0]) < 1e-3:
            raise RobotConfigError(f"arm '{self.name}': gripper_limits {self.gripper_limits} span nothing")
        if not (math.isfinite(self.watchdog_ms) and (self.watchdog_ms == 0 or 50.0 <= self.watchdog_ms <= 10_000.0)):
            raise RobotConfigError(f"arm '{self.name}': watchdog_ms must be 0 (off) or lie in [50, 10000] ms (the "
                                   f"factory value is 400), got {self.watchdog_ms}")
        if self.gravity_compensation and n != GRAVITY_JOINTS:
            raise RobotConfigError(f"arm '{self.name}': gravity_compensation needs the {GRAVITY_JOINTS}-joint YAM "
                                   f"model, the arm has {n} joints; set gravity_compensation = false")
        if len(self.gravity_factors) != GRAVITY_JOINTS or not all(
                math.isfinite(f) and 0.0 <= f <= 3.0 for f in self.gravity_factors):
            raise RobotConfigError(f"arm '{self.name}': gravity_factors must be {GRAVITY_JOINTS} numbers in [0, 3] "
                                   f"(joints 1-6), got {list(self.gravity_factors)}")
        if not (math.isfinite(self.gravity_clip_nm) and 0 < self.gravity_clip_nm <= 28.0):
            raise RobotConfigError(f"arm '{self.name}': gravity_clip_nm must lie in (0, 28] N m (the DM4340's "
                                   f"torque range), got {self.gravity_clip_nm}")
        if not (math.isfinite(self.gripper_max_force_n) and 0 < self.gripper_max_force_n <= 200.0):
            raise RobotConfigError(f"arm '{self.name}': gripper_max_force_n must lie in (0, 200] N, got "
                                   f"{self.gripper_max_force_n}")


@dataclass(frozen=True)
class SafetyConfig:
    # Refuse to start when the first action is farther than this from the current state (per joint, robot units).
    first_action_max_delta: float = 0.35
    # Speed of the slow ramp to the first action (rad/s for joints, 1/s for grippers).
    ramp_velocity: float = 0.25
    # Hold when no usable chunk arrived for this long (seconds).
    server_deadline_s: float = 0.5
    # A motor or sim tracking error beyond this (robot units) is a fault.
    max_tracking_error: float = 0.5


@dataclass(frozen=True)
class CameraEntry:
    """A real camera of the rig ([[camera]] in the config): device index/path or serial, requested format."""

    name: str
    device: int | str | None = None
    serial: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass(frozen=True)
class RobotConfig:
    name: str
    servo_hz: float
    arms: tuple[ArmConfig, ...]
    limits: Mapping[str, JointLimits]  # by joint name
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    cameras: tuple[CameraEntry, ...] = ()
    source: str = ""
    # Rig calibration file (zero offsets, gripper limits; `robot_client.calfile`), resolved to a path; "" = none.
    calibration: str = ""

    def __post_init__(self) -> None:
        if not self.arms:
            raise RobotConfigError("at least one [[arm]] is required")
        if not 50 <= self.servo_hz <= 2000:
            raise RobotConfigError(f"robot.servo_hz must be in [50, 2000], got {self.servo_hz}")
        names = self.joint_names
        if len(set(names)) != len(names):
            raise RobotConfigError(f"joint names repeat across arms: {names}")
        missing = [n for n in names if n not in self.limits]
        if missing:
            raise RobotConfigError(f"no limits for joints {missing}")

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(n for arm in self.arms for n in arm.names)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def limit_arrays(self) -> dict[str, list[float]]:
        """Per-joint limits as lists in joint order: lower, upper, velocity, acceleration, jerk."""
        ordered = [self.limits[n] for n in self.joint_names]
        return {k: [getattr(lim, k) for lim in ordered] for k in ("lower", "upper", "velocity", "acceleration", "jerk")}

    def gripper_indices(self) -> tuple[int, ...]:
        names = self.joint_names
        return tuple(names.index(arm.gripper) for arm in self.arms)


def _get(table: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...] | None = None) -> Any:
    if key not in table:
        raise RobotConfigError(f"{where}: missing '{key}'")
    value = table[key]
    if kind is not None and not isinstance(value, kind):
        raise RobotConfigError(f"{where}.{key}: expected {kind}, got {type(value).__name__}")
    return value


def _floats(values: Any, where: str) -> tuple[float, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise RobotConfigError(f"{where}: expected a list of numbers")
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise RobotConfigError(f"{where}: expected a list of numbers, got {values!r}") from None


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise RobotConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RobotConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _limits(raw: Mapping[str, Any], arms: tuple[ArmConfig, ...], where: str) -> dict[str, JointLimits]:
    """[limits.<key>] tables; key is a joint name, "jointN" (applies to that joint on every arm) or "gripper"."""
    out: dict[str, JointLimits] = {}
    for arm in arms:
        for i, name in enumerate(arm.names):
            generic = "gripper" if name == arm.gripper else f"joint{i + 1}"
            table = raw.get(name) or raw.get(generic)
            if table is None:
                raise RobotConfigError(f"{where}: no [limits.{name}] or [limits.{generic}]")
            try:
                out[name] = JointLimits(**{k: float(table[k]) for k in
                                           ("lower", "upper", "velocity", "acceleration", "jerk")})
            except KeyError as exc:
                raise RobotConfigError(f"{where}.{generic}: missing {exc}") from None
            except RobotConfigError as exc:
                raise RobotConfigError(f"{where}.{generic}: {exc}") from None
    return out


def parse_robot_config(raw: Mapping[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> RobotConfig:
    """`base_dir`: where a relative `[robot] calibration` path starts (the config file's folder; default cwd)."""
    robot = _get(raw, "robot", source, dict)
    calibration = robot.get("calibration", "")
    if not isinstance(calibration, str):
        raise RobotConfigError(f"{source}: robot.calibration: expected a path string, got {calibration!r}")
    if calibration and base_dir is not None and not Path(calibration).is_absolute():
        calibration = str(base_dir / calibration)
    arms_raw = _get(raw, "arm", source, list)
    arms = []
    for i, a in enumerate(arms_raw):
        where = f"{source}: arm[{i}]"
        limits = a.get("gripper_limits")
        arms.append(ArmConfig(
            name=str(_get(a, "name", where, str)),
            joints=tuple(str(j) for j in _get(a, "joints", where, list)),
            gripper=str(_get(a, "gripper", where, str)),
            kp=_floats(_get(a, "kp", where), f"{where}.kp"),
            kd=_floats(_get(a, "kd", where), f"{where}.kd"),
            gripper_kp=float(_get(a, "gripper_kp", where)),
            gripper_kd=float(_get(a, "gripper_kd", where)),
            can_channel=str(a.get("can_channel", "")),
            can_interface=str(a.get("can_interface", "socketcan")),
            can_bitrate=int(a.get("can_bitrate", 1_000_000)),
            motor_ids=tuple(int(m) for m in a.get("motor_ids", (1, 2, 3, 4, 5, 6, 7))),
            motor_types=tuple(str(m) for m in a.get("motor_types", ArmConfig.motor_types)),
            gripper_type=str(a.get("gripper_type", "linear_4310")),
            gripper_limits=None if limits is None else (float(limits[0]), float(limits[1])),
            watchdog_ms=_number(a.get("watchdog_ms", 400.0), f"{where}.watchdog_ms"),
            gravity_compensation=_bool(a.get("gravity_compensation", True), f"{where}.gravity_compensation"),
            gravity_factors=_floats(a.get("gravity_factors", ArmConfig.gravity_factors), f"{where}.gravity_factors"),
            gravity_clip_nm=_number(a.get("gravity_clip_nm", ArmConfig.gravity_clip_nm), f"{where}.gravity_clip_nm"),
            gripper_force_limit=_bool(a.get("gripper_force_limit", True), f"{where}.gripper_force_limit"),
            gripper_max_force_n=_number(a.get("gripper_max_force_n", 50.0), f"{where}.gripper_max_force_n"),
        ))
    arms_t = tuple(arms)
    safety_raw = raw.get("safety", {})
    try:
        safety = SafetyConfig(**{k: float(v) for k, v in safety_raw.items()})
    except TypeError as exc:
        raise RobotConfigError(f"{source}: [safety]: {exc}") from None
    cameras = []
    for i, c in enumerate(raw.get("camera", [])):
        where = f"{source}: camera[{i}]"
        unknown = sorted(set(c) - {"name", "device", "serial", "width", "height", "fps"})
        if unknown:
            raise RobotConfigError(f"{where}: unknown keys {unknown}")
        cameras.append(CameraEntry(
            name=str(_get(c, "name", where, str)), device=c.get("device"), serial=c.get("serial"),
            width=c.get("width"), height=c.get("height"), fps=c.get("fps"),
        ))
    return RobotConfig(
        name=str(robot.get("name", "robot")),
        servo_hz=float(robot.get("servo_hz", 200)),
        arms=arms_t,
        limits=_limits(_get(raw, "limits", source, dict), arms_t, f"{source}: [limits]"),
        safety=safety,
        cameras=tuple(cameras),
        source=source,
        calibration=calibration,
    )


def load_robot_config(path: str | Path) -> RobotConfig:
    """Read a TOML robot config; a bare name (e.g. "bimanual_yam") means robot_client/configs/<name>.toml."""
    p = Path(path)
    if not p.suffix and not p.exists():
        p = CONFIG_DIR / f"{p.name}.toml"
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        known = sorted(f.stem for f in CONFIG_DIR.glob("*.toml"))
        raise RobotConfigError(f"robot config {p} not found (bundled configs: {known})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RobotConfigError(f"{p}: not valid TOML ({exc})") from None
    return parse_robot_config(raw, str(p), base_dir=p.parent)
