"""A USB/V4L2 camera (or a video file standing in for one) read through OpenCV on its own thread.

The capture thread grabs continuously and keeps only the newest frame. Reading from the control loop then
never blocks on the device and never sees a backlog: OpenCV/V4L2 otherwise queue several buffers, and a loop
that reads once per step would act on images hundreds of milliseconds old. Each frame is stamped right after
`grab()` returns (when the driver hands the buffer over; exposure happened one sensor latency earlier),
converted to RGB once, and fitted to the policy's size, all on the capture thread.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from robot_client.cameras.base import Camera, Clock
from robot_client.cameras.devices import BY_ID_DIR, DEV_DIR, ResolvedDevice, resolve_device, unopenable
from robot_client.cameras.frame import CameraError, CameraFrame
from robot_client.cameras.image_ops import ResizeSpec, bgr_to_rgb
from robot_client.cameras.staleness import StalenessConfig

log = logging.getLogger(__name__)

DEFAULT_FILE_FPS = 30.0
_JOIN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CameraConfig:
    """One camera. Exactly one of `device` (index like 0, a node like "/dev/video2", or a video file path) or
    `serial` (matched against /dev/v4l/by-id names; stable across reboots, unlike indices).

    width/height/fps/fourcc are requested from a live device (fourcc "MJPG" is often needed for USB cameras to
    reach 30 fps at 640x480 and above); the negotiated values may differ and are logged. For a video file,
    fps sets the playback pace (default: the file's own rate). `resize` fits frames to the policy's input.
    """

    name: str
    device: int | str | None = None
    serial: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None
    resize: ResizeSpec | None = None
    staleness: StalenessConfig = field(default_factory=StalenessConfig)
    first_frame_timeout_s: float = 5.0
    loop_file: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("camera name must be non-empty")
        if (self.device is None) == (self.serial is None):
            raise ValueError(f"camera {self.name!r}: set exactly one of device or serial")
        if (self.width is None) != (self.height is None):
            raise ValueError(f"camera {self.name!r}: set both width and height, or neither")
        for label in ("width", "height", "fps", "first_frame_timeout_s"):
            value = getattr(self, label)
            if value is not None and not value > 0:
                raise ValueError(f"camera {self.name!r}: {label} must be > 0, got {value}")
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ValueError(f"camera {self.name!r}: fourcc must be 4 characters, got {self.fourcc!r}")


@dataclass(frozen=True)
class CaptureFormat:
    """What the device actually delivers after negotiation (before any resize)."""

    width: int
    height: int
    fps: float
    fourcc: str


def _fourcc_text(code: float) -> str:
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00")


class OpenCVCamera(Camera):
    """Camera backed by cv2.VideoCapture with a latest-frame-only capture thread."""

    def __init__(self, config: CameraConfig, *, clock: Clock = time.monotonic,
                 by_id_dir: Path = BY_ID_DIR, dev_dir: Path = DEV_DIR) -> None:
        super().__init__(config.name, config.staleness, clock)
        self._config = config
        self._by_id_dir = by_id_dir
        self._dev_dir = dev_dir
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._first_frame = threading.Event()
        self._thread: threading.Thread | None = None
        self._capture: Any = None
        self._latest: CameraFrame | None = None
        self._failure: str | None = None
        self._device: ResolvedDevice | None = None
        self._format: CaptureFormat | None = None

    @property
    def config(self) -> CameraConfig:
        return self._config

    @property
    def device(self) -> ResolvedDevice | None:
        """The resolved device, once started."""
        return self._device

    @property
    def capture_format(self) -> CaptureFormat | None:
        """The negotiated format, once started."""
        return self._format

    # -- opening ------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        cfg = self._config
        device = resolve_device(cfg.name, cfg.device, cfg.serial, by_id_dir=self._by_id_dir, dev_dir=self._dev_dir)
        live_v4l2 = not device.is_file and sys.platform.startswith("linux")
        capture = cv2.VideoCapture(device.target, cv2.CAP_V4L2 if live_v4l2 else cv2.CAP_ANY)
        if not capture.isOpened():
            capture.release()
            raise unopenable(cfg.name, device, self._dev_dir)
        if not device.is_file:
            self._configure(capture, device)
        self._format = CaptureFormat(width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                     height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                                     fps=float(capture.get(cv2.CAP_PROP_FPS)),
                                     fourcc=_fourcc_text(capture.get(cv2.CAP_PROP_FOURCC)))
        self._device = device
        self._capture = capture
        self._latest = None
        self._failure = None
        self._stop_event.clear()
        self._first_frame.clear()
        period = 1.0 / (cfg.fps or self._format.fps or DEFAULT_FILE_FPS) if device.is_file else 0.0
        self._thread = threading.Thread(target=self._capture_loop, args=(capture, device, period),
                                        name=f"camera-{cfg.name}", daemon=True)
        self._thread.start()
        if not self._first_frame.wait(cfg.first_frame_timeout_s):
            self._shutdown()
            raise CameraError(cfg.name, f"no frame from {device.description} within {cfg.first_frame_timeout_s} s")
        if self._latest is None and self._failure is not None:
            failure = self._failure
            self._shutdown()
            raise CameraError(cfg.name, failure)

    def _configure(self, capture: Any, device: ResolvedDevice) -> None:
        """Request the configured format; keep one driver buffer so grab() returns the newest image."""
        cfg = self._config
        if cfg.fourcc is not None:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*cfg.fourcc))
        if cfg.width is not None and cfg.height is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps is not None:
            capture.set(cv2.CAP_PROP_FPS, cfg.fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        got_w, got_h = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = float(capture.get(cv2.CAP_PROP_FPS))
        if cfg.width is not None and (got_w, got_h) != (cfg.width, cfg.height):
            log.warning("camera %r (%s): requested %dx%d, device delivers %dx%d", cfg.name, device.description,
                        cfg.width, cfg.height, got_w, got_h)
        if cfg.fps is not None and abs(got_fps - cfg.fps) > 0.5:
            log.warning("camera %r (%s): requested %.1f fps, device reports %.1f", cfg.name, device.description,
                        cfg.fps, got_fps)

    # -- capture thread -----------------------------------------------------------------------------------------
    def _capture_loop(self, capture: Any, device: ResolvedDevice, period: float) -> None:
        sequence = 0
        next_due = self._clock()
        rewound = False
        try:
            while not self._stop_event.is_set():
                if period > 0:
                    delay = next_due - self._clock()
                    if delay > 0 and self._stop_event.wait(delay):
                        break
                    next_due = max(next_due + period, self._clock())
                if not capture.grab():
                    if device.is_file and self._config.loop_file and sequence > 0 and not rewound:
                        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        rewound = True
                        continue
                    raise CameraError(self.name, "end of video file" if device.is_file
                                      else "grab failed (device unplugged or stalled?)")
                stamp = self._clock()
                rewound = False
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    raise CameraError(self.name, "retrieve failed after a successful grab")
                rgb = bgr_to_rgb(bgr)
                if self._config.resize is not None:
                    rgb = self._config.resize.apply(rgb)
                frame = CameraFrame(rgb=rgb, capture_timestamp=stamp, sequence=sequence, name=self.name)
                with self._lock:
                    self._latest = frame
                self._first_frame.set()
                sequence += 1
        except Exception as exc:  # the control loop learns of it on its next read()
            reason = exc.detail if isinstance(exc, CameraError) else f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._failure = f"capture stopped on {device.description}: {reason}"
            self._first_frame.set()

    # -- reading and closing ------------------------------------------------------------------------------------
    def _latest_frame(self) -> CameraFrame:
        with self._lock:
            frame, failure = self._latest, self._failure
        if failure is not None:
            raise CameraError(self.name, failure)
        if frame is None:
            raise CameraError(self.name, "no frame captured yet")
        return frame

    def _close(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self._stop_event.set()
        thread, capture = self._thread, self._capture
        self._thread, self._capture = None, None
        if thread is not None:
            thread.join(_JOIN_TIMEOUT_S)
            if thread.is_alive():
                # Releasing while grab() is blocked in the driver can crash; leave it to process exit.
                log.warning("camera %r: capture thread did not stop within %.1f s; device left open",
                            self.name, _JOIN_TIMEOUT_S)
                return
        if capture is not None:
            capture.release()
