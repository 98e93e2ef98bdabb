"""Hand-eye calibration of a wrist camera: the camera's pose in the link it is bolted to (eye-in-hand).

Inputs per view: the board's pose in the camera (solvePnP with the calibrated intrinsics) and the link's pose
in the robot base (forward kinematics of the measured joint angles, or given directly). The board stays put
while the arm moves, so for the right camera-in-link transform X every view implies the same board pose in
the base: T_base_board = T_base_link_i @ X @ T_cam_board_i. `cv2.calibrateHandEye` solves AX = XB for X; the
spread of the implied board poses over the views (position in mm, orientation in deg, RMS) then measures how
consistent the whole chain is (joint offsets, FK model, intrinsics, detection), and is what we refuse on.

Method: Park & Martin (1994) by default. It solves the rotation from the axis-angle (log-map) vectors of
the motions, which must satisfy alpha = R_X beta for every motion pair: a least-squares rotation fit (solved
here in its SVD/Procrustes form, equivalent to Park-Martin's (M^T M)^(-1/2) M^T and defined even when M is
near-singular), then the translation by linear least squares over (R_A - I) t_X = R_X t_B - t_A. It is well
behaved with noisy motions, needs no quaternion sign handling (Daniilidis) and does not mix metres and radians
in one system (Andreff). All view pairs are used, not only consecutive ones: small motions get small log
vectors and so little weight in the rotation, by construction.

Why a NumPy implementation: `cv2.calibrateHandEye` is missing from the Python bindings of opencv-python
5.0.0.93 (opencv/opencv#29565, fixed by #29584 in a later release). Where the binding exists, OpenCV's five
methods run too, as cross-checks (`--method` may pick one), and their spreads are reported: a large disagreement
between methods says the poses are poorly conditioned better than any one figure.

The camera frame is OpenCV's optical frame (x right, y down, z forward), the frame solvePnP works in; note
that MuJoCo cameras look along -z with y up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from calibration.board_detect import Detection

F64 = npt.NDArray[np.float64]
# cv2.calibrateHandEye methods, usable only where the binding exists (see the module docstring).
OPENCV_METHODS = {
    "opencv-park": "CALIB_HAND_EYE_PARK",
    "opencv-tsai": "CALIB_HAND_EYE_TSAI",
    "opencv-horaud": "CALIB_HAND_EYE_HORAUD",
    "opencv-andreff": "CALIB_HAND_EYE_ANDREFF",
    "opencv-daniilidis": "CALIB_HAND_EYE_DANIILIDIS",
}
METHODS = ("park", *OPENCV_METHODS)
METHOD_NAMES = {"park": "Park-Martin, NumPy", "opencv-park": "Park-Martin, OpenCV", "opencv-tsai": "Tsai-Lenz, OpenCV",
                "opencv-horaud": "Horaud-Dornaika, OpenCV", "opencv-andreff": "Andreff, OpenCV",
                "opencv-daniilidis": "Daniilidis, OpenCV"}


def available_methods() -> tuple[str, ...]:
    """"park" always; OpenCV's methods where this OpenCV build exposes cv2.calibrateHandEye."""
    return METHODS if hasattr(cv2, "calibrateHandEye") else ("park",)


class HandEyeError(ValueError):
    """The poses file or the views cannot give a hand-eye calibration; the message names the image or field."""


@dataclass(frozen=True)
class HandEyeOptions:
    method: str = "park"  # a METHODS key, or "best": the one with the smallest board-pose spread
    min_views: int = 8
    # Refusal limits on the board-in-base spread (RMS). A few mm is what joint zeroing and the MJCF's link
    # lengths are good for over a wrist-camera working volume; well beyond it something is inconsistent (the
    # board moved, poses recorded for other images, the wrong --frame), and X would carry that error.
    max_residual_mm: float = 5.0
    max_residual_deg: float = 1.0
    max_view_error_px: float = 2.0  # a view whose board pose reprojects worse than this is dropped
    # The gripper must rotate this much between some views, about at least two different axes: with rotation
    # about one axis only, the translation of X along that axis is unobservable.
    min_rotation_deg: float = 15.0
    min_axis_spread: float = 0.2


