"""Zero offsets from motor readings taken at the zero pose: statistics, plausibility, and the `--check` report.

Pure functions (no bus, no files), so the rules are testable on their own and the same for every arm.

At the documented zero pose every joint is at 0 rad (joints 2 and 3 rest on their lower mechanical stops), so
the averaged motor reading of each joint *is* its zero offset: joint angle = motor reading - offset. Two rules
protect that assumption:
- steady: the readings of a joint must not spread by more than `max_std` (the arm moved, or was still being
  positioned, while it was read; the average would be meaningless);
- plausible: |offset| must stay below `max_offset`. A YAM's motors are zeroed at the factory, so a large reading
  means the arm is not at the zero pose (a joint off its stop, a wrist turned), not a large offset; writing it
  would make every later joint angle wrong by that much. The error names the joint so the operator knows which
  one to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from robot_client.calfile import CalibrationError

F64 = npt.NDArray[np.float64]


class ZeroPoseError(CalibrationError):
    """The readings cannot be zero offsets (unsteady, or the arm is not at the zero pose); names the joints."""


@dataclass(frozen=True)
class ZeroCriteria:
    max_offset: float = 0.5  # rad: beyond this the joint is not at the zero pose
    max_std: float = 0.002  # rad: standard deviation of one joint's readings (quantization is 3.8e-4 rad)
    check_tolerance: float = 0.02  # rad: --check passes when every corrected reading is within this of 0

    def __post_init__(self) -> None:
        for label in ("max_offset", "max_std", "check_tolerance"):
            value = getattr(self, label)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number, got {value}")


@dataclass(frozen=True)
class JointReading:
    """One joint's motor readings at the reference pose, summarized (motor rad)."""

    joint: str
    mean: float
    std: float
    spread: float  # max - min
    count: int


def summarize(joints: Sequence[str], samples: F64) -> tuple[JointReading, ...]:
    """`samples` is (readings, joints) in motor rad, columns in `joints` order."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(joints) or arr.shape[0] < 2:
        raise ValueError(f"expected at least 2 readings of {len(joints)} joints, got shape {arr.shape}")
    return tuple(JointReading(j, float(arr[:, i].mean()), float(arr[:, i].std()),
                              float(arr[:, i].max() - arr[:, i].min()), arr.shape[0])
                 for i, j in enumerate(joints))


def unsteady(readings: Sequence[JointReading], max_std: float) -> list[str]:
    """Problems (one line per joint) with readings that moved while being taken."""
    return [f"{r.joint}: readings spread {r.std:.4f} rad (std; {r.spread:.4f} max-min over {r.count} readings), more "
            f"than {max_std:g}: the joint moved while it was read; hold the arm still at the zero pose"
            for r in readings if r.std > max_std]


def zero_offsets(readings: Sequence[JointReading], criteria: ZeroCriteria) -> dict[str, float]:
    """The offsets (= mean readings at the zero pose), or ZeroPoseError naming every joint that fails a rule."""
    problems = unsteady(readings, criteria.max_std)
    problems += [f"{r.joint}: reads {r.mean:+.4f} rad at the zero pose, beyond +-{criteria.max_offset:g}: the joint "
                 f"is probably not at 0 (joints 2 and 3 must rest on their lower stops, the others straight); pose "
                 f"it and rerun" for r in readings if abs(r.mean) > criteria.max_offset]
    if problems:
        raise ZeroPoseError("refusing to write zero offsets:\n  " + "\n  ".join(problems))
    return {r.joint: r.mean for r in readings}


@dataclass(frozen=True)
class CheckLine:
    """One joint at the reference pose with the current calibration applied."""

    joint: str
    raw: float  # mean motor reading
    offset: float
    tolerance: float

    @property
    def angle(self) -> float:
        return self.raw - self.offset

    @property
    def ok(self) -> bool:
        return abs(self.angle) <= self.tolerance

    def describe(self) -> str:
        verdict = "ok" if self.ok else f"BEYOND +-{self.tolerance:g}"
        return (f"{self.joint:<16} angle {self.angle:+.4f} rad  (motor {self.raw:+.4f}, offset {self.offset:+.4f})  "
                f"{verdict}")


def check_zero(readings: Sequence[JointReading], offsets: Mapping[str, float], tolerance: float) -> \
        tuple[CheckLine, ...]:
    """Each joint's angle at the zero pose with `offsets` applied; a joint without an offset is an error."""
    missing = [r.joint for r in readings if r.joint not in offsets]
    if missing:
        raise CalibrationError(f"no zero offsets for joints {missing}; run `python -m calibration joints` first")
    return tuple(CheckLine(r.joint, r.mean, float(offsets[r.joint]), tolerance) for r in readings)
