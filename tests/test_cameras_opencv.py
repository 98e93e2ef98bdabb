"""OpenCVCamera end to end through real video files: colour order, resize, latest-frame-only, errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from openpi_client import image_tools

from robot_client.cameras import (
    CameraConfig,
    CameraError,
    OpenCVCamera,
    ResizeSpec,
    StaleFrameError,
    StalenessConfig,
    bgr_to_rgb,
    find_by_serial,
    opencv_camera,
)
from robot_client.cameras.frame import U8Image

HEIGHT, WIDTH = 96, 192  # three 64-px stripes, aligned to JPEG's 16-px blocks
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _rgb_pattern() -> U8Image:
    """Left stripe pure red, middle pure green, right pure blue (RGB order)."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for i, colour in enumerate((RED, GREEN, BLUE)):
        image[:, 64 * i:64 * (i + 1)] = colour
    return image


def _write_video(path: Path, fourcc: str, frames: int, fps: float = 30.0) -> U8Image:
    """Write the pattern through OpenCV, which (like a camera) takes BGR; returns the RGB truth."""
    rgb = _rgb_pattern()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (WIDTH, HEIGHT))
    assert writer.isOpened(), f"{fourcc} writer unavailable"
    for _ in range(frames):
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))  # RGB -> BGR, as a sensor would hand OpenCV
    writer.release()
    return rgb


@pytest.fixture
def mjpg_video(tmp_path: Path) -> Path:
    path = tmp_path / "pattern_mjpg.avi"
    _write_video(path, "MJPG", frames=10)
    return path


@pytest.fixture
def lossless_video(tmp_path: Path) -> Path:
    path = tmp_path / "pattern_ffv1.avi"
    _write_video(path, "FFV1", frames=10)
    return path


def _stripe_means(rgb: U8Image) -> list[list[float]]:
    """Mean colour in the centre of each stripe, away from JPEG's chroma bleed at the borders."""
    return [rgb[16:-16, 64 * i + 16:64 * i + 48].reshape(-1, 3).mean(axis=0).tolist() for i in range(3)]


def test_mjpg_video_comes_out_rgb(mjpg_video: Path) -> None:
    with OpenCVCamera(CameraConfig(name="top", device=str(mjpg_video), loop_file=True)) as cam:
        frame = cam.read()
    assert frame.rgb.shape == (HEIGHT, WIDTH, 3) and frame.rgb.dtype == np.uint8
    assert frame.name == "top"
    for mean, expected in zip(_stripe_means(frame.rgb), (RED, GREEN, BLUE), strict=True):
        np.testing.assert_allclose(mean, expected, atol=3)  # MJPG is lossy: within a few levels


def test_lossless_video_comes_out_rgb_exactly(lossless_video: Path) -> None:
    with OpenCVCamera(CameraConfig(name="top", device=str(lossless_video), loop_file=True)) as cam:
        frame = cam.read()
    np.testing.assert_array_equal(frame.rgb, _rgb_pattern())


def test_each_frame_is_converted_exactly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "five.avi"
    _write_video(path, "FFV1", frames=5)
    calls: list[int] = []

    def counting(bgr: U8Image) -> U8Image:
        calls.append(1)
        return bgr_to_rgb(bgr)

    monkeypatch.setattr(opencv_camera, "bgr_to_rgb", counting)
    cam = OpenCVCamera(CameraConfig(name="top", device=str(path), fps=200.0))
    with cam:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # play the file to its end
            try:
                frame = cam.read()
            except CameraError as exc:
                assert "end of video file" in str(exc) and "camera 'top'" in str(exc)
                break
            time.sleep(0.005)
        else:
            pytest.fail("video never ended")
    assert len(calls) == 5
    np.testing.assert_array_equal(frame.rgb, _rgb_pattern())


def test_resize_in_camera_matches_openpi_client(lossless_video: Path) -> None:
    config = CameraConfig(name="top", device=str(lossless_video), loop_file=True, resize=ResizeSpec(224, 224))
    with OpenCVCamera(config) as cam:
        frame = cam.read()
    np.testing.assert_array_equal(frame.rgb, image_tools.resize_with_pad(_rgb_pattern(), 224, 224))