@dataclass(frozen=True)
class PoseEntry:
    """One view's arm state: joint angles (rad, in `joint_names` order) or the link pose (4x4, metres)."""

    joints: F64 | None = None
    joints_by_name: dict[str, float] | None = None
    link_pose: F64 | None = None

    def joint_vector(self, joint_names: Sequence[str], where: str) -> F64:
        if self.joints_by_name is not None:
            missing = [n for n in joint_names if n not in self.joints_by_name]
            if missing:
                raise HandEyeError(f"{where}.joints: missing {missing}")
            return np.array([self.joints_by_name[n] for n in joint_names], dtype=np.float64)
        assert self.joints is not None
        if len(self.joints) != len(joint_names):
            raise HandEyeError(f"{where}.joints: {len(self.joints)} values, expected {len(joint_names)} "
                               f"({list(joint_names)})")
        return self.joints


@dataclass(frozen=True)
class PosesFile:
    joint_names: tuple[str, ...] | None
    views: dict[str, PoseEntry]  # by image file name


@dataclass(frozen=True)
class BoardView:
    image: str
    cam_board: F64  # board pose in the camera, 4x4
    error_px: float  # RMS reprojection error of that pose


@dataclass(frozen=True)
class Spread:
    """Consistency of the implied board-in-base poses: RMS and per view, position mm and orientation deg."""

    rms_mm: float
    rms_deg: float
    per_view: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class HandEyeResult:
    method: str
    link_cam: F64  # camera pose in the link, 4x4 (OpenCV optical frame)
    spread: Spread
    by_method: dict[str, Spread]
    max_rotation_deg: float
    axis_spread: float
    dropped: dict[str, str]  # views left out, with the reason
    views: int

    def problems(self, options: HandEyeOptions) -> list[str]:
        out = []
        s = self.spread
        if not (s.rms_mm <= options.max_residual_mm and s.rms_deg <= options.max_residual_deg):
            worst = sorted(s.per_view.items(), key=lambda kv: -kv[1][0])[:3]
            out.append(f"the implied board pose varies by {s.rms_mm:.2f} mm / {s.rms_deg:.3f} deg RMS across views, "
                       f"above the limits {options.max_residual_mm:g} mm / {options.max_residual_deg:g} deg; worst "
                       f"views: " + ", ".join(f"{n} {mm:.1f} mm {deg:.2f} deg" for n, (mm, deg) in worst)
                       + " (board moved? joint angles not matching the images? wrong --frame? checkerboard seen "
                         "upside down in some views?)")
        return out

    def method_text(self) -> str:
        return (f"hand-eye eye-in-hand ({METHOD_NAMES[self.method]}), {self.views} views, board-in-base spread "
                f"{self.spread.rms_mm:.2f} mm / {self.spread.rms_deg:.3f} deg RMS, camera frame OpenCV optical "
                f"(x right, y down, z forward)")


# ---- poses file -------------------------------------------------------------------------------------------------


def load_poses(path: Path) -> PosesFile:
    """Read the poses file (JSON):

        {"joint_names": ["left_joint1", ..., "left_joint6"],        # optional: default the frame's arm joints
         "views": {"view_000.png": {"joints": [0.1, 1.2, ...]},      # rad, robot units (after zero offsets)
                   "view_001.png": {"joints": {"left_joint1": 0.1, ...}},   # or by name
                   "view_002.png": {"link_pose": [[...], [...], [...], [0, 0, 0, 1]]}}}   # link in base, metres
    """
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise HandEyeError(f"{path}: no poses file") from None
    except json.JSONDecodeError as exc:
        raise HandEyeError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("views"), Mapping) or not raw["views"]:
        raise HandEyeError(f"{path}: expected an object with a non-empty \"views\" object (image name -> pose)")
    names_raw = raw.get("joint_names")
    joint_names = None
    if names_raw is not None:
        if not isinstance(names_raw, list) or not all(isinstance(n, str) for n in names_raw) or not names_raw:
            raise HandEyeError(f"{path}: joint_names must be a list of joint names, got {names_raw!r}")
        joint_names = tuple(names_raw)
    views = {str(image): _entry(body, f"{path}: views.{image}", joint_names) for image, body in raw["views"].items()}
    return PosesFile(joint_names, views)


