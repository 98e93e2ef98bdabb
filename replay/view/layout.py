"""Entity paths, series styling and the default blueprint shared by every rerun view of the stack.

Why one module: the dataset viewer, the recording viewer and the live logger must write the same paths with
the same styling, or a blueprint (or a user's saved layout) made for one shows nothing for another. Layout:

- `/cameras/<camera>`                  JPEG images;
- `/joints/<joint>/<kind>`             one scalar series per joint and kind (state, action, target, commanded,
                                       achieved, or a recording extra's name), styled statically with the joint
                                       name in the series name ("left_joint1 state");
- `/chunks/<joint>/<source>/<slot>`    predicted action chunks drawn as fans ahead of their observation time
                                       (see `replay.view.chunks`); `source` is "chunk" for the policy's chunks;
- `/norm/<joint>/<name>`               the server's normalized extents per joint; `/norm/warnings` TextLog of
                                       server warnings and normalization anomalies;
- `/signals/<name>`                    scalar diagnostics (chunk delay, holding, time since the last action...);
- `/events`                            TextLog of holds, resumes, e-stops, faults and episode boundaries;
- `/robot/<body>`                      the arms in 3D: one world pose (Transform3D) per body, its geometry below.

Timelines: `step` (frame index at the policy rate) and `time` (seconds since the episode or session start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import rerun as rr
import rerun.blueprint as rrb
import rerun.blueprint.components as rrbc

STEP = "step"
TIME = "time"

CAMERAS = "/cameras"
JOINTS = "/joints"
CHUNKS = "/chunks"
NORM = "/norm"
NORM_WARNINGS = "/norm/warnings"
SIGNALS = "/signals"
EVENTS = "/events"
ROBOT = "/robot"

STATE = "state"
ACTION = "action"
TARGET = "target"
COMMANDED = "commanded"
ACHIEVED = "achieved"
POLICY_CHUNK = "chunk"

Rgba = tuple[int, int, int, int]

# Fixed colours for the kinds every view has, so "orange = action" holds across plots and sessions.
_KIND_COLORS: dict[str, Rgba] = {
    STATE: (31, 119, 180, 255),
    ACTION: (255, 127, 14, 255),
    TARGET: (44, 160, 44, 255),
    COMMANDED: (148, 103, 189, 255),
    ACHIEVED: (23, 190, 207, 255),
}
_OTHER_COLORS: tuple[Rgba, ...] = (
    (214, 39, 40, 255),
    (140, 86, 75, 255),
    (227, 119, 194, 255),
    (188, 189, 34, 255),
    (127, 127, 127, 255),
)
# Fans are drawn thin and translucent over the action line they predict.
CHUNK_COLOR: Rgba = (255, 127, 14, 110)
CHUNK_WIDTH = 1.0


def part(name: str) -> str:
    """One entity-path part; names from datasets may hold characters that rerun treats as separators."""
    return str(rr.escape_entity_path_part(name))


def camera_path(camera: str) -> str:
    return f"{CAMERAS}/{part(camera)}"


def joint_path(joint: str, kind: str) -> str:
    return f"{JOINTS}/{part(joint)}/{part(kind)}"


def chunk_path(joint: str, source: str, slot: int) -> str:
    return f"{CHUNKS}/{part(joint)}/{part(source)}/{slot}"


def norm_path(joint: str, name: str) -> str:
    return f"{NORM}/{part(joint)}/{part(name)}"


def signal_path(name: str) -> str:
    return f"{SIGNALS}/{part(name)}"


def body_path(body: str) -> str:
    return f"{ROBOT}/{part(body)}"


def series_color(kind: str) -> Rgba:
    """The kind's fixed colour, or a stable colour from the spare palette for kinds named by a recording."""
    if kind in _KIND_COLORS:
        return _KIND_COLORS[kind]
    return _OTHER_COLORS[sum(kind.encode()) % len(_OTHER_COLORS)]


def series_style(joint: str, kind: str) -> rr.SeriesLines:
    """Static styling of one joint series; the legend reads "<joint> <kind>"."""
    return rr.SeriesLines(names=f"{joint} {kind}", colors=series_color(kind), widths=1.5)


