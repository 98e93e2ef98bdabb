"""Refuse frames the policy must not act on: too old, not advancing, or bit-identical to the last one.

A camera can fail silently in three ways: the capture thread stalls (the newest frame ages), the driver stops
delivering while something keeps handing back the last frame (the sequence stops advancing), or the device
keeps returning the same buffer with fresh timestamps (identical pixels). Real sensors always carry noise, so
bit-identical consecutive frames from a live camera mean a frozen buffer; the pixel check is opt-in because
rendered or replayed frames of a still scene can legitimately repeat.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from robot_client.cameras.frame import CameraError, CameraFrame, StaleFrameError, U8Image


@dataclass(frozen=True)
class StalenessConfig:
    """Limits on frame freshness.

    max_age_s: the newest frame may be at most this old when read.
    max_reads_without_new_frame: raise on the N-th consecutive read that returns no new frame (the first read
        of a frame does not count). Reading faster than the camera's rate repeats a frame a few times, so keep
        this above (read rate / camera fps).
    max_identical_frames: raise on the N-th consecutive new frame whose pixels equal the previous one
        (compared by checksum); None disables the check.
    """

    max_age_s: float = 0.2
    max_reads_without_new_frame: int = 10
    max_identical_frames: int | None = None

    def __post_init__(self) -> None:
        if not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, got {self.max_age_s}")
        if self.max_reads_without_new_frame < 1:
            raise ValueError(f"max_reads_without_new_frame must be >= 1, got {self.max_reads_without_new_frame}")
        if self.max_identical_frames is not None and self.max_identical_frames < 1:
            raise ValueError(f"max_identical_frames must be >= 1 or None, got {self.max_identical_frames}")


def frame_checksum(rgb: U8Image) -> int:
    """CRC32 of the pixels: well under a millisecond for a policy-sized image, exact for frozen buffers."""
    return zlib.crc32(np.ascontiguousarray(rgb).data)


class StalenessGuard:
    """Tracks the frames one camera has returned and raises when the latest one must not be used."""

    def __init__(self, camera: str, config: StalenessConfig) -> None:
        self._camera = camera
        self._config = config
        self.reset()

    def reset(self) -> None:
        """Forget history (on start/restart) so a fresh stream is not judged by the previous one."""
        self._last_sequence: int | None = None
        self._reads_without_new = 0
        self._last_checksum: int | None = None
        self._identical = 0

    def check(self, frame: CameraFrame, now: float) -> None:
        cfg = self._config
        age = now - frame.capture_timestamp
        if age > cfg.max_age_s:
            raise StaleFrameError(self._camera, f"newest frame (sequence {frame.sequence}) is {age:.3f} s old, "
                                                f"max {cfg.max_age_s:.3f} s")
        if age < -cfg.max_age_s:
            raise CameraError(self._camera, f"frame timestamp is {-age:.3f} s in the future; capture timestamps "
                                            "must come from time.monotonic()")
        if self._last_sequence is not None and frame.sequence <= self._last_sequence:
            self._reads_without_new += 1
            if self._reads_without_new >= cfg.max_reads_without_new_frame:
                raise StaleFrameError(self._camera, f"frozen: sequence stuck at {frame.sequence} for "
                                                    f"{self._reads_without_new} reads")
            return
        self._last_sequence = frame.sequence
        self._reads_without_new = 0
        if cfg.max_identical_frames is not None:
            checksum = frame_checksum(frame.rgb)
            self._identical = self._identical + 1 if checksum == self._last_checksum else 0
            self._last_checksum = checksum
            if self._identical >= cfg.max_identical_frames:
                raise StaleFrameError(self._camera, f"frozen: {self._identical + 1} consecutive frames with "
                                                    f"identical pixels (sequence {frame.sequence})")
