"""The rig calibration file: one human-readable TOML per rig, versioned, written by `python -m calibration ...`.

Why a file of its own (not the robot config): the robot config says what the rig *is* (joints, limits, buses,
gains) and is edited by hand; the calibration says what was *measured* on it, when and how, and is rewritten
by the procedures. A policy trained on one rig's numbers runs on another rig's numbers, so every section keeps
its date and method and the robot client warns when one is missing or older than `max_age_days`.

    format_version = 1
    rig = "bimanual_yam"

    [arm.left.zero]                        # joint angle = motor reading - offset (rad)
    offsets = { left_joint1 = 0.0, ... }
    measured_at = "2026-11-22T10:00:00+00:00"
    method = "zero pose, 200 readings averaged"

    [arm.left.gripper]                     # motor rad at fully closed / fully open
    closed = 0.0
    open = -6.57
    measured_at = ...
    method = "stall detection at 0.5 N m"

    [arm.left.gravity]                     # per-joint factors on the arm model's gravity torque
    factors = { left_joint1 = 1.0, left_joint2 = 1.08, ... }
    residual_nm = { left_joint1 = 0.0, left_joint2 = 0.12, ... }   # rms misfit over the poses
    measured_at = ...
    method = "least squares over 6 still poses, 1 s each"

    [camera.top]
    width = 640
    height = 480
    camera_matrix = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    distortion = [k1, k2, p1, p2, k3]
    reprojection_error_px = 0.21
    measured_at = ...
    method = "checkerboard 9x6, 25 mm, 20 views"

    [camera.left_wrist.extrinsics]         # camera pose in `frame` (4x4, metres)
    frame = "left_link6"
    transform = [[...], [...], [...], [0, 0, 0, 1]]
    measured_at = ...
    method = "hand-eye (Tsai), 15 poses"

    [latency]
    command_to_motion_ms = 12.5
    camera_ms = { top = 45.0, left_wrist = 38.0 }
    measured_at = ...
    method = "..."

Every procedure updates only its own section (`update_calibration`), so running `gripper` after `joints` keeps
the offsets. Loading validates shapes, finiteness and names (against the robot config when given) and raises a
CalibrationError naming the field.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tomli_w

FORMAT_VERSION = 1
F64 = npt.NDArray[np.float64]


class CalibrationError(ValueError):
    """The calibration file is missing, malformed, or does not fit the rig; the message names the field."""


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Measured:
    """When and how a section was measured (every section carries both)."""

    measured_at: str
    method: str

    def age(self, now: datetime | None = None) -> timedelta:
        stamp = datetime.fromisoformat(self.measured_at)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return (now or datetime.now(UTC)) - stamp


@dataclass(frozen=True)
class JointZero:
    """Zero offsets of one arm's joints: joint angle = motor reading - offset (rad)."""

    offsets: dict[str, float]
    measured: Measured


@dataclass(frozen=True)
class GripperRange:
    """Motor positions (rad) of one gripper fully closed and fully open (either order)."""

    closed: float
    open: float
    measured: Measured

    @property
    def span(self) -> float:
        return abs(self.open - self.closed)


@dataclass(frozen=True)
class GravityFactors:
    """Per-joint factors on the arm model's gravity torque, fitted on the arm (`python -m calibration gravity`),
    with the rms residual (N m) of the fit per joint."""

    factors: dict[str, float]
    residual_nm: dict[str, float]
    measured: Measured


@dataclass(frozen=True)
class CameraExtrinsics:
    """The camera's pose in `frame` (a body of the robot model, or "world"): 4x4 homogeneous, metres."""

    frame: str
    transform: F64
    measured: Measured
    residual: float | None = None  # method-specific consistency figure (e.g. mm / deg of the hand-eye fit)


@dataclass(frozen=True)
class CameraCalibration:
    width: int
    height: int
    camera_matrix: F64  # 3x3
    distortion: F64  # OpenCV order (k1, k2, p1, p2[, k3[, ...]])
    reprojection_error_px: float
    measured: Measured
    extrinsics: CameraExtrinsics | None = None