def chunk_style(joint: str, source: str) -> rr.SeriesLines:
    return rr.SeriesLines(names=f"{joint} {source}", colors=CHUNK_COLOR, widths=CHUNK_WIDTH)


def joint_groups(names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Joints grouped per arm by their name prefix ("left_joint1" -> "left"), in dataset order.

    Names without a common "<arm>_" shape (e.g. generated "action_0") form a single group "joints".
    """
    prefixes = [n.split("_", 1)[0] if "_" in n else "" for n in names]
    distinct = list(dict.fromkeys(prefixes))
    if "" in distinct or len(distinct) < 2 or len(distinct) > 4:
        return {"joints": tuple(names)}
    return {p: tuple(n for n, q in zip(names, prefixes, strict=True) if q == p) for p in distinct}


@dataclass(frozen=True)
class ViewContent:
    """What a view holds, so the blueprint only lays out panels that will have data."""

    joint_names: tuple[str, ...]
    camera_names: tuple[str, ...] = ()
    # Cameras not known in advance (live): one 2D view of everything under /cameras.
    any_cameras: bool = False
    robot: bool = True
    signals: bool = True
    norm: bool = False
    # Live views follow "now": plots show this many seconds before the cursor and the fan horizon after it.
    follow_window_s: float | None = None
    follow_ahead_s: float = 2.0


def _time_ranges(content: ViewContent) -> rrb.VisibleTimeRange | None:
    if content.follow_window_s is None:
        return None
    return rrb.VisibleTimeRange(
        TIME,
        start=rrb.TimeRangeBoundary.cursor_relative(seconds=-content.follow_window_s),
        end=rrb.TimeRangeBoundary.cursor_relative(seconds=content.follow_ahead_s),
    )


def _joint_view(joint: str, content: ViewContent) -> rrb.TimeSeriesView:
    return rrb.TimeSeriesView(
        name=joint,
        origin=f"{JOINTS}/{part(joint)}",
        contents=[f"{JOINTS}/{part(joint)}/**", f"{CHUNKS}/{part(joint)}/**"],
        axis_x=rrb.TimeAxis(link=rrbc.LinkAxis.LinkToGlobal),
        plot_legend=rrb.PlotLegend(visible=False),
        time_ranges=_time_ranges(content),
    )


def build_blueprint(content: ViewContent) -> rrb.Blueprint:
    """Cameras and the 3D arms on the left; per-arm tabs of per-joint plots, diagnostics and logs on the right.

    One plot per joint keeps state, action, commands and the chunk fans of that joint readable together; the
    plots share their time axis so zooming one zooms all.
    """
    left: list[rrb.Container | rrb.View] = []
    if content.camera_names:
        left.append(
            rrb.Grid(*(rrb.Spatial2DView(name=c, origin=camera_path(c)) for c in content.camera_names))
        )
    elif content.any_cameras:
        left.append(rrb.Spatial2DView(name="cameras", origin=CAMERAS))
    if content.robot:
        left.append(rrb.Spatial3DView(name="robot", origin=ROBOT))
    tabs: list[rrb.Container | rrb.View] = [
        rrb.Grid(*(_joint_view(j, content) for j in joints), name=group, grid_columns=2)
        for group, joints in joint_groups(content.joint_names).items()
    ]
    if content.signals:
        tabs.append(rrb.TimeSeriesView(name="signals", origin=SIGNALS, time_ranges=_time_ranges(content)))
    if content.norm:
        tabs.append(
            rrb.TimeSeriesView(
                name="normalization",
                origin=NORM,
                contents=[f"{NORM}/**", f"- {NORM_WARNINGS}"],
                time_ranges=_time_ranges(content),
            )
        )
    logs = rrb.Horizontal(
        rrb.TextLogView(name="events", origin=EVENTS),
        rrb.TextLogView(name="server warnings", origin=NORM_WARNINGS),
    )
    right = rrb.Vertical(rrb.Tabs(*tabs), logs, row_shares=[3, 1])
    if not left:
        return rrb.Blueprint(right, collapse_panels=False)
    return rrb.Blueprint(
        rrb.Horizontal(rrb.Vertical(*left), right, column_shares=[2, 3]), collapse_panels=False
    )
