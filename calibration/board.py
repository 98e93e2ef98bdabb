"""Calibration boards: the `--board` spec, the board's 3D corner positions and a printable image of it.

    checkerboard:COLSxROWS:SQUARE_M                 e.g. checkerboard:10x7:0.025
    charuco:COLSxROWS:SQUARE_M:MARKER_M:DICT        e.g. charuco:7x5:0.03:0.022:DICT_4X4_50

COLSxROWS counts *squares* for both kinds (what one counts on the printed board; OpenCV's checkerboard detector
wants the inner corners, (COLS-1)x(ROWS-1), and this module converts). Sizes are in metres, as measured on the
print (printers scale: measure a square with calipers and give that number, not the one you asked for).

Board frame: origin at the first detected corner's board position, x along the rows, y down the columns, z into
the board (OpenCV's convention). For ChArUco the frame is fixed by the markers (origin at the outer top-left
corner of the board image, y down), which is why hand-eye wants ChArUco: a checkerboard seen upside down is
found with its corners in reverse order, its frame turned 180 degrees, and nothing in the image says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
BoardKind = Literal["checkerboard", "charuco"]


class BoardError(ValueError):
    """The board spec is malformed; the message names the part and what was expected."""


@dataclass(frozen=True)
class BoardSpec:
    kind: BoardKind
    cols: int  # squares along x
    rows: int  # squares along y
    square_m: float
    marker_m: float | None = None  # ChArUco only
    dictionary: str | None = None  # ChArUco only, e.g. "DICT_4X4_50"

    @property
    def inner_corners(self) -> tuple[int, int]:
        """(per row, per column) inner corners: OpenCV's checkerboard `patternSize`."""
        return (self.cols - 1, self.rows - 1)

    @property
    def corner_count(self) -> int:
        return (self.cols - 1) * (self.rows - 1)

    def describe(self) -> str:
        """Human-readable, for the calibration file's method string."""
        head = f"{self.kind} {self.cols}x{self.rows} squares, {self.square_m * 1000:g} mm"
        if self.kind == "charuco" and self.marker_m is not None:
            return f"{head}, markers {self.marker_m * 1000:g} mm {self.dictionary}"
        return head

    def object_points(self) -> F64:
        """Every inner corner's board position [N, 3] (metres), in the order the detector numbers them."""
        if self.kind == "charuco":
            return np.asarray(charuco_board(self).getChessboardCorners(), dtype=np.float64).reshape(-1, 3)
        w, h = self.inner_corners
        grid = np.zeros((w * h, 3), dtype=np.float64)
        grid[:, 0] = np.tile(np.arange(w), h) * self.square_m
        grid[:, 1] = np.repeat(np.arange(h), w) * self.square_m
        return grid


def parse_board(text: str) -> BoardSpec:
    """Parse a `--board` spec (see the module docstring); errors name the part that is wrong."""
    parts = text.strip().split(":")
    kind = parts[0].lower()
    expected = {"checkerboard": "checkerboard:COLSxROWS:SQUARE_M",
                "charuco": "charuco:COLSxROWS:SQUARE_M:MARKER_M:DICT"}
    if kind not in expected:
        raise BoardError(f"board {text!r}: kind must be 'checkerboard' or 'charuco', got {parts[0]!r}")
    want = expected[kind].count(":") + 1
    if len(parts) != want:
        raise BoardError(f"board {text!r}: expected {expected[kind]} ({want} fields), got {len(parts)} fields")
    cols, rows = _size(parts[1], text)
    square = _length(parts[2], "SQUARE_M", text)
    if kind == "checkerboard":
        if cols < 3 or rows < 3:
            raise BoardError(f"board {text!r}: a checkerboard needs at least 3x3 squares, got {cols}x{rows}")
        return BoardSpec("checkerboard", cols, rows, square)
    marker = _length(parts[3], "MARKER_M", text)
    if marker >= square:
        raise BoardError(f"board {text!r}: MARKER_M ({marker}) must be smaller than SQUARE_M ({square})")
    name = parts[4].upper()
    name = name if name.startswith("DICT_") else f"DICT_{name}"
    if not isinstance(getattr(cv2.aruco, name, None), int):
        known = sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_") and "APRILTAG" not in n)[:8]
        raise BoardError(f"board {text!r}: unknown ArUco dictionary {parts[4]!r} (e.g. {', '.join(known)}, ...)")
    spec = BoardSpec("charuco", cols, rows, square, marker, name)
    markers_needed = (cols * rows) // 2
    size = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name)).bytesList.shape[0]
    if markers_needed > size:
        raise BoardError(f"board {text!r}: a {cols}x{rows} ChArUco board needs {markers_needed} markers, "
                         f"{name} has {size}")
    return spec


def _size(text: str, spec: str) -> tuple[int, int]:
    try:
        cols_s, rows_s = text.lower().split("x")
        cols, rows = int(cols_s), int(rows_s)
    except ValueError:
        raise BoardError(f"board {spec!r}: COLSxROWS must be two integers like 10x7, got {text!r}") from None
    if cols < 2 or rows < 2:
        raise BoardError(f"board {spec!r}: COLSxROWS must be at least 2x2 squares, got {text!r}")
    return cols, rows


def _length(text: str, field: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BoardError(f"board {spec!r}: {field} must be a length in metres, got {text!r}") from None
    if not 0.001 <= value <= 1.0:
        raise BoardError(f"board {spec!r}: {field} must be in metres (0.001 .. 1), got {value} "
                         f"(millimetres given by mistake?)")
    return value


def charuco_board(spec: BoardSpec) -> Any:
    """The cv2.aruco.CharucoBoard of a ChArUco spec."""
    if spec.kind != "charuco" or spec.marker_m is None or spec.dictionary is None:
        raise BoardError(f"{spec.describe()}: not a ChArUco board")
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
    return cv2.aruco.CharucoBoard((spec.cols, spec.rows), spec.square_m, spec.marker_m, dictionary)


def board_image(spec: BoardSpec, px_per_square: int = 120, margin_squares: float = 0.5) -> U8:
    """The board as a grey image (white margin of `margin_squares` squares all round), to print or to render.

    With pixel centres at integer coordinates, pixel u shows board x = (u + 0.5) * square_m / px_per_square -
    margin_squares * square_m (y likewise): board (0, 0) is the outer top-left corner of the squares, the frame
    ChArUco's corner positions use. (A checkerboard's detected frame starts at an inner corner instead, and may
    be turned a half-turn; the white margin is the quiet zone the detector needs around the squares.)"""
    margin = int(round(margin_squares * px_per_square))
    width, height = spec.cols * px_per_square + 2 * margin, spec.rows * px_per_square + 2 * margin
    if spec.kind == "charuco":
        return np.asarray(charuco_board(spec).generateImage((width, height), marginSize=margin, borderBits=1),
                          dtype=np.uint8)
    image = np.full((height, width), 255, dtype=np.uint8)
    for row in range(spec.rows):
        for col in range(spec.cols):
            if (row + col) % 2 == 0:
                y0, x0 = margin + row * px_per_square, margin + col * px_per_square
                image[y0:y0 + px_per_square, x0:x0 + px_per_square] = 0
    return image