@dataclass(frozen=True)
class Latency:
    command_to_motion_ms: float | None
    camera_ms: dict[str, float]
    measured: Measured


@dataclass(frozen=True)
class RigCalibration:
    rig: str
    zero: dict[str, JointZero] = field(default_factory=dict)  # by arm name
    gripper: dict[str, GripperRange] = field(default_factory=dict)  # by arm name
    cameras: dict[str, CameraCalibration] = field(default_factory=dict)  # by camera name
    latency: Latency | None = None
    format_version: int = FORMAT_VERSION
    gravity: dict[str, GravityFactors] = field(default_factory=dict)  # by arm name

    # -- consumers ----------------------------------------------------------------------------------------------
    def zero_offsets(self) -> dict[str, float]:
        """All joints' offsets, by joint name (joints of uncalibrated arms are absent)."""
        return {name: value for z in self.zero.values() for name, value in z.offsets.items()}

    def sections(self) -> dict[str, Measured]:
        """Every measured section by a readable name (for staleness reports)."""
        out: dict[str, Measured] = {}
        out.update({f"arm.{a}.zero": z.measured for a, z in self.zero.items()})
        out.update({f"arm.{a}.gripper": g.measured for a, g in self.gripper.items()})
        out.update({f"arm.{a}.gravity": g.measured for a, g in self.gravity.items()})
        for name, cam in self.cameras.items():
            out[f"camera.{name}"] = cam.measured
            if cam.extrinsics is not None:
                out[f"camera.{name}.extrinsics"] = cam.extrinsics.measured
        if self.latency is not None:
            out["latency"] = self.latency.measured
        return out

    def stale_sections(self, max_age_days: float, now: datetime | None = None) -> dict[str, float]:
        """Sections older than `max_age_days`, with their age in days."""
        limit = timedelta(days=max_age_days)
        return {name: m.age(now).total_seconds() / 86400 for name, m in self.sections().items()
                if m.age(now) > limit}


# ---- reading ----------------------------------------------------------------------------------------------------


