"""Sort a recording's per-frame extras into what the view draws, by shape rather than by name.

Why generic: recordings grow new extras (commanded, achieved, chunk_new, norm reports...) faster than a viewer
can be taught each one. So the rule is by shape, with a few names that carry meaning:

- [T, H, D] with D = action dim                -> chunk fans (`/chunks/<joint>/<name>/<slot>`);
- [T, D] with D = action dim                   -> joint series `/joints/<joint>/<name>`, or `/norm/<joint>/<name>`
                                                  for names starting with "norm_";
- [T] or [T, k] with k <= MAX_SIGNAL_WIDTH     -> `/signals/<name>` (k series);
- `chunk_obs_time` (recorder clock) positions the fans instead of being plotted, `chunk_new` only says which
  rows hold a chunk (a NaN row says the same), `holding` also yields hold/resume events and
  `server_warnings` (a count) also yields a warning row when non-zero;
- anything else (non-numeric, other shapes) is listed in `skipped` with its shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_SIGNAL_WIDTH = 8
CHUNK_OBS_TIME = "chunk_obs_time"
CHUNK_NEW = "chunk_new"
HOLDING = "holding"
SERVER_WARNINGS = "server_warnings"
NORM_PREFIX = "norm_"
_POSITIONING = {CHUNK_OBS_TIME, CHUNK_NEW}

AnyArray = npt.NDArray[Any]


@dataclass
class ExtrasPlan:
    joint_series: dict[str, AnyArray] = field(default_factory=dict)
    norm_series: dict[str, AnyArray] = field(default_factory=dict)
    chunks: dict[str, AnyArray] = field(default_factory=dict)
    signals: dict[str, AnyArray] = field(default_factory=dict)
    chunk_obs_time: AnyArray | None = None
    holding: AnyArray | None = None
    server_warnings: AnyArray | None = None
    skipped: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _numeric(arr: AnyArray) -> bool:
    return bool(np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_)


def plan_extras(extras: Mapping[str, AnyArray], action_dim: int, length: int) -> ExtrasPlan:
    """Classify every extra; arrays are cut to the first `length` frames."""
    plan = ExtrasPlan()
    for name in sorted(extras):
        arr = np.asarray(extras[name])[:length]
        shape = tuple(int(s) for s in arr.shape)
        if not _numeric(arr) or arr.ndim == 0 or arr.shape[0] != length:
            plan.skipped[name] = shape
            continue
        values = arr.astype(np.float64)
        if name == CHUNK_OBS_TIME:
            plan.chunk_obs_time = values.reshape(length, -1)[:, 0]
            continue
        if name in _POSITIONING:
            continue
        if name == HOLDING:
            plan.holding = values.reshape(length, -1)[:, 0]
        elif name == SERVER_WARNINGS:
            plan.server_warnings = values.reshape(length, -1)[:, 0]
        if arr.ndim == 3 and arr.shape[2] == action_dim:
            plan.chunks[name] = values
        elif arr.ndim == 2 and arr.shape[1] == action_dim and action_dim > 1:
            target = plan.norm_series if name.startswith(NORM_PREFIX) else plan.joint_series
            target[name] = values
        elif arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] <= MAX_SIGNAL_WIDTH):
            plan.signals[name] = values.reshape(length, -1)
        else:
            plan.skipped[name] = shape
    return plan


def transitions(flags: AnyArray) -> list[tuple[int, bool]]:
    """(frame, new value) wherever a 0/1 signal changes, including a leading 1 at frame 0."""
    state = np.nan_to_num(flags, nan=0.0) > 0.5
    out = [(0, True)] if state.size and state[0] else []
    changes = np.flatnonzero(state[1:] != state[:-1]) + 1
    out += [(int(i), bool(state[i])) for i in changes]
    return out
