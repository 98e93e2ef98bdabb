"""Cameras for the robot client: RGB uint8 frames stamped on the monotonic clock, refused when stale.

Backends: OpenCVCamera (USB/V4L2 devices or video files) and FrameSourceCamera (rendered, replayed or
synthetic frames). CameraRig reads several together and reports their capture-time skew.
"""

from robot_client.cameras.base import Camera, Clock
from robot_client.cameras.devices import ResolvedDevice, available_video_devices, find_by_serial, resolve_device
from robot_client.cameras.frame import CameraError, CameraFrame, StaleFrameError, U8Image
from robot_client.cameras.image_ops import (
    ResizeSpec,
    bgr_to_rgb,
)
from robot_client.cameras.opencv_camera import CameraConfig, CaptureFormat, OpenCVCamera
from robot_client.cameras.rig import CameraRig, CameraSkewError, RigFrames, capture_skew
from robot_client.cameras.source_camera import FrameProducer, FrameSourceCamera, SourceFrame
from robot_client.cameras.staleness import StalenessConfig, StalenessGuard, frame_checksum

__all__ = [
    "Camera",
    "CameraConfig",
    "CameraError",
    "CameraFrame",
    "CameraRig",
    "CameraSkewError",
    "CaptureFormat",
    "Clock",
    "FrameProducer",
    "FrameSourceCamera",
    "OpenCVCamera",
    "ResizeSpec",
    "ResolvedDevice",
    "RigFrames",
    "SourceFrame",
    "StaleFrameError",
    "StalenessConfig",
    "StalenessGuard",
    "U8Image",
    "available_video_devices",
    "bgr_to_rgb",
    "capture_skew",
    "find_by_serial",
    "frame_checksum",
    "resolve_device",
]
