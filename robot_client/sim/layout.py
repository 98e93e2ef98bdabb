"""Where the free objects start: seeded, non-overlapping placements on the table.

Why a separate module: task scripts and tests need the same placements from the same seed (deterministic
resets), and scripted demos need to pass exact poses instead. Both produce a `{name: Pose}` mapping that
`SimWorld.reset` applies, so the physics code never knows how a layout was chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


class LayoutError(ValueError):
    """A layout could not be sampled or names an object the scene does not have."""


@dataclass(frozen=True)
class Pose:
    """A rigid pose in the world frame: position (m) and unit quaternion (w, x, y, z, MuJoCo's order)."""

    position: tuple[float, float, float]
    quaternion: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)

    @classmethod
    def on_table(cls, x: float, y: float, z: float, yaw: float = 0.0) -> Pose:
        """An object resting flat at (x, y) with its centre at height z, turned by `yaw` rad about world z."""
        half = 0.5 * yaw
        return cls((float(x), float(y), float(z)), (math.cos(half), 0.0, 0.0, math.sin(half)))

    def as_arrays(self) -> tuple[F64, F64]:
        return np.asarray(self.position, dtype=np.float64), np.asarray(self.quaternion, dtype=np.float64)


@dataclass(frozen=True)
class ObjectSpawn:
    """Region an object's centre is drawn from (uniform), its resting height and its footprint radius."""

    name: str
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    z: float
    radius: float
    yaw_range: tuple[float, float] = (-math.pi, math.pi)


# The pad sits between the arms; each cube starts on its arm's side of the pad, all within both arms' reach.
DEFAULT_SPAWNS: tuple[ObjectSpawn, ...] = (
    ObjectSpawn("green_pad", (0.32, 0.40), (-0.04, 0.04), 0.004, 0.085, (-0.3, 0.3)),
    ObjectSpawn("red_cube", (0.25, 0.42), (0.10, 0.25), 0.02, 0.029),
    ObjectSpawn("blue_cube", (0.25, 0.42), (-0.25, -0.10), 0.02, 0.029),
)


@dataclass(frozen=True)
class SceneLayout:
    """Seeded placement of the free objects; placements keep `min_gap` metres between footprints."""

    spawns: tuple[ObjectSpawn, ...] = DEFAULT_SPAWNS
    min_gap: float = 0.02
    max_tries: int = 1000

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.spawns)

    def sample(self, seed: int) -> dict[str, Pose]:
        """Poses for every spawn; the same seed always gives the same poses (rejection sampling, fixed order)."""
        rng = np.random.default_rng(seed)
        placed: list[tuple[ObjectSpawn, float, float]] = []
        poses: dict[str, Pose] = {}
        for spawn in self.spawns:
            for _ in range(self.max_tries):
                x = float(rng.uniform(*spawn.x_range))
                y = float(rng.uniform(*spawn.y_range))
                if all(math.hypot(x - px, y - py) >= spawn.radius + other.radius + self.min_gap
                       for other, px, py in placed):
                    break
            else:
                raise LayoutError(f"could not place '{spawn.name}' clear of the other objects in "
                                  f"{self.max_tries} tries; widen its ranges or reduce min_gap")
            yaw = float(rng.uniform(*spawn.yaw_range))
            placed.append((spawn, x, y))
            poses[spawn.name] = Pose.on_table(x, y, spawn.z, yaw)
        return poses

