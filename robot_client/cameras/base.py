"""The one camera interface the control loop, recorder and simulator use.

Contract (every backend):
- `start()` opens the source and returns once a first frame is available; `stop()` releases it and is safe
  to call repeatedly. Both also run through the context manager.
- `read()` never blocks waiting for the next frame: it returns the newest one, already RGB and already at the
  configured size, and raises `StaleFrameError` instead when that frame must not be acted on (see
  `staleness.py`), or `CameraError` when the source has failed.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Self

from robot_client.cameras.frame import CameraError, CameraFrame
from robot_client.cameras.staleness import StalenessConfig, StalenessGuard

Clock = Callable[[], float]


class Camera(ABC):
    """Abstract camera; subclasses supply `_open`, `_close` and `_latest_frame`, the checks live here."""

    def __init__(self, name: str, staleness: StalenessConfig | None = None, clock: Clock = time.monotonic) -> None:
        if not name:
            raise ValueError("a camera needs a non-empty name")
        self._name = name
        self._clock = clock
        self._guard = StalenessGuard(name, staleness or StalenessConfig())
        self._started = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        if self._started:
            return
        self._guard.reset()
        self._open()
        self._started = True

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._close()

    def read(self) -> CameraFrame:
        """Newest frame, checked for freshness against this camera's clock."""
        if not self._started:
            raise CameraError(self._name, "read() before start()")
        frame = self._latest_frame()
        self._guard.check(frame, self._clock())
        return frame

    @abstractmethod
    def _open(self) -> None:
        """Acquire the source; raise CameraError naming what could not be opened."""

    @abstractmethod
    def _close(self) -> None:
        """Release the source."""

    @abstractmethod
    def _latest_frame(self) -> CameraFrame:
        """The newest frame (without freshness checks); raise CameraError if the source has failed."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
