"""MuJoCo simulation of the bimanual YAM station: SimRobot (the Robot interface), SimCameras, scene layout.

Importing this package selects a headless GL backend (MUJOCO_GL=egl unless already set) before mujoco loads;
set MUJOCO_GL yourself if mujoco is imported earlier elsewhere.
"""

from robot_client.sim import _gl  # noqa: F401  (must run before mujoco is imported)
from robot_client.sim.cameras import RenderedFrame, SimCameraConfig, SimCameraError, SimCameras
from robot_client.sim.layout import LayoutError, ObjectSpawn, Pose, SceneLayout
from robot_client.sim.robot import SimConfig, SimRobot
from robot_client.sim.world import DEFAULT_MODEL, SimModelError, SimWorld

__all__ = [
    "DEFAULT_MODEL",
    "LayoutError",
    "ObjectSpawn",
    "Pose",
    "RenderedFrame",
    "SceneLayout",
    "SimCameraConfig",
    "SimCameraError",
    "SimCameras",
    "SimConfig",
    "SimModelError",
    "SimRobot",
    "SimWorld",
]
