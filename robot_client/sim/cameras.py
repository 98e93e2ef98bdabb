"""SimCameras: offscreen renders of the model's named cameras as RGB uint8 [H, W, 3] with a capture stamp.

Why the thread rule: an OpenGL context is current on one thread only, so the renderer is created lazily by
the first capture and every later capture (and close) must come from that same thread; a capture from another
thread is refused with a clear error rather than crashing inside the driver. All cameras of one
`capture_all()` show the same simulated instant: the physics state is copied under the world lock, then
rendered from the copy without holding the lock (rendering takes tens of ms on a CPU; the real-time stepping
thread must not wait for it).

Stamps are `SimWorld.stamp()` at the copied instant, the same clock as `JointState.timestamp`.

Injected latency (`SimCameraConfig.delays_s`, for the latency calibration's tests): a camera with delay D
shows the joints as they were D simulated seconds before the capture while its frame is stamped with the
capture instant, which is what a real camera's exposure-to-delivery latency looks like to the client. Only the
joints (qpos) are taken from the past; lights and the free objects' velocities are not needed to render.
Default: no delay, and the world records no history.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import mujoco
import numpy as np
import numpy.typing as npt

from robot_client.sim import _gl
from robot_client.sim.world import SimWorld

U8 = npt.NDArray[np.uint8]
DEFAULT_CAMERAS = ("top", "left_wrist", "right_wrist")


class SimCameraError(RuntimeError):
    """Rendering is unavailable or was misused; the message says what to do."""


@dataclass(frozen=True)
class SimCameraConfig:
    names: tuple[str, ...] = DEFAULT_CAMERAS
    # Frame size per camera (the sample dataset's 240x320).
    height: int = 240
    width: int = 320
    # Injected latency per camera (simulated seconds; absent = 0): see the module docstring.
    delays_s: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, delay in self.delays_s.items():
            if name not in self.names:
                raise SimCameraError(f"delays_s names camera '{name}', which is not configured ({list(self.names)})")
            if not (math.isfinite(delay) and delay >= 0):
                raise SimCameraError(f"delays_s['{name}'] must be finite and >= 0 s, got {delay}")


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    """One camera's render. Field names match robot_client.cameras.SourceFrame (rgb, timestamp), so a
    FrameSourceCamera can wrap a SimCameras with `lambda: SourceFrame(f.rgb, f.timestamp)`."""

    name: str
    rgb: U8  # RGB uint8 [H, W, 3]
    timestamp: float


class SimCameras:
    """Renders `config.names` from a SimWorld. Use from one thread (the one that first captures)."""

    def __init__(self, world: SimWorld, config: SimCameraConfig | None = None) -> None:
        self.world = world
        self.config = config if config is not None else SimCameraConfig()
        model = world.model
        missing = [n for n in self.config.names
                   if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, n) < 0]
        if missing:
            known = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise SimCameraError(f"cameras {missing} are not in the model; it has {known}")
        h, w = self.config.height, self.config.width
        max_w, max_h = int(model.vis.global_.offwidth), int(model.vis.global_.offheight)
        if not (0 < h <= max_h and 0 < w <= max_w):
            raise SimCameraError(f"camera size {h}x{w} (HxW) must be positive and within the model's offscreen "
                                 f"buffer {max_h}x{max_w}; raise <visual><global offwidth/offheight> in the MJCF")
        self._snapshot = mujoco.MjData(model)
        if self.config.delays_s:
            with world.lock:
                world.keep_history(max(self.config.delays_s.values()))
        self._renderer: mujoco.Renderer | None = None
        self._owner: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.names

    def capture(self, name: str) -> RenderedFrame:
        """One camera's current view."""
        if name not in self.config.names:
            raise SimCameraError(f"camera '{name}' is not configured; cameras are {list(self.config.names)}")
        return self.capture_all((name,))[name]

    def capture_all(self, names: tuple[str, ...] | None = None) -> dict[str, RenderedFrame]:
        """Every configured camera (or `names`) rendered from one simulated instant."""
        renderer = self._renderer_for_this_thread()
        wanted = names if names is not None else self.config.names
        frames = {}
        for delay in sorted({self.config.delays_s.get(n, 0.0) for n in wanted}):
            stamp = self._copy_state(delay)
            for name in (n for n in wanted if self.config.delays_s.get(n, 0.0) == delay):
                renderer.update_scene(self._snapshot, camera=name)
                frames[name] = RenderedFrame(name, renderer.render(), stamp)
        return {name: frames[name] for name in wanted}

    def close(self) -> None:
        """Free the GL context (on the owning thread; elsewhere the context cannot be made current)."""
        if self._renderer is None:
            return
        self._check_thread()
        self._renderer.close()
        self._renderer = None
        self._owner = None

    def __enter__(self) -> SimCameras:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------------------
    def _copy_state(self, delay: float = 0.0) -> float:
        with self.world.lock:
            mujoco.mj_copyData(self._snapshot, self.world.model, self.world.data)
            if delay > 0:
                self._snapshot.qpos[:] = self.world.past_qpos(self.world.time - delay)
            stamp = self.world.stamp()
        # After mj_step the stored body poses lag qpos by one step; recompute them for the stamped instant.
        mujoco.mj_kinematics(self.world.model, self._snapshot)
        mujoco.mj_camlight(self.world.model, self._snapshot)
        return stamp

    def _check_thread(self) -> None:
        if self._owner is not None and self._owner != threading.get_ident():
            raise SimCameraError("SimCameras is bound to the thread that created its GL context; capture and "
                                 "close on that thread (create one SimCameras per rendering thread)")

    def _renderer_for_this_thread(self) -> mujoco.Renderer:
        self._check_thread()
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.world.model, self.config.height, self.config.width)
            except Exception as exc:
                raise SimCameraError(_no_gl_message(exc)) from exc
            self._owner = threading.get_ident()
        return self._renderer


def _no_gl_message(exc: BaseException) -> str:
    if _gl.BACKEND_CHOSEN_TOO_LATE:
        cause = ("mujoco was imported before robot_client.sim while MUJOCO_GL was unset, so it kept its default "
                 "(GLFW, which needs a display)")
    else:
        cause = f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}"
    return (f"cannot create an OpenGL context for offscreen rendering ({cause}): {exc}. Set MUJOCO_GL=egl "
            "(or MUJOCO_GL=osmesa) in the environment before mujoco is first imported; EGL needs libEGL (Mesa "
            "works without a GPU), OSMesa needs libosmesa6.")
