"""Find a calibration board in one image: sub-pixel corner positions matched to their board positions.

Checkerboard: `findChessboardCornersSB` (the sector-based detector; with CALIB_CB_ACCURACY it localises
corners to a few hundredths of a pixel, better than findChessboardCorners + cornerSubPix, and copes with
blur and uneven light). The whole board must be in view. ChArUco: `CharucoDetector.detectBoard` (markers
first, then the chessboard corners between them, refined with cornerSubPix); a partial view is usable, which
is what lets the board reach the image corners where distortion is largest.

Blur: a found board is still refused when its edges are blurred wider than `max_blur_px` (the Gaussian sigma
that would widen a sharp step that much, from the steepest gradients over the board against its contrast). Not
because blur moves the corners (symmetric blur leaves a saddle point where it was) but because of what it
means: defocus says the lens is focused elsewhere than where it will be used, and focus changes the focal length;
motion blur says the board or the camera moved during the exposure, which with a rolling shutter bends the
board. A sharp image measures about 0.9 px here (pixel integration and the Sobel kernel).

A rejected image comes back as a reason (a string), not an exception: the caller names every rejected image
and decides whether enough views are left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration.board import BoardSpec, charuco_board

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Fewer ChArUco corners than this in one view constrain its pose poorly (4 is the bare PnP minimum).
MIN_CHARUCO_CORNERS = 8
# Variance of the Laplacian below which an image is called blurred in a rejection reason (a hint, not a test:
# the figure depends on the scene; a sharp board at calibration distance scores in the hundreds).
BLUR_HINT = 30.0
MAX_BLUR_PX = 2.5


@dataclass(frozen=True, eq=False)
class Detection:
    """One usable view: image points [N, 1, 2] and their board positions [N, 1, 3], both float32 for cv2."""

    image: str
    image_points: F32
    object_points: F32
    ids: npt.NDArray[np.int32]  # corner index on the board (for ChArUco the board's corner id)
    blur_px: float = 0.0  # edge width as a Gaussian sigma (see the module docstring)

    @property
    def count(self) -> int:
        return int(self.image_points.shape[0])


def list_images(directory: Path) -> list[Path]:
    """Image files of `directory`, sorted by name (the order views are reported in)."""
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_gray(path: Path) -> U8:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"{path}: not a readable image")
    return np.asarray(image, dtype=np.uint8)


def sharpness(gray: U8) -> float:
    """Variance of the Laplacian: low for a blurred image (used only to explain a failed detection)."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def detect_board(spec: BoardSpec, gray: U8, name: str, max_blur_px: float = MAX_BLUR_PX) -> Detection | str:
    """The board's corners in `gray`, or the reason the image is unusable."""
    found = _detect_checkerboard(spec, gray, name) if spec.kind == "checkerboard" else _detect_charuco(spec, gray, name)
    if isinstance(found, str):
        score = sharpness(gray)
        if score < BLUR_HINT:
            found += f" (the image looks blurred: Laplacian variance {score:.1f} < {BLUR_HINT:g})"
        return found
    blur = edge_blur_px(gray, found.image_points)
    if blur > max_blur_px:
        return (f"blurred: the board's edges are as wide as a Gaussian blur of {blur:.1f} px (limit {max_blur_px:g}); "
                f"refocus for the working distance or hold the board and camera still")
    return replace(found, blur_px=blur)


def edge_blur_px(gray: U8, image_points: F32) -> float:
    """Blur of the board region as a Gaussian sigma in px: a step of contrast C blurred by sigma has a steepest
    gradient of C / (sigma sqrt(2 pi)). C from the 2nd..98th intensity percentiles inside the hull of the corners,
    the steepest gradient from the 99th percentile of the Sobel gradient there."""
    hull = cv2.convexHull(image_points.reshape(-1, 2)).astype(np.int32)
    mask = np.zeros(gray.shape, dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    inside = mask > 0
    if inside.sum() < 50:
        return 0.0
    image = gray.astype(np.float32)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    steepest = float(np.percentile(np.hypot(gx, gy)[inside], 99))
    values = image[inside]
    contrast = float(np.percentile(values, 98) - np.percentile(values, 2))
    if steepest <= 0:
        return float("inf")
    return contrast / (math.sqrt(2 * math.pi) * steepest)


def _detect_checkerboard(spec: BoardSpec, gray: U8, name: str) -> Detection | str:
    flags = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
    ok, corners = cv2.findChessboardCornersSB(gray, spec.inner_corners, flags=flags)
    if not ok or corners is None:
        w, h = spec.inner_corners
        return f"checkerboard with {w}x{h} inner corners not found (is the whole board in view?)"
    points = np.asarray(corners, dtype=np.float32).reshape(-1, 1, 2)
    objects = spec.object_points().astype(np.float32).reshape(-1, 1, 3)
    return Detection(name, points, objects, np.arange(points.shape[0], dtype=np.int32))


def _detect_charuco(spec: BoardSpec, gray: U8, name: str) -> Detection | str:
    board = charuco_board(spec)
    corners, ids, _, marker_ids = cv2.aruco.CharucoDetector(board).detectBoard(gray)
    markers = 0 if marker_ids is None else len(marker_ids)
    count = 0 if ids is None else len(ids)
    if count < MIN_CHARUCO_CORNERS:
        return (f"only {count} ChArUco corners found ({markers} markers), need at least {MIN_CHARUCO_CORNERS} "
                f"(wrong board or dictionary, or the board mostly out of view?)")
    objects, points = board.matchImagePoints(corners, ids)
    objects = np.asarray(objects, dtype=np.float32).reshape(-1, 1, 3)
    if _collinear(objects):
        return f"the {count} ChArUco corners found lie on one line (a pose needs a 2D spread)"
    return Detection(name, np.asarray(points, dtype=np.float32).reshape(-1, 1, 2), objects,
                     np.asarray(ids, dtype=np.int32).reshape(-1))


def _collinear(objects: F32) -> bool:
    xy = objects.reshape(-1, 3)[:, :2].astype(np.float64)
    centred = xy - xy.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    return bool(singular[1] < 1e-6 * max(float(singular[0]), 1e-12) or singular[1] < 1e-4)
