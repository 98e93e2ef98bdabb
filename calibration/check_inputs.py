"""What `python -m calibration check` compares: the rig (RigSpec) and the dataset it will run (DataSummary).

Why two plain records: every check is a function of these two, so a test can aim one injected mismatch at one
check, and the report can print both sides next to each other.

The rig's cameras: on the simulated rig, the renderer's cameras at the size the sim rig renders
(robot_client.rig.SIM_CAMERAS, SIM_IMAGE_SIZE); on the real rig, the config's [[camera]] tables, whose size,
when the table leaves it to the camera's default, is taken from the calibration's camera section if there is
one (the intrinsics were measured at that size), else unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from robodata.dataset import CameraInfo, Dataset
from robodata.lag import LagResult, estimate_lags
from robot_client.backends import get_backend
from robot_client.calfile import RigCalibration
from robot_client.config import RobotConfig
from robot_client.rig import SIM_CAMERAS, SIM_IMAGE_SIZE

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RigCamera:
    name: str
    width: int | None
    height: int | None
    fps: float | None
    source: str  # where the size comes from: "sim renderer", "config", "calibration", "unknown"


@dataclass(frozen=True)
class RigSpec:
    config: RobotConfig
    robot_kind: str  # a robot backend name (robot_client.backends)
    cameras: tuple[RigCamera, ...]
    control_fps: float | None  # the rate the client will run the policy at; None = not given
    control_fps_source: str
    calibration: RigCalibration | None = None
    calibration_path: Path | None = None

    def camera(self, name: str) -> RigCamera | None:
        return next((c for c in self.cameras if c.name == name), None)


def rig_spec(config: RobotConfig, robot_kind: str, calibration: RigCalibration | None = None,
             control_fps: float | None = None, control_fps_source: str = "",
             calibration_path: Path | None = None) -> RigSpec:
    if get_backend(robot_kind).simulated:
        h, w = SIM_IMAGE_SIZE
        cameras = tuple(RigCamera(n, w, h, None, "sim renderer") for n in SIM_CAMERAS)
    else:
        out = []
        for entry in config.cameras:
            width, height, source = entry.width, entry.height, "config"
            cal = calibration.cameras.get(entry.name) if calibration is not None else None
            if (width is None or height is None) and cal is not None:
                width, height, source = cal.width, cal.height, "calibration"
            elif width is None or height is None:
                width, height, source = None, None, "unknown"
            out.append(RigCamera(entry.name, width, height, entry.fps, source))
        cameras = tuple(out)
    return RigSpec(config, robot_kind, cameras, control_fps, control_fps_source, calibration, calibration_path)


@dataclass(frozen=True)
class DataSummary:
    """The numbers of a dataset the rig checks need; arrays in dataset dim order, float64."""

    path: Path
    format: str
    fps: float
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[CameraInfo, ...]
    states: F64  # [N, state_dim], all episodes
    actions: F64  # [N, action_dim]
    starts: tuple[tuple[int, F64], ...]  # (episode index, first state)
    lag: LagResult | None  # action-to-state lag per action dim (frames), robodata.lag
    episodes: int


def summarize(ds: Dataset, max_lag_frames: int = 30) -> DataSummary:
    """Read every episode's states and actions (no images) and estimate the action-to-state lag with the
    doctor's estimator (per-frame differences, pooled over episodes)."""
    info = ds.info
    episodes = list(ds)
    if not episodes:
        empty = np.zeros((0, info.state_dim))
        return DataSummary(info.path, info.format, info.fps, info.state_names, info.action_names, info.cameras,
                           empty, np.zeros((0, info.action_dim)), (), None, 0)
    states = np.concatenate([np.asarray(ep.states, dtype=np.float64) for ep in episodes])
    actions = np.concatenate([np.asarray(ep.actions, dtype=np.float64) for ep in episodes])
    starts = tuple((ep.index, np.asarray(ep.states[0], dtype=np.float64)) for ep in episodes if len(ep))
    index = [info.state_names.index(n) if n in info.state_names else
             (j if info.state_dim == info.action_dim else -1) for j, n in enumerate(info.action_names)]
    lag = estimate_lags(episodes, info.action_names, index, max_lag_frames, signal="velocity")
    return DataSummary(info.path, info.format, info.fps, info.state_names, info.action_names, info.cameras,
                       states, actions, starts, lag, len(episodes))
