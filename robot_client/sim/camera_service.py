"""Rendering of the sim cameras on one dedicated thread.

MuJoCo GL contexts belong to the thread that created them, while observations are captured from the policy
worker (a new thread per episode) and from tools. All renders therefore go through one single-thread executor;
callers block until their frames are ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from robot_client.sim.cameras import SimCameraConfig, SimCameras
from robot_client.sim.world import SimWorld

Frames = dict[str, tuple[npt.NDArray[np.uint8], float]]


class SimCameraService:
    def __init__(self, world: SimWorld, names: Sequence[str], height: int = 240, width: int = 320,
                 delays_s: Mapping[str, float] | None = None) -> None:
        """delays_s: injected latency per camera (SimCameraConfig.delays_s; default none)."""
        self.names = tuple(names)
        config = SimCameraConfig(names=self.names, height=height, width=width, delays_s=dict(delays_s or {}))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-render")
        self._cameras: SimCameras = self._pool.submit(SimCameras, world, config).result()

    def _capture(self) -> Frames:
        frames = self._cameras.capture_all(self.names)
        return {name: (f.rgb, f.timestamp) for name, f in frames.items()}

    def capture(self) -> Frames:
        """All cameras at one simulated instant: {name: (RGB uint8 [H, W, 3], timestamp)}."""
        return self._pool.submit(self._capture).result()

    def close(self) -> None:
        self._pool.submit(self._cameras.close).result()
        self._pool.shutdown()
