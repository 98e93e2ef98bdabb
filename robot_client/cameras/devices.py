"""Turn a camera's configured identity (index, path or USB serial) into something OpenCV can open.

USB enumeration order (/dev/video0, /dev/video2, ...) changes between boots and replugs, so rigs should name
cameras by serial; udev publishes stable links under /dev/v4l/by-id containing it. When resolution fails,
the error lists what does exist, because the person reading it is usually at the robot, plugging cables.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from robot_client.cameras.frame import CameraError

DEV_DIR = Path("/dev")
BY_ID_DIR = DEV_DIR / "v4l" / "by-id"


@dataclass(frozen=True)
class ResolvedDevice:
    """What to hand cv2.VideoCapture, how to describe it in errors, and whether it is a recording.

    A recording (a regular file) plays as fast as it decodes, so the camera paces it to a frame rate; a live
    device paces itself.
    """

    target: int | str
    description: str
    is_file: bool


def available_video_devices(dev_dir: Path = DEV_DIR) -> list[str]:
    """The /dev/video* nodes present, in numeric order."""
    def number(path: str) -> tuple[int, str]:
        match = re.search(r"(\d+)$", path)
        return (int(match.group(1)) if match else -1, path)
    return sorted(glob.glob(str(dev_dir / "video*")), key=number)


def _available_text(dev_dir: Path) -> str:
    found = available_video_devices(dev_dir)
    return "available video devices: " + (", ".join(found) if found else "none")


def find_by_serial(camera: str, serial: str, by_id_dir: Path = BY_ID_DIR) -> Path:
    """The by-id link whose name contains `serial`, preferring the capture node (`-video-index0`).

    A UVC camera publishes several nodes (index0 captures, index1 carries metadata), hence the preference.
    """
    if not serial:
        raise CameraError(camera, "empty camera serial")
    entries = sorted(by_id_dir.iterdir()) if by_id_dir.is_dir() else []
    matches = [p for p in entries if serial in p.name]
    capture_nodes = [p for p in matches if p.name.endswith("-video-index0")]
    candidates = capture_nodes or matches
    if len(candidates) == 1:
        return candidates[0]
    listing = ", ".join(p.name for p in entries) if entries else "none"
    if not candidates:
        raise CameraError(camera, f"no camera with serial {serial!r} under {by_id_dir}; entries there: {listing}")
    names = ", ".join(p.name for p in candidates)
    raise CameraError(camera, f"serial {serial!r} is ambiguous under {by_id_dir}: matches {names}")


def resolve_device(camera: str, device: int | str | None, serial: str | None, *,
                   by_id_dir: Path = BY_ID_DIR, dev_dir: Path = DEV_DIR) -> ResolvedDevice:
    """Resolve exactly one of `device` (index, device path or video file path) or `serial`."""
    if device is None or serial is not None:
        if device is not None or serial is None:
            raise CameraError(camera, "configure exactly one of device (index or path) or serial")
        link = find_by_serial(camera, serial, by_id_dir)
        node = os.path.realpath(link)
        return ResolvedDevice(node, f"serial {serial!r} ({link} -> {node})", is_file=False)
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        index = int(device)
        return ResolvedDevice(index, f"video device index {index}", is_file=False)
    path = Path(device).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CameraError(camera, f"cannot open {device}: {exc.strerror or exc}; {_available_text(dev_dir)}") from exc
    if stat.S_ISCHR(mode):
        return ResolvedDevice(str(path), str(path), is_file=False)
    if stat.S_ISREG(mode):
        return ResolvedDevice(str(path), f"video file {path}", is_file=True)
    raise CameraError(camera, f"{device} is neither a video device nor a file; {_available_text(dev_dir)}")


def unopenable(camera: str, device: ResolvedDevice, dev_dir: Path = DEV_DIR) -> CameraError:
    """The error for a device that resolved but that OpenCV refused to open."""
    hint = "not a video OpenCV can decode?" if device.is_file else "busy, unplugged, or not a capture node?"
    return CameraError(camera, f"cannot open {device.description} ({hint}); {_available_text(dev_dir)}")
