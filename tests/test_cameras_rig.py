"""CameraRig: named frames read together, their capture skew, and all-or-nothing start."""

from __future__ import annotations

import numpy as np
import pytest

from robot_client.cameras import (
    CameraError,
    CameraRig,
    CameraSkewError,
    FrameSourceCamera,
    SourceFrame,
    StaleFrameError,
)


class FakeClock:
    def __init__(self, now: float = 50.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _camera(name: str, clock: FakeClock, lag_s: float, value: int = 0) -> FrameSourceCamera:
    """A camera whose frames were captured `lag_s` before the read."""
    image = np.full((4, 6, 3), value, np.uint8)
    counter = iter(range(10**6))
    return FrameSourceCamera(name, lambda: SourceFrame(image, timestamp=clock() - lag_s, sequence=next(counter)),
                             clock=clock)


def test_rig_returns_named_frames_timestamps_and_skew() -> None:
    clock = FakeClock()
    rig = CameraRig([_camera("top", clock, 0.010, 1), _camera("wrist_left", clock, 0.040, 2),
                     _camera("wrist_right", clock, 0.025, 3)])
    with rig:
        frames = rig.read()
    assert set(frames.frames) == {"top", "wrist_left", "wrist_right"}
    assert frames["wrist_left"].name == "wrist_left"
    assert frames.timestamps() == pytest.approx({"top": 49.99, "wrist_left": 49.96, "wrist_right": 49.975})
    assert frames.skew_s == pytest.approx(0.030)
    assert {name: int(img[0, 0, 0]) for name, img in frames.images().items()} == \
        {"top": 1, "wrist_left": 2, "wrist_right": 3}


def test_rig_refuses_frames_too_far_apart_naming_the_laggard() -> None:
    clock = FakeClock()
    rig = CameraRig([_camera("top", clock, 0.0), _camera("wrist_left", clock, 0.080)], max_skew_s=0.050)
    with rig, pytest.raises(CameraSkewError, match=r"camera 'wrist_left'.*0\.080 s older than 'top'"):
        rig.read()


def test_rig_propagates_a_stale_camera() -> None:
    clock = FakeClock()
    rig = CameraRig([_camera("top", clock, 0.0), _camera("wrist_right", clock, 0.5)])
    with rig, pytest.raises(StaleFrameError, match="camera 'wrist_right'"):
        rig.read()


def test_single_camera_has_zero_skew() -> None:
    clock = FakeClock()
    with CameraRig([_camera("top", clock, 0.01)]) as rig:
        assert rig.read().skew_s == 0.0


def test_duplicate_names_are_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="repeated: top"):
        CameraRig([_camera("top", clock, 0.0), _camera("top", clock, 0.0)])


class _Unopenable(FrameSourceCamera):
    def _open(self) -> None:
        raise CameraError(self.name, "cannot open")


def test_failed_start_stops_the_cameras_already_started() -> None:
    clock = FakeClock()
    good = _camera("top", clock, 0.0)
    rig = CameraRig([good, _Unopenable("wrist_left", np.zeros((1, 2, 2, 3), np.uint8), clock=clock)])
    with pytest.raises(CameraError, match="camera 'wrist_left': cannot open"):
        rig.start()
    assert not good.started
