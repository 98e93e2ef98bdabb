"""The check's markdown report: verdict, findings, and the rig and dataset side by side (joints, cameras, timing).

Why both sides and not only the findings: an operator deciding whether a warning matters needs the numbers it
was judged on (a joint range next to its limits, both resolutions, both latencies).
"""

from __future__ import annotations

import numpy as np

from calibration.check import EXIT_CLEAN, EXIT_WARNINGS, CheckResult
from calibration.check_joints import column_map
from calibration.check_timing import TimingThresholds, dataset_lag_ms
from replay.doctor.findings import count

VERDICTS = {EXIT_CLEAN: "clean", EXIT_WARNINGS: "warnings"}


def _span(values: np.ndarray) -> str:
    return f"{float(values.min()):.3f} .. {float(values.max()):.3f}" if values.size else "-"


def render_markdown(result: CheckResult) -> str:
    rig, data = result.rig, result.data
    f = result.findings
    lines = [
        f"# Rig check: {rig.config.name} ({rig.robot_kind}) vs {data.path}",
        "",
        f"Verdict: **{VERDICTS.get(result.exit_code, 'mismatches')}** (exit {result.exit_code}): "
        f"{count(f, 'error')} error(s), {count(f, 'warning')} warning(s), {count(f, 'info')} note(s).",
        "",
        "## Findings",
        "",
        "| severity | code | where | message |",
        "|---|---|---|---|",
    ]
    lines += [f"| {x.severity} | {x.code} | {x.where} | {x.message.replace('|', '/')} |" for x in f]
    lines += ["", "## Joints", "", "| joint | config limits | dataset states | dataset actions | episode starts |",
              "|---|---|---|---|---|"]
    s_cols, _ = column_map(rig.config.joint_names, data.state_names)
    a_cols, _ = column_map(rig.config.joint_names, data.action_names)
    for joint in rig.config.joint_names:
        lim = rig.config.limits[joint]
        states = data.states[:, s_cols[joint]] if joint in s_cols and data.states.size else np.zeros(0)
        actions = data.actions[:, a_cols[joint]] if joint in a_cols and data.actions.size else np.zeros(0)
        starts = np.array([s[s_cols[joint]] for _, s in data.starts]) if joint in s_cols else np.zeros(0)
        lines.append(f"| {joint} | {lim.lower:g} .. {lim.upper:g} | {_span(states)} | {_span(actions)} | "
                     f"{_span(starts)} |")
    lines += ["", "## Cameras", "", "| camera | dataset (WxH) | rig (WxH, source) | calibration (WxH) |",
              "|---|---|---|---|"]
    names = [c.name for c in data.cameras] + [c.name for c in rig.cameras if c.name not in
                                               {d.name for d in data.cameras}]
    for name in names:
        d = next((c for c in data.cameras if c.name == name), None)
        r = rig.camera(name)
        cal = rig.calibration.cameras.get(name) if rig.calibration is not None else None
        lines.append(f"| {name} | {f'{d.width}x{d.height}' if d else '-'} | "
                     f"{f'{r.width}x{r.height} ({r.source})' if r else '-'} | "
                     f"{f'{cal.width}x{cal.height}' if cal else '-'} |")
    lag = dataset_lag_ms(data, TimingThresholds())
    latency = rig.calibration.latency if rig.calibration is not None else None
    c2m = latency.command_to_motion_ms if latency is not None else None
    lines += [
        "", "## Timing", "",
        f"- dataset fps: {data.fps:g}; client control rate: "
        f"{f'{rig.control_fps:g} ({rig.control_fps_source})' if rig.control_fps else 'not given'}; "
        f"servo {rig.config.servo_hz:g} Hz",
        f"- dataset action-to-state lag: {f'{lag[0]:.0f} ms over {lag[1]} joints' if lag else 'not measured'}; "
        f"rig command-to-motion latency: {f'{c2m:.1f} ms' if c2m is not None else 'not measured'}",
    ]
    if latency is not None and latency.camera_ms:
        lines.append("- rig camera latency: " + ", ".join(f"{k} {v:.0f} ms" for k, v in latency.camera_ms.items()))
    return "\n".join(lines) + "\n"
