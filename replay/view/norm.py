"""Per-joint normalized extents from a server response's norm report, named like the recorder's extras.

Why the recorder's names (`norm_state_min`, `norm_state_max`, `norm_action_max_abs`): a live session and the
recording of it then draw the same `/norm/<joint>/<name>` series, and one blueprint serves both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

STATE_MIN = "norm_state_min"
STATE_MAX = "norm_state_max"
ACTION_MAX_ABS = "norm_action_max_abs"


def _value(dim: Mapping[str, Any], key: str) -> float:
    try:
        return float(dim.get(key, np.nan))
    except (TypeError, ValueError):
        return float("nan")


def norm_extents(response: Mapping[str, Any], names: Sequence[str]) -> dict[str, npt.NDArray[np.float64]]:
    """{name: [D]} of the report's normalized state min/max and action |max| per joint (NaN where absent)."""
    report = response.get("norm_report") or {}
    d = len(names)
    out = {k: np.full(d, np.nan) for k in (STATE_MIN, STATE_MAX, ACTION_MAX_ABS)}
    if not isinstance(report, Mapping):
        return out
    index = {n: i for i, n in enumerate(names)}
    for dim in report.get("state") or []:
        i = index.get(str(dim.get("name", ""))) if isinstance(dim, Mapping) else None
        if i is not None:
            out[STATE_MIN][i] = _value(dim, "normalized_min")
            out[STATE_MAX][i] = _value(dim, "normalized_max")
    for dim in report.get("actions") or []:
        i = index.get(str(dim.get("name", ""))) if isinstance(dim, Mapping) else None
        if i is not None:
            out[ACTION_MAX_ABS][i] = max(abs(_value(dim, "normalized_min")), abs(_value(dim, "normalized_max")))
    return out