def _entry(body: Any, where: str, joint_names: tuple[str, ...] | None) -> PoseEntry:
    if not isinstance(body, Mapping) or ("joints" in body) == ("link_pose" in body):
        raise HandEyeError(f"{where}: expected an object with either \"joints\" or \"link_pose\"")
    if "link_pose" in body:
        pose = _numbers(body["link_pose"], f"{where}.link_pose")
        if pose.shape != (4, 4):
            raise HandEyeError(f"{where}.link_pose: expected 4x4, got shape {pose.shape}")
        rotation = pose[:3, :3]
        if not (np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5) and np.linalg.det(rotation) > 0
                and np.allclose(pose[3], [0, 0, 0, 1])):
            raise HandEyeError(f"{where}.link_pose: not a rigid transform (orthonormal rotation, last row 0 0 0 1)")
        return PoseEntry(link_pose=pose)
    joints = body["joints"]
    if isinstance(joints, Mapping):
        by_name = {str(k): _numbers(v, f"{where}.joints.{k}") for k, v in joints.items()}
        bad = [k for k, v in by_name.items() if v.ndim != 0]
        if bad:
            raise HandEyeError(f"{where}.joints: {bad} must be single angles (rad)")
        return PoseEntry(joints_by_name={k: float(v) for k, v in by_name.items()})
    values = _numbers(joints, f"{where}.joints")
    if values.ndim != 1:
        raise HandEyeError(f"{where}.joints: expected a list of joint angles (rad)")
    if joint_names is not None and len(values) != len(joint_names):
        raise HandEyeError(f"{where}.joints: {len(values)} values for {len(joint_names)} joint_names")
    return PoseEntry(joints=values)


def _numbers(value: Any, where: str) -> F64:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise HandEyeError(f"{where}: expected numbers, got {value!r}") from None
    if not np.all(np.isfinite(array)):
        raise HandEyeError(f"{where}: values must be finite")
    return array


def match_views(poses: PosesFile, images: Sequence[str]) -> None:
    """Every image needs a pose and every pose an image: a mismatch means the files are mixed up."""
    no_pose = [i for i in images if i not in poses.views]
    no_image = [i for i in poses.views if i not in images]
    if no_pose or no_image:
        parts = []
        if no_pose:
            parts.append(f"images without a pose: {no_pose}")
        if no_image:
            parts.append(f"poses without an image: {no_image}")
        raise HandEyeError("the images and the poses file do not match: " + "; ".join(parts))


def link_poses(poses: PosesFile, images: Sequence[str], frame: str, joint_names: Sequence[str],
               model_path: Path | None = None) -> dict[str, F64]:
    """Each image's `frame` pose in the model's world frame: FK of the joints through the same MJCF the sim runs
    (replay.view.kinematics), or the link pose as given."""
    need_fk = any(poses.views[i].link_pose is None for i in images)
    kinematics: Any = None
    index = -1
    if need_fk:
        from replay.view.kinematics import DEFAULT_MODEL, KinematicsError, RobotKinematics

        if not joint_names:
            raise HandEyeError(f"joint angles need joint names: --frame {frame!r} belongs to no arm of the robot "
                               f"config, so give \"joint_names\" in the poses file")

        try:
            kinematics = RobotKinematics(joint_names, model_path or DEFAULT_MODEL)
        except KinematicsError as exc:
            raise HandEyeError(f"forward kinematics: {exc}") from None
        if kinematics.note:
            raise HandEyeError(f"forward kinematics: {kinematics.note}")
        if frame not in kinematics.bodies:
            raise HandEyeError(f"--frame {frame!r} is not a body of the robot model (e.g. {kinematics.bodies[:8]})")
        index = kinematics.bodies.index(frame)
    out: dict[str, F64] = {}
    for image in images:
        entry = poses.views[image]
        if entry.link_pose is not None:
            out[image] = entry.link_pose
            continue
        pos, quat = kinematics.body_poses(entry.joint_vector(joint_names, f"views.{image}"))
        out[image] = pose_matrix(pos[index], quat[index])
    return out


def pose_matrix(position: F64, quat_xyzw: F64) -> F64:
    x, y, z, w = (float(v) for v in quat_xyzw / np.linalg.norm(quat_xyzw))
    pose = np.eye(4)
    pose[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    pose[:3, 3] = position
    return pose


# ---- board poses ------------------------------------------------------------------------------------------------


def board_pose(detection: Detection, camera_matrix: F64, distortion: F64) -> BoardView:
    """The board's pose in the camera: IPPE (the planar solver, unique up to its two-fold ambiguity, of which
    it returns the better) then Levenberg-Marquardt refinement on all corners."""
    ok, rvec, tvec = cv2.solvePnP(detection.object_points, detection.image_points, camera_matrix, distortion,
                                  flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise HandEyeError(f"{detection.image}: solvePnP found no board pose")
    rvec, tvec = cv2.solvePnPRefineLM(detection.object_points, detection.image_points, camera_matrix, distortion,
                                      rvec, tvec)
    projected, _ = cv2.projectPoints(detection.object_points, rvec, tvec, camera_matrix, distortion)
    error = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - detection.image_points.reshape(-1, 2)) ** 2,
                                         axis=1))))
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(rvec)[0]
    pose[:3, 3] = np.asarray(tvec, dtype=np.float64).reshape(3)
    return BoardView(detection.image, pose, error)