def load_calibration(path: str | Path) -> RigCalibration:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no calibration file (create it with `python -m calibration joints` "
                               f"and `python -m calibration gripper`)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return parse_calibration(raw)
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from exc


def parse_calibration(raw: Mapping[str, Any]) -> RigCalibration:
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise CalibrationError(f"format_version must be {FORMAT_VERSION}, got {version!r}")
    rig = _str(raw, "rig", "")
    zero: dict[str, JointZero] = {}
    gripper: dict[str, GripperRange] = {}
    gravity: dict[str, GravityFactors] = {}
    for arm, body in _table(raw, "arm", "").items():
        where = f"arm.{arm}"
        body = _as_table(body, where)
        if "zero" in body:
            z = _as_table(body["zero"], f"{where}.zero")
            offsets = {str(k): _finite(v, f"{where}.zero.offsets.{k}")
                       for k, v in _table(z, "offsets", f"{where}.zero").items()}
            zero[arm] = JointZero(offsets, _measured(z, f"{where}.zero"))
        if "gripper" in body:
            g = _as_table(body["gripper"], f"{where}.gripper")
            gripper[arm] = GripperRange(_finite(g.get("closed"), f"{where}.gripper.closed"),
                                        _finite(g.get("open"), f"{where}.gripper.open"),
                                        _measured(g, f"{where}.gripper"))
        if "gravity" in body:
            gv = _as_table(body["gravity"], f"{where}.gravity")
            factors = {str(k): _finite(v, f"{where}.gravity.factors.{k}")
                       for k, v in _table(gv, "factors", f"{where}.gravity").items()}
            for k, v in factors.items():
                if not 0.0 <= v <= 3.0:
                    raise CalibrationError(f"{where}.gravity.factors.{k}: expected a factor in [0, 3], got {v}")
            residual = {str(k): _finite(v, f"{where}.gravity.residual_nm.{k}")
                        for k, v in _table(gv, "residual_nm", f"{where}.gravity").items()}
            gravity[arm] = GravityFactors(factors, residual, _measured(gv, f"{where}.gravity"))
    cameras = {name: _camera(_as_table(body, f"camera.{name}"), f"camera.{name}")
               for name, body in _table(raw, "camera", "").items()}
    latency = None
    if "latency" in raw:
        lat = _as_table(raw["latency"], "latency")
        c2m = lat.get("command_to_motion_ms")
        latency = Latency(
            command_to_motion_ms=None if c2m is None else _finite(c2m, "latency.command_to_motion_ms"),
            camera_ms={str(k): _finite(v, f"latency.camera_ms.{k}") for k, v in
                       _table(lat, "camera_ms", "latency").items()},
            measured=_measured(lat, "latency"),
        )
    return RigCalibration(rig=rig, zero=zero, gripper=gripper, cameras=cameras, latency=latency, gravity=gravity)


def _camera(body: Mapping[str, Any], where: str) -> CameraCalibration:
    width, height = _int(body, "width", where), _int(body, "height", where)
    matrix = _matrix(body.get("camera_matrix"), (3, 3), f"{where}.camera_matrix")
    if matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
        raise CalibrationError(f"{where}.camera_matrix: focal lengths must be > 0, got {matrix[0, 0]}, {matrix[1, 1]}")
    distortion = np.asarray(_numbers(body.get("distortion"), f"{where}.distortion"), dtype=np.float64)
    if len(distortion) not in (4, 5, 8, 12, 14):
        raise CalibrationError(f"{where}.distortion: OpenCV takes 4, 5, 8, 12 or 14 coefficients, "
                               f"got {len(distortion)}")
    extrinsics = None
    if "extrinsics" in body:
        ex = _as_table(body["extrinsics"], f"{where}.extrinsics")
        transform = _matrix(ex.get("transform"), (4, 4), f"{where}.extrinsics.transform")
        _check_rigid(transform, f"{where}.extrinsics.transform")
        residual = ex.get("residual")
        extrinsics = CameraExtrinsics(_str(ex, "frame", f"{where}.extrinsics"), transform,
                                      _measured(ex, f"{where}.extrinsics"),
                                      None if residual is None else _finite(residual, f"{where}.extrinsics.residual"))
    return CameraCalibration(width, height, matrix, distortion,
                             _finite(body.get("reprojection_error_px"), f"{where}.reprojection_error_px"),
                             _measured(body, where), extrinsics)


def _check_rigid(transform: F64, where: str) -> None:
    rotation = transform[:3, :3]
    if not np.allclose(transform[3], [0, 0, 0, 1], atol=1e-9):
        raise CalibrationError(f"{where}: last row must be [0, 0, 0, 1], got {transform[3].tolist()}")
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6) or np.linalg.det(rotation) < 0:
        raise CalibrationError(f"{where}: the upper-left 3x3 is not a rotation (orthonormal, det +1)")


def _measured(body: Mapping[str, Any], where: str) -> Measured:
    stamp = _str(body, "measured_at", where)
    try:
        datetime.fromisoformat(stamp)
    except ValueError as exc:
        raise CalibrationError(f"{where}.measured_at: not an ISO 8601 date-time: {stamp!r}") from exc
    return Measured(stamp, _str(body, "method", where))


