"""Camera intrinsics from board images: detect the board in every image, then `cv2.calibrateCamera`.

Why refuse rather than warn: a policy sees the world through these numbers (any rectification, any 3D overlay,
the wrist camera's hand-eye), and a calibration with a large reprojection error or from a handful of views
looks plausible but is wrong in the image corners. So the procedure calibrates, reports everything (RMS, each
view's error, the rejected images and why), and the caller writes the result only when `problems()` is empty.

Distortion model: OpenCV's (k1, k2, p1, p2, k3) by default; 4 coefficients (k3 fixed at 0) for narrow lenses
and few views, where k3 only fits noise; 8 (rational model) for wide lenses. Fisheye lenses (> ~120 degrees)
need cv2.fisheye, which is not covered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration.board import BoardSpec
from calibration.board_detect import MAX_BLUR_PX, Detection, detect_board, read_gray
from robot_client.calfile import CameraCalibration, Measured, now_iso

F64 = npt.NDArray[np.float64]
DISTORTION_MODELS = {4: cv2.CALIB_FIX_K3, 5: 0, 8: cv2.CALIB_RATIONAL_MODEL}
# Image split into this grid of cells for the coverage figure (a cell counts when a corner falls in it).
COVERAGE_GRID = (8, 6)


class IntrinsicsError(ValueError):
    """The image set cannot be calibrated at all (unreadable, mixed sizes, too few usable views)."""


@dataclass(frozen=True)
class IntrinsicsOptions:
    min_views: int = 10
    max_error_px: float = 1.0
    distortion_coefficients: int = 5  # 4, 5 or 8 (see the module docstring)
    max_blur_px: float = MAX_BLUR_PX  # views blurred more than this are rejected (calibration.board_detect)
    # Coverage and tilt below these only warn: they say where the next views should go.
    min_coverage: float = 0.6
    min_tilt_deg: float = 15.0


@dataclass(frozen=True)
class ViewSet:
    """The detections of one image set, with every rejected image and its reason."""

    detections: tuple[Detection, ...]
    rejected: dict[str, str]
    width: int
    height: int


@dataclass(frozen=True)
class IntrinsicsResult:
    width: int
    height: int
    camera_matrix: F64
    distortion: F64
    rms_px: float
    per_view_px: dict[str, float]
    rejected: dict[str, str]
    coverage: float  # fraction of COVERAGE_GRID cells holding a detected corner
    max_tilt_deg: float  # largest angle between the board normal and the optical axis over the views
    board: str
    views: int

    def problems(self, options: IntrinsicsOptions) -> list[str]:
        """Reasons to refuse this calibration (empty: good to write)."""
        out = []
        if not np.isfinite(self.rms_px) or self.rms_px > options.max_error_px:
            worst = sorted(self.per_view_px.items(), key=lambda kv: -kv[1])[:3]
            out.append(f"RMS reprojection error {self.rms_px:.3f} px exceeds --max-error-px "
                       f"{options.max_error_px:g}; worst views: "
                       + ", ".join(f"{name} {err:.2f} px" for name, err in worst)
                       + " (drop blurred or moved shots and rerun)")
        fx, fy = self.camera_matrix[0, 0], self.camera_matrix[1, 1]
        cx, cy = self.camera_matrix[0, 2], self.camera_matrix[1, 2]
        if not (fx > 0 and fy > 0 and 0 < cx < self.width and 0 < cy < self.height):
            out.append(f"implausible camera matrix: fx {fx:.1f}, fy {fy:.1f}, principal point ({cx:.1f}, {cy:.1f}) "
                       f"outside the {self.width}x{self.height} image")
        return out

    def warnings(self, options: IntrinsicsOptions) -> list[str]:
        out = []
        if self.coverage < options.min_coverage:
            out.append(f"board corners cover only {self.coverage:.0%} of the image (want >= "
                       f"{options.min_coverage:.0%}); add views with the board near the edges and corners, where "
                       f"distortion is largest")
        if self.max_tilt_deg < options.min_tilt_deg:
            out.append(f"the board is never tilted more than {self.max_tilt_deg:.1f} deg to the camera (want >= "
                       f"{options.min_tilt_deg:g}); views facing the camera squarely leave the focal length "
                       f"poorly determined")
        return out

    def calibration(self, measured_at: str | None = None) -> CameraCalibration:
        method = (f"{self.board}, {self.views} views, cv2.calibrateCamera with {len(self.distortion)} distortion "
                  f"coefficients, corners covering {self.coverage:.0%} of the image")
        return CameraCalibration(self.width, self.height, self.camera_matrix, self.distortion, self.rms_px,
                                 Measured(measured_at or now_iso(), method))


def image_size(paths: Sequence[Path]) -> tuple[int, int]:
    """(width, height) shared by all images. A stray image of another size is an error naming it, not a rejected
    view: it means the set is mixed up (two cameras, or two modes of one)."""
    if not paths:
        raise IntrinsicsError("no images given")
    size: tuple[int, int] | None = None
    first = ""
    for path in paths:
        gray = read_gray(path)
        here = (gray.shape[1], gray.shape[0])
        if size is None:
            size, first = here, path.name
        elif here != size:
            raise IntrinsicsError(f"{path.name}: image is {here[0]}x{here[1]}, but {first} is {size[0]}x{size[1]}; "
                                  f"all images must come from one camera mode")
    assert size is not None
    return size


def detect_views(paths: Sequence[Path], spec: BoardSpec, max_blur_px: float = MAX_BLUR_PX) -> ViewSet:
    """Detect the board in every image (all of one size, see `image_size`)."""
    width, height = image_size(paths)
    detections: list[Detection] = []
    rejected: dict[str, str] = {}
    for path in paths:
        found = detect_board(spec, read_gray(path), path.name, max_blur_px)
        if isinstance(found, str):
            rejected[path.name] = found
        else:
            detections.append(found)
    return ViewSet(tuple(detections), rejected, width, height)


def check_view_count(views: ViewSet, minimum: int) -> None:
    if len(views.detections) >= minimum:
        return
    lines = [f"only {len(views.detections)} usable views of {len(views.detections) + len(views.rejected)} images, "
             f"need at least {minimum} (different distances, tilts and image positions)"]
    lines += [f"  rejected {name}: {reason}" for name, reason in views.rejected.items()]
    raise IntrinsicsError("\n".join(lines))


def calibrate_intrinsics(views: ViewSet, spec: BoardSpec, options: IntrinsicsOptions) -> IntrinsicsResult:
    """cv2.calibrateCamera over the usable views (at least `options.min_views`, else IntrinsicsError)."""
    if options.distortion_coefficients not in DISTORTION_MODELS:
        raise IntrinsicsError(f"distortion coefficients must be one of {sorted(DISTORTION_MODELS)}, "
                              f"got {options.distortion_coefficients}")
    check_view_count(views, options.min_views)
    size = (views.width, views.height)
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    flags = DISTORTION_MODELS[options.distortion_coefficients]
    rms, matrix, distortion, rvecs, _, _, _, per_view = cv2.calibrateCameraExtended(
        [d.object_points for d in views.detections], [d.image_points for d in views.detections], size,
        np.eye(3), np.zeros(options.distortion_coefficients), flags=flags, criteria=criteria)
    distortion = np.asarray(distortion, dtype=np.float64).reshape(-1)[:options.distortion_coefficients]
    tilts = [_tilt_deg(np.asarray(r, dtype=np.float64)) for r in rvecs]
    return IntrinsicsResult(
        width=views.width, height=views.height,
        camera_matrix=np.asarray(matrix, dtype=np.float64), distortion=distortion, rms_px=float(rms),
        per_view_px={d.image: float(e) for d, e in zip(views.detections, np.asarray(per_view).reshape(-1),
                                                        strict=True)},
        rejected=dict(views.rejected), coverage=coverage(views), max_tilt_deg=max(tilts),
        board=spec.describe(), views=len(views.detections))


def _tilt_deg(rvec: F64) -> float:
    rotation, _ = cv2.Rodrigues(rvec)
    return float(np.degrees(np.arccos(np.clip(abs(rotation[2, 2]), 0.0, 1.0))))


def coverage(views: ViewSet) -> float:
    cols, rows = COVERAGE_GRID
    hit = np.zeros((rows, cols), dtype=bool)
    for d in views.detections:
        pts = d.image_points.reshape(-1, 2)
        c = np.clip((pts[:, 0] / views.width * cols).astype(int), 0, cols - 1)
        r = np.clip((pts[:, 1] / views.height * rows).astype(int), 0, rows - 1)
        hit[r, c] = True
    return float(hit.mean())


def format_report(result: IntrinsicsResult) -> str:
    k = result.camera_matrix
    lines = [
        f"{result.views} views of {result.board} at {result.width}x{result.height}",
        f"fx {k[0, 0]:.2f}  fy {k[1, 1]:.2f}  cx {k[0, 2]:.2f}  cy {k[1, 2]:.2f}  (px)",
        "distortion " + " ".join(f"{c:+.5f}" for c in result.distortion),
        f"RMS reprojection error {result.rms_px:.3f} px; coverage {result.coverage:.0%}; "
        f"largest board tilt {result.max_tilt_deg:.1f} deg",
        "per view (RMS px): " + ", ".join(f"{n} {e:.3f}" for n, e in result.per_view_px.items()),
    ]
    lines += [f"rejected {name}: {reason}" for name, reason in result.rejected.items()]
    return "\n".join(lines)