def test_read_returns_the_newest_frame_not_a_backlog(lossless_video: Path) -> None:
    start = time.monotonic()
    config = CameraConfig(name="top", device=str(lossless_video), loop_file=True, fps=200.0)
    with OpenCVCamera(config) as cam:
        time.sleep(0.05)
        first = cam.read()
        time.sleep(0.1)
        second = cam.read()
        now = time.monotonic()
    assert second.sequence - first.sequence > 5  # frames captured in between were dropped, not queued
    assert start <= first.capture_timestamp < second.capture_timestamp <= now
    assert now - second.capture_timestamp < 0.2


def test_slow_source_is_reported_stale(lossless_video: Path) -> None:
    config = CameraConfig(name="wrist_left", device=str(lossless_video), loop_file=True, fps=2.0,
                          staleness=StalenessConfig(max_age_s=0.1))
    with OpenCVCamera(config) as cam:
        time.sleep(0.2)  # the next frame is 0.5 s away
        with pytest.raises(StaleFrameError, match="camera 'wrist_left'.*old"):
            cam.read()


def test_missing_device_path_names_it_and_lists_devices() -> None:
    cam = OpenCVCamera(CameraConfig(name="top", device="/dev/video987"))
    with pytest.raises(CameraError, match=r"camera 'top': cannot open /dev/video987.*available video devices"):
        cam.start()
    assert not cam.started


def test_missing_device_index_names_it() -> None:
    with pytest.raises(CameraError, match=r"camera 'top': cannot open video device index 987.*available video"):
        OpenCVCamera(CameraConfig(name="top", device=987)).start()


def test_undecodable_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "not_a_video.avi"
    path.write_bytes(b"\x00" * 1024)
    with pytest.raises(CameraError, match=r"camera 'top': cannot open video file .*not_a_video\.avi"):
        OpenCVCamera(CameraConfig(name="top", device=str(path))).start()


@pytest.fixture
def by_id(tmp_path: Path) -> Callable[[list[str]], Path]:
    def make(names: list[str]) -> Path:
        directory = tmp_path / "by-id"
        directory.mkdir()
        for name in names:
            (directory / name).symlink_to(tmp_path)
        return directory
    return make


def test_serial_prefers_the_capture_node(by_id: Callable[[list[str]], Path]) -> None:
    directory = by_id(["usb-Cam_A_SN111-video-index0", "usb-Cam_A_SN111-video-index1",
                       "usb-Cam_B_SN222-video-index0"])
    assert find_by_serial("top", "SN111", directory).name == "usb-Cam_A_SN111-video-index0"


def test_unknown_serial_lists_what_exists(by_id: Callable[[list[str]], Path]) -> None:
    directory = by_id(["usb-Cam_A_SN111-video-index0"])
    cam = OpenCVCamera(CameraConfig(name="wrist_right", serial="SN999"), by_id_dir=directory)
    with pytest.raises(CameraError, match=r"camera 'wrist_right': no camera with serial 'SN999'.*usb-Cam_A_SN111"):
        cam.start()


def test_serial_without_any_cameras(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="entries there: none"):
        find_by_serial("top", "SN1", tmp_path / "missing")


def test_ambiguous_serial_is_refused(by_id: Callable[[list[str]], Path]) -> None:
    directory = by_id(["usb-Cam_A_SN11-video-index0", "usb-Cam_B_SN111-video-index0"])
    with pytest.raises(CameraError, match="ambiguous"):
        find_by_serial("top", "SN11", directory)


def test_config_needs_exactly_one_identity() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        CameraConfig(name="top")
    with pytest.raises(ValueError, match="exactly one"):
        CameraConfig(name="top", device=0, serial="SN1")
    with pytest.raises(ValueError, match="width and height"):
        CameraConfig(name="top", device=0, width=640)