# ---- solving ----------------------------------------------------------------------------------------------------


def rotation_angle_deg(rotation: F64) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def rotation_diversity(base_links: Sequence[F64]) -> tuple[float, float]:
    """(largest rotation between any two views in deg, spread of the rotation axes 0..1): the second singular
    value over the first of the stacked unit axes of all view-to-view motions of more than 2 degrees (0 when
    every motion turns about one axis)."""
    axes: list[F64] = []
    largest = 0.0
    for i in range(len(base_links)):
        for j in range(i + 1, len(base_links)):
            motion = base_links[i][:3, :3].T @ base_links[j][:3, :3]
            angle = rotation_angle_deg(motion)
            largest = max(largest, angle)
            if angle > 2.0:
                rvec = cv2.Rodrigues(motion)[0].reshape(3)
                axis = rvec / np.linalg.norm(rvec)
                axes.append(axis if axis[np.argmax(np.abs(axis))] > 0 else -axis)
    if len(axes) < 2:
        return largest, 0.0
    singular = np.linalg.svd(np.asarray(axes), compute_uv=False)
    return largest, float(singular[1] / singular[0])


def solve(base_links: Sequence[F64], cam_boards: Sequence[F64], method: str = "park") -> F64:
    """The camera pose in the link (4x4) from link-in-base and board-in-camera poses of the same views."""
    if method == "park":
        return park_martin(base_links, cam_boards)
    if method not in OPENCV_METHODS:
        raise HandEyeError(f"unknown hand-eye method {method!r}; known {list(METHODS)}")
    if not hasattr(cv2, "calibrateHandEye"):
        raise HandEyeError(f"method {method!r} needs cv2.calibrateHandEye, which this OpenCV build "
                           f"({cv2.__version__}) does not expose (opencv/opencv#29565); use --method park")
    try:
        rotation, translation = cv2.calibrateHandEye(
            [t[:3, :3] for t in base_links], [t[:3, 3] for t in base_links],
            [t[:3, :3] for t in cam_boards], [t[:3, 3] for t in cam_boards],
            method=getattr(cv2, OPENCV_METHODS[method]))
    except cv2.error as exc:  # e.g. inconsistent poses: "determinant(R) is null" in its rotation step
        message = str(exc).strip().splitlines()[-1]
        raise HandEyeError(f"hand-eye method {method!r} found no solution for these views: {message}") from None
    pose = np.eye(4)
    pose[:3, :3] = _orthonormal(np.asarray(rotation, dtype=np.float64))
    pose[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return pose


def park_martin(base_links: Sequence[F64], cam_boards: Sequence[F64]) -> F64:
    """Park & Martin over all view pairs (i, j): A = G_i^-1 G_j (link motion), B = C_i C_j^-1 (camera motion),
    A X = X B. Rotation: Procrustes fit of log(R_A) = R_X log(R_B); translation: least squares of
    (R_A - I) t_X = R_X t_B - t_A."""
    n = len(base_links)
    if n < 3 or len(cam_boards) != n:
        raise HandEyeError(f"hand-eye needs at least 3 views with both poses, got {n} and {len(cam_boards)}")
    motions = []
    for i in range(n):
        for j in range(i + 1, n):
            a = np.linalg.inv(base_links[i]) @ base_links[j]
            b = cam_boards[i] @ np.linalg.inv(cam_boards[j])
            motions.append((a, b))
    alphas = np.array([cv2.Rodrigues(a[:3, :3])[0].reshape(3) for a, _ in motions])
    betas = np.array([cv2.Rodrigues(b[:3, :3])[0].reshape(3) for _, b in motions])
    u, _, vt = np.linalg.svd(alphas.T @ betas)  # sum of alpha beta^T
    rotation = u @ np.diag([1.0, 1.0, float(np.sign(np.linalg.det(u @ vt)))]) @ vt
    lhs = np.concatenate([a[:3, :3] - np.eye(3) for a, _ in motions])
    rhs = np.concatenate([rotation @ b[:3, 3] - a[:3, 3] for a, b in motions])
    translation = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = translation
    return pose


def _orthonormal(rotation: F64) -> F64:
    u, _, vt = np.linalg.svd(rotation)
    fixed = u @ vt
    if np.linalg.det(fixed) < 0:
        u[:, -1] *= -1
        fixed = u @ vt
    return np.asarray(fixed, dtype=np.float64)


def board_spread(images: Sequence[str], base_links: Sequence[F64], link_cam: F64,
                 cam_boards: Sequence[F64]) -> Spread:
    """How far each view's implied board-in-base pose lies from their mean (chordal mean for the rotation)."""
    implied = [b @ link_cam @ c for b, c in zip(base_links, cam_boards, strict=True)]
    positions = np.array([t[:3, 3] for t in implied])
    centre = positions.mean(axis=0)
    mean_rotation = _orthonormal(np.sum([t[:3, :3] for t in implied], axis=0))
    mm = np.linalg.norm(positions - centre, axis=1) * 1000.0
    deg = np.array([rotation_angle_deg(mean_rotation.T @ t[:3, :3]) for t in implied])
    return Spread(float(np.sqrt(np.mean(mm ** 2))), float(np.sqrt(np.mean(deg ** 2))),
                  {image: (float(a), float(b)) for image, a, b in zip(images, mm, deg, strict=True)})


def calibrate_hand_eye(board_views: Sequence[BoardView], base_links: Mapping[str, F64],
                       options: HandEyeOptions) -> HandEyeResult:
    """Drop views whose board pose is poor, check the motions can determine X, solve with every method, and pick
    `options.method` (or the most consistent one for "best")."""
    methods = available_methods()
    if options.method != "best" and options.method not in methods:
        raise HandEyeError(f"hand-eye method must be one of {[*methods, 'best']} with this OpenCV build "
                           f"({cv2.__version__}), got {options.method!r}")
    dropped = {v.image: f"board pose reprojects with {v.error_px:.2f} px RMS (> {options.max_view_error_px:g})"
               for v in board_views if v.error_px > options.max_view_error_px}
    kept = [v for v in board_views if v.image not in dropped]
    if len(kept) < options.min_views:
        detail = "".join(f"\n  dropped {name}: {why}" for name, why in dropped.items())
        raise HandEyeError(f"only {len(kept)} usable views, need at least {options.min_views}{detail}")
    images = [v.image for v in kept]
    links = [base_links[i] for i in images]
    boards = [v.cam_board for v in kept]
    largest, axis_spread = rotation_diversity(links)
    if largest < options.min_rotation_deg or axis_spread < options.min_axis_spread:
        raise HandEyeError(f"the link rotates at most {largest:.1f} deg between views (need >= "
                           f"{options.min_rotation_deg:g}) with rotation-axis spread {axis_spread:.2f} (need >= "
                           f"{options.min_axis_spread:g}); tilt and turn the wrist about different axes between "
                           f"shots, or X is not determined")
    solutions: dict[str, F64] = {}
    unsolved: dict[str, str] = {}
    for name in methods:  # a method that cannot solve these views is reported, and the others still compared
        try:
            solutions[name] = solve(links, boards, name)
        except HandEyeError as exc:
            unsolved[name] = str(exc)
    method = options.method
    if method in unsolved or not solutions:
        raise HandEyeError("; ".join(unsolved.values()) + " (are the poses those of the images, in order?)")
    by_method = {name: board_spread(images, links, x, boards) for name, x in solutions.items()}
    if method == "best":
        method = min(by_method, key=lambda n: by_method[n].rms_mm / options.max_residual_mm
                     + by_method[n].rms_deg / options.max_residual_deg)
    return HandEyeResult(method, solutions[method], by_method[method], by_method, largest, axis_spread, dropped,
                         len(kept))


def format_report(result: HandEyeResult) -> str:
    x = result.link_cam
    rvec = cv2.Rodrigues(x[:3, :3])[0].reshape(3)
    lines = [
        f"{result.views} views; link rotates up to {result.max_rotation_deg:.1f} deg, axis spread "
        f"{result.axis_spread:.2f}",
        f"camera in link ({METHOD_NAMES[result.method]}): translation [{x[0, 3] * 1000:.1f}, {x[1, 3] * 1000:.1f}, "
        f"{x[2, 3] * 1000:.1f}] mm, rotation vector [{rvec[0]:.4f}, {rvec[1]:.4f}, {rvec[2]:.4f}] rad",
        f"board-in-base spread {result.spread.rms_mm:.2f} mm / {result.spread.rms_deg:.3f} deg RMS",
        "per view (mm, deg): " + ", ".join(f"{n} {mm:.1f} {deg:.2f}"
                                           for n, (mm, deg) in result.spread.per_view.items()),
        "all methods (mm / deg RMS): " + ", ".join(f"{n} {s.rms_mm:.2f} / {s.rms_deg:.3f}"
                                                   for n, s in result.by_method.items()),
    ]
    lines += [f"dropped {name}: {why}" for name, why in result.dropped.items()]
    return "\n".join(lines)
