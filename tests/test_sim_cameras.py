"""SimCameras: RGB uint8 frames of the configured size, distinct per camera, the red cube visible from the top
camera, one GL context per thread, and a clear error when no GL backend is available. Renders sparingly."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import threading
from collections.abc import Iterator

import mujoco
import numpy as np
import pytest

from robot_client.config import load_robot_config
from robot_client.sim import Pose, SimCameraConfig, SimCameraError, SimCameras, SimRobot


@pytest.fixture(scope="module")
def robot() -> SimRobot:
    r = SimRobot(load_robot_config("bimanual_yam"))
    r.connect()
    r.reset(seed=0, object_poses={"red_cube": Pose.on_table(0.35, 0.12, 0.02)})
    return r


@pytest.fixture(scope="module")
def cams(robot: SimRobot) -> Iterator[SimCameras]:
    with SimCameras(robot.world) as c:
        yield c


def _red_pixels(image: np.ndarray) -> int:
    rgb = image.astype(np.int32)
    return int(((rgb[..., 0] > 120) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)).sum())


def test_frames_have_shape_and_differ(cams: SimCameras, robot: SimRobot) -> None:
    frames = cams.capture_all()
    assert list(frames) == ["top", "left_wrist", "right_wrist"]
    for name, frame in frames.items():
        assert frame.name == name
        assert frame.rgb.shape == (240, 320, 3) and frame.rgb.dtype == np.uint8
        assert frame.rgb.std() > 10, f"{name} is blank"
        assert frame.timestamp == pytest.approx(robot.now())
    images = [f.rgb.astype(np.int32) for f in frames.values()]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 5


def test_top_camera_sees_the_red_cube(cams: SimCameras, robot: SimRobot) -> None:
    assert _red_pixels(cams.capture("top").rgb) > 30
    saved = robot.object_pose("red_cube")
    robot.set_object_pose("red_cube", Pose.on_table(0.3, 0.1, -0.5))  # under the table
    try:
        assert _red_pixels(cams.capture("top").rgb) < 5
    finally:
        robot.set_object_pose("red_cube", saved)


def test_capture_from_another_thread_is_refused(cams: SimCameras) -> None:
    cams.capture("top")  # binds the context to this thread
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            cams.capture("top")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], SimCameraError)
    assert "thread" in str(errors[0])


def test_configurable_resolution(robot: SimRobot) -> None:
    with SimCameras(robot.world, SimCameraConfig(names=("left_wrist",), height=120, width=160)) as small:
        assert small.capture("left_wrist").rgb.shape == (120, 160, 3)
        with pytest.raises(SimCameraError, match="not configured"):
            small.capture("top")


def test_bad_camera_config_is_named(robot: SimRobot) -> None:
    with pytest.raises(SimCameraError, match="'front'"):
        SimCameras(robot.world, SimCameraConfig(names=("top", "front")))
    with pytest.raises(SimCameraError, match="offscreen buffer"):
        SimCameras(robot.world, SimCameraConfig(height=4000, width=4000))


def test_missing_gl_backend_says_how_to_fix(robot: SimRobot, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gl(*_: object, **__: object) -> None:
        raise RuntimeError("gladLoadGL error")

    monkeypatch.setattr(mujoco, "Renderer", no_gl)
    with pytest.raises(SimCameraError, match="MUJOCO_GL=egl"):
        SimCameras(robot.world).capture("top")
