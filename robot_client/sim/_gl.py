"""Pick a headless OpenGL backend before anything in this package imports mujoco.

MuJoCo reads MUJOCO_GL once, when it is first imported; without a display the default (GLFW) cannot create a
context, so offscreen camera rendering would fail far from the cause. EGL works headless (Mesa llvmpipe on
machines without a GPU). An explicit user choice (e.g. MUJOCO_GL=osmesa) is kept. If mujoco was already
imported with MUJOCO_GL unset, setting it here is too late; `BACKEND_CHOSEN_TOO_LATE` records that so the
camera error can say so.
"""

from __future__ import annotations

import os
import sys

BACKEND_CHOSEN_TOO_LATE = "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ

os.environ.setdefault("MUJOCO_GL", "egl")
