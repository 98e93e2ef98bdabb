"""Several named cameras read as one observation, with how far apart in time their images were taken.

A bimanual policy sees e.g. a top view and two wrist views as one moment. If one camera lags, the images
disagree about where the arms are; the rig reports the spread of capture times (skew) with every read and
can refuse observations whose skew exceeds a limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from robot_client.cameras.base import Camera
from robot_client.cameras.frame import CameraError, CameraFrame, U8Image


class CameraSkewError(CameraError):
    """The rig's frames were captured too far apart; `camera` names the one with the oldest frame."""


@dataclass(frozen=True)
class RigFrames:
    """One read of every camera: frames by camera name, and max minus min capture timestamp."""

    frames: Mapping[str, CameraFrame]
    skew_s: float

    def __getitem__(self, name: str) -> CameraFrame:
        return self.frames[name]

    def timestamps(self) -> dict[str, float]:
        return {name: frame.capture_timestamp for name, frame in self.frames.items()}

    def images(self) -> dict[str, U8Image]:
        """RGB images by camera name: the shape policy observations take."""
        return {name: frame.rgb for name, frame in self.frames.items()}


def capture_skew(frames: Mapping[str, CameraFrame]) -> float:
    stamps = [frame.capture_timestamp for frame in frames.values()]
    return max(stamps) - min(stamps) if stamps else 0.0


class CameraRig:
    """Starts, reads and stops a set of uniquely named cameras together."""

    def __init__(self, cameras: Sequence[Camera], max_skew_s: float | None = None) -> None:
        names = [camera.name for camera in cameras]
        if not names:
            raise ValueError("a camera rig needs at least one camera")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"camera names must be unique; repeated: {', '.join(duplicates)}")
        if max_skew_s is not None and not max_skew_s > 0:
            raise ValueError(f"max_skew_s must be > 0, got {max_skew_s}")
        self._cameras = tuple(cameras)
        self._max_skew_s = max_skew_s

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(camera.name for camera in self._cameras)

    @property
    def cameras(self) -> tuple[Camera, ...]:
        return self._cameras

    def start(self) -> None:
        """Start every camera; if one fails, stop the ones already started and re-raise."""
        started: list[Camera] = []
        try:
            for camera in self._cameras:
                camera.start()
                started.append(camera)
        except BaseException:
            for camera in reversed(started):
                camera.stop()
            raise

    def stop(self) -> None:
        """Stop every camera even if one fails to stop; the first failure is re-raised afterwards."""
        first: BaseException | None = None
        for camera in reversed(self._cameras):
            try:
                camera.stop()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    def read(self) -> RigFrames:
        """Newest frame of every camera (each checked for staleness by its camera), plus their skew."""
        frames = {camera.name: camera.read() for camera in self._cameras}
        skew = capture_skew(frames)
        if self._max_skew_s is not None and skew > self._max_skew_s:
            oldest = min(frames.values(), key=lambda frame: frame.capture_timestamp)
            newest = max(frames.values(), key=lambda frame: frame.capture_timestamp)
            raise CameraSkewError(oldest.name, f"frame is {skew:.3f} s older than {newest.name!r}'s, "
                                               f"max skew {self._max_skew_s:.3f} s")
        return RigFrames(frames=frames, skew_s=skew)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
