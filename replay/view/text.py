"""Text rows for the `/norm/warnings` and `/events` logs, built from server responses and run state.

Why here: the live logger reads them from a response dict and the recording viewer from stored counts; both
must word them the same way so a live session and its recording read alike. Normalization anomalies are the
norm report's dimensions with values outside the normalization range or clipped, and state values outside the
prompt bins' range; the server's own warnings (chunk padding, state far from the dataset, truncated prompt...)
are shown as sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rerun as rr

INFO = "INFO"
WARN = "WARN"
ERROR = "ERROR"


@dataclass(frozen=True)
class TextRow:
    text: str
    level: str = INFO

    def archetype(self) -> rr.TextLog:
        return rr.TextLog(self.text, level=self.level)


def _number(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def server_warnings(response: Mapping[str, Any]) -> list[TextRow]:
    """The response's warnings, one row each: "[code] field: message"."""
    rows = []
    for w in response.get("warnings") or []:
        if isinstance(w, Mapping):
            code, fld, msg = w.get("code", ""), w.get("field", ""), w.get("message", "")
            rows.append(TextRow(f"[{code}] {fld}: {msg}" if fld else f"[{code}] {msg}", WARN))
        else:
            rows.append(TextRow(str(w), WARN))
    return rows


def _dimension_anomalies(group: str, dims: Sequence[Any]) -> list[TextRow]:
    rows = []
    for dim in dims:
        if not isinstance(dim, Mapping):
            continue
        outside = _number(dim.get("fraction_out_of_range"))
        clipped = int(_number(dim.get("clipped_count")))
        if outside <= 0 and clipped <= 0:
            continue
        lo, hi = _number(dim.get("normalized_min"), float("nan")), _number(dim.get("normalized_max"), float("nan"))
        rows.append(TextRow(
            f"norm {group} {dim.get('name', '?')}: {100 * outside:.0f}% outside the normalization range "
            f"(normalized {lo:.2f} .. {hi:.2f}), {clipped} clipped",
            WARN,
        ))
    return rows


def norm_anomalies(response: Mapping[str, Any]) -> list[TextRow]:
    """Rows for the norm report's out-of-range or clipped dimensions and state values outside the prompt bins."""
    report = response.get("norm_report") or {}
    if not isinstance(report, Mapping):
        return []
    rows = _dimension_anomalies("state", report.get("state") or [])
    rows += _dimension_anomalies("action", report.get("actions") or [])
    bins = int(_number(report.get("state_bins_out_of_range")))
    if bins > 0:
        rows.append(TextRow(f"norm state: {bins} state value(s) outside [-1, 1] (prompt bin -1 or top)", WARN))
    return rows


def response_rows(response: Mapping[str, Any]) -> list[TextRow]:
    return server_warnings(response) + norm_anomalies(response)


def hold_row(holding: bool) -> TextRow:
    return TextRow("hold: no usable target (server late or down, or e-stop)", WARN) if holding else TextRow(
        "resume: fresh actions"
    )