def _as_table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CalibrationError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _table(body: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    return _as_table(body.get(key, {}), f"{where}.{key}".lstrip("."))


def _str(body: Mapping[str, Any], key: str, where: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise CalibrationError(f"{where}.{key}".lstrip(".") + f": expected a non-empty string, got {value!r}")
    return value


def _int(body: Mapping[str, Any], key: str, where: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CalibrationError(f"{where}.{key}: expected a positive integer, got {value!r}")
    return value


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CalibrationError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _numbers(value: Any, where: str) -> list[float]:
    if not isinstance(value, list):
        raise CalibrationError(f"{where}: expected a list of numbers, got {value!r}")
    return [_finite(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _matrix(value: Any, shape: tuple[int, int], where: str) -> F64:
    if not isinstance(value, list) or len(value) != shape[0]:
        raise CalibrationError(f"{where}: expected {shape[0]}x{shape[1]} nested lists, got {value!r}")
    rows = [_numbers(row, f"{where}[{i}]") for i, row in enumerate(value)]
    if any(len(r) != shape[1] for r in rows):
        raise CalibrationError(f"{where}: expected {shape[0]}x{shape[1]}, got rows of {[len(r) for r in rows]}")
    return np.asarray(rows, dtype=np.float64)


# ---- writing ----------------------------------------------------------------------------------------------------


def calibration_to_toml(cal: RigCalibration) -> str:
    doc: dict[str, Any] = {"format_version": cal.format_version, "rig": cal.rig}
    arms: dict[str, dict[str, Any]] = {}
    for arm, z in cal.zero.items():
        arms.setdefault(arm, {})["zero"] = {"offsets": dict(z.offsets), **_measured_doc(z.measured)}
    for arm, g in cal.gripper.items():
        arms.setdefault(arm, {})["gripper"] = {"closed": g.closed, "open": g.open, **_measured_doc(g.measured)}
    for arm, gv in cal.gravity.items():
        arms.setdefault(arm, {})["gravity"] = {"factors": dict(gv.factors), "residual_nm": dict(gv.residual_nm),
                                               **_measured_doc(gv.measured)}
    if arms:
        doc["arm"] = arms
    cameras: dict[str, Any] = {}
    for name, cam in cal.cameras.items():
        body: dict[str, Any] = {
            "width": cam.width, "height": cam.height, "camera_matrix": cam.camera_matrix.tolist(),
            "distortion": cam.distortion.tolist(), "reprojection_error_px": cam.reprojection_error_px,
            **_measured_doc(cam.measured),
        }
        if cam.extrinsics is not None:
            ex = cam.extrinsics
            body["extrinsics"] = {"frame": ex.frame, "transform": ex.transform.tolist(), **_measured_doc(ex.measured)}
            if ex.residual is not None:
                body["extrinsics"]["residual"] = ex.residual
        cameras[name] = body
    if cameras:
        doc["camera"] = cameras
    if cal.latency is not None:
        lat: dict[str, Any] = {"camera_ms": dict(cal.latency.camera_ms), **_measured_doc(cal.latency.measured)}
        if cal.latency.command_to_motion_ms is not None:
            lat["command_to_motion_ms"] = cal.latency.command_to_motion_ms
        doc["latency"] = lat
    header = (f"# Rig calibration ({cal.rig}), written by `python -m calibration`. Each section records when and\n"
              f"# how it was measured; rerun the procedure rather than editing numbers by hand.\n")
    return header + tomli_w.dumps(doc)


def _measured_doc(m: Measured) -> dict[str, str]:
    return {"measured_at": m.measured_at, "method": m.method}


def save_calibration(cal: RigCalibration, path: str | Path) -> None:
    """Write atomically (temp file + rename): an interrupted write leaves the previous calibration intact."""
    path = Path(path)
    text = calibration_to_toml(cal)
    parse_calibration(tomllib.loads(text))  # never write what would not load back
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def update_calibration(path: str | Path, rig: str,
                       change: Callable[[RigCalibration], RigCalibration]) -> RigCalibration:
    """Load `path` (or start empty), apply `change` to it, save, and return the result: each procedure
    replaces its own section and keeps the others."""
    path = Path(path)
    current = load_calibration(path) if path.exists() else RigCalibration(rig=rig)
    if current.rig != rig:
        raise CalibrationError(f"{path}: calibration is for rig {current.rig!r}, not {rig!r}")
    updated = change(current)
    save_calibration(updated, path)
    return updated


def with_zero(cal: RigCalibration, arm: str, zero: JointZero) -> RigCalibration:
    return replace(cal, zero={**cal.zero, arm: zero})


def with_gripper(cal: RigCalibration, arm: str, gripper: GripperRange) -> RigCalibration:
    return replace(cal, gripper={**cal.gripper, arm: gripper})


def with_gravity(cal: RigCalibration, arm: str, gravity: GravityFactors) -> RigCalibration:
    return replace(cal, gravity={**cal.gravity, arm: gravity})


def with_camera(cal: RigCalibration, name: str, camera: CameraCalibration) -> RigCalibration:
    return replace(cal, cameras={**cal.cameras, name: camera})


def with_latency(cal: RigCalibration, latency: Latency) -> RigCalibration:
    return replace(cal, latency=latency)


# ---- checks against the robot config ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationFit:
    """What `check_against_config` found: errors refuse the rig, warnings are printed."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def check_against_config(cal: RigCalibration, rig_name: str, arms: Sequence[tuple[str, Sequence[str]]],
                         cameras: Sequence[str] = (), *, max_age_days: float = 90.0,
                         min_gripper_span: float = 1.0, now: datetime | None = None) -> CalibrationFit:
    """Does this calibration belong to this rig, and is it complete and fresh?

    `arms` is (arm name, joint names without the gripper) per arm. Errors: another rig's file, offsets for joints
    the arm lacks, a gripper span below `min_gripper_span` motor rad (a collapsed auto-calibration). Warnings:
    arms without zero or gripper sections, configured cameras without intrinsics, sections older than
    `max_age_days`."""
    errors: list[str] = []
    warnings: list[str] = []
    if cal.rig != rig_name:
        errors.append(f"the calibration is for rig {cal.rig!r}, the robot config is {rig_name!r}")
    known_arms = {name for name, _ in arms}
    for extra in sorted((set(cal.zero) | set(cal.gripper) | set(cal.gravity)) - known_arms):
        errors.append(f"arm.{extra}: the robot config has no arm {extra!r} (arms: {sorted(known_arms)})")
    for arm, joints in arms:
        zero = cal.zero.get(arm)
        if zero is None:
            warnings.append(f"arm.{arm}.zero: no zero offsets measured (run `python -m calibration joints`)")
        else:
            unknown = sorted(set(zero.offsets) - set(joints))
            missing = [j for j in joints if j not in zero.offsets]
            if unknown:
                errors.append(f"arm.{arm}.zero.offsets: joints {unknown} are not joints of arm {arm!r} {list(joints)}")
            if missing:
                errors.append(f"arm.{arm}.zero.offsets: missing joints {missing}")
        grav = cal.gravity.get(arm)
        if grav is not None:
            unknown = sorted(set(grav.factors) - set(joints))
            missing = [j for j in joints if j not in grav.factors]
            if unknown:
                errors.append(f"arm.{arm}.gravity.factors: joints {unknown} are not joints of arm {arm!r} "
                              f"{list(joints)}")
            if missing:
                errors.append(f"arm.{arm}.gravity.factors: missing joints {missing}")
        grip = cal.gripper.get(arm)
        if grip is None:
            warnings.append(f"arm.{arm}.gripper: no gripper range measured (run `python -m calibration gripper`)")
        elif grip.span < min_gripper_span:
            errors.append(f"arm.{arm}.gripper: span {grip.span:.3f} motor rad (closed {grip.closed:.3f}, open "
                          f"{grip.open:.3f}) is implausibly small (< {min_gripper_span:g}); recalibrate with the "
                          f"jaws free")
    for camera in cameras:
        if camera not in cal.cameras:
            warnings.append(f"camera.{camera}: no intrinsics measured (run `python -m calibration camera`)")
    for name, days in cal.stale_sections(max_age_days, now).items():
        warnings.append(f"{name}: measured {days:.0f} days ago (older than {max_age_days:g} days); re-measure")
    return CalibrationFit(tuple(errors), tuple(warnings))
