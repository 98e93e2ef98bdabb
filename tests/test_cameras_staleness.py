"""Stale and frozen frames are refused with an error naming the camera; FrameSourceCamera's timing controls."""

from __future__ import annotations

import numpy as np
import pytest

from robot_client.cameras import (
    CameraError,
    FrameSourceCamera,
    ResizeSpec,
    SourceFrame,
    StaleFrameError,
    StalenessConfig,
)


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _frames(n: int, height: int = 8, width: int = 8) -> np.ndarray:
    """n frames, each a different flat grey so consecutive frames never share a checksum."""
    return np.stack([np.full((height, width, 3), i, np.uint8) for i in range(n)])


def test_frames_come_out_in_order_with_given_timestamps() -> None:
    clock = FakeClock(10.0)
    cam = FrameSourceCamera("top", _frames(3), timestamps=[9.95, 9.96, 9.97], clock=clock)
    with cam:
        got = [cam.read() for _ in range(3)]
    assert [f.sequence for f in got] == [0, 1, 2]
    assert [f.capture_timestamp for f in got] == [9.95, 9.96, 9.97]
    assert all(f.name == "top" for f in got)
    assert [int(f.rgb[0, 0, 0]) for f in got] == [0, 1, 2]


def test_old_frame_raises_stale_naming_the_camera() -> None:
    clock = FakeClock(10.0)
    cam = FrameSourceCamera("wrist_left", _frames(2), timestamps=[9.9, 9.95], clock=clock,
                            staleness=StalenessConfig(max_age_s=0.2))
    with cam:
        cam.read()  # 0.1 s old: fine
        clock.now = 10.3  # next frame is 0.35 s old
        with pytest.raises(StaleFrameError, match=r"camera 'wrist_left'.*0\.350 s old") as info:
            cam.read()
    assert info.value.camera == "wrist_left"
    assert isinstance(info.value, CameraError)


def test_default_max_age_is_a_fifth_of_a_second() -> None:
    assert StalenessConfig().max_age_s == pytest.approx(0.2)


def test_frozen_sequence_raises_after_n_reads_without_a_new_frame() -> None:
    clock = FakeClock()
    image = np.zeros((4, 4, 3), np.uint8)
    # A driver that keeps handing back its last buffer: fresh timestamps, sequence stuck.
    cam = FrameSourceCamera("top", lambda: SourceFrame(image, timestamp=clock(), sequence=7), clock=clock,
                            staleness=StalenessConfig(max_reads_without_new_frame=3))
    with cam:
        cam.read()  # first sight of sequence 7
        cam.read()  # 1 read without a new frame
        cam.read()  # 2
        with pytest.raises(StaleFrameError, match=r"camera 'top'.*sequence stuck at 7 for 3 reads"):
            cam.read()
        with pytest.raises(StaleFrameError):  # stays refused until a new frame arrives
            cam.read()


def test_repeated_reads_within_the_limit_are_fine_and_reset_on_a_new_frame() -> None:
    clock = FakeClock()
    state = {"sequence": 0}
    image = np.zeros((4, 4, 3), np.uint8)
    cam = FrameSourceCamera("top", lambda: SourceFrame(image, timestamp=clock(), sequence=state["sequence"]),
                            clock=clock, staleness=StalenessConfig(max_reads_without_new_frame=3))
    with cam:
        for _ in range(5):
            for _ in range(3):  # reading 3x faster than the camera: 2 repeats per frame
                cam.read()
            state["sequence"] += 1


def test_identical_pixels_detected_by_checksum_when_enabled() -> None:
    clock = FakeClock()
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    # The sequence advances but the pixels never change: a frozen buffer behind a live-looking counter.
    cam = FrameSourceCamera("wrist_right", lambda: image, clock=clock,
                            staleness=StalenessConfig(max_identical_frames=2))
    with cam:
        cam.read()
        cam.read()  # 1 identical
        with pytest.raises(StaleFrameError, match=r"camera 'wrist_right'.*3 consecutive frames with identical"):
            cam.read()


def test_identical_pixels_allowed_by_default() -> None:
    clock = FakeClock()
    image = np.zeros((4, 4, 3), np.uint8)
    with FrameSourceCamera("sim_top", lambda: image, clock=clock) as cam:
        for _ in range(20):
            cam.read()


def test_changing_pixels_pass_the_checksum_check() -> None:
    clock = FakeClock()
    cam = FrameSourceCamera("top", _frames(10), clock=clock, staleness=StalenessConfig(max_identical_frames=1))
    with cam:
        for _ in range(10):
            cam.read()


def test_timestamp_from_another_clock_is_refused() -> None:
    clock = FakeClock(100.0)
    cam = FrameSourceCamera("top", _frames(1), timestamps=[1.7e9], clock=clock)  # wall-clock seconds
    with cam, pytest.raises(CameraError, match="in the future"):
        cam.read()


def test_stack_end_raises_unless_looping() -> None:
    clock = FakeClock()
    with FrameSourceCamera("top", _frames(2), clock=clock) as cam:
        cam.read()
        cam.read()
        with pytest.raises(CameraError, match="camera 'top': end of frames"):
            cam.read()
    with FrameSourceCamera("top", _frames(2), loop=True, clock=clock) as cam:
        assert [cam.read().sequence for _ in range(5)] == [0, 1, 2, 3, 4]


def test_read_before_start_is_an_error() -> None:
    with pytest.raises(CameraError, match="before start"):
        FrameSourceCamera("top", _frames(1)).read()


def test_wrong_frame_format_is_refused() -> None:
    cam = FrameSourceCamera("top", lambda: np.zeros((4, 4, 3), np.float32))
    with cam, pytest.raises(CameraError, match="camera 'top': expected a uint8 HxWx3"):
        cam.read()


def test_source_camera_resizes_like_the_policy() -> None:
    cam = FrameSourceCamera("top", _frames(1, 48, 64), resize=ResizeSpec(32, 32))
    with cam:
        frame = cam.read()
    assert frame.rgb.shape == (32, 32, 3)


def test_restart_forgets_the_previous_stream() -> None:
    clock = FakeClock()
    image = np.zeros((4, 4, 3), np.uint8)
    cam = FrameSourceCamera("top", lambda: SourceFrame(image, timestamp=clock(), sequence=1), clock=clock,
                            staleness=StalenessConfig(max_reads_without_new_frame=1))
    cam.start()
    cam.read()
    with pytest.raises(StaleFrameError):
        cam.read()
    cam.stop()
    cam.start()
    cam.read()  # a fresh start is not judged by the old stream
    cam.stop()
