"""The replay's files in --out: report.md, plots (target vs command vs achieved per joint, error over time) and
trace.npz (the per-tick arrays), so a sim run and a real run of the same episode can be compared afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen before pyplot is imported
import numpy as np

from replay.arm_replay.metrics import ReplayMetrics, format_metrics
from replay.arm_replay.plan import ReplayPlan
from replay.arm_replay.preview import Preview, format_preview
from replay.arm_replay.run import ReplayTrace


@dataclass(frozen=True)
class ReportInputs:
    mode: str  # "sim" | "real"
    dataset: str
    plan: ReplayPlan
    trace: ReplayTrace
    metrics: ReplayMetrics
    preview: Preview | None = None
    robot: str = ""


def _grid(n: int) -> tuple[int, int]:
    cols = 2 if n > 4 else 1
    return (n + cols - 1) // cols, cols


def plot_joints(trace: ReplayTrace, plan: ReplayPlan, path: Path) -> Path:
    """Per joint over time: the dataset actions, the servo command and the achieved position."""
    n = len(trace.joint_names)
    rows, cols = _grid(n)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 1.9 * rows), squeeze=False, sharex=True)
    for j, name in enumerate(trace.joint_names):
        # Column-major: with two arms of 7 joints, left arm in the first column, right arm in the second.
        ax = axes[j % rows][j // rows]
        ax.plot(plan.times, plan.actions[:, j], ".", ms=2.5, color="0.4", label="dataset action")
        ax.plot(trace.times, trace.commands[:, j], lw=0.9, label="command")
        ax.plot(trace.times, trace.achieved[:, j], lw=0.9, label="achieved")
        ax.set_title(name, fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    for k in range(n, rows * cols):
        axes[k % rows][k // rows].axis("off")
    axes[0][0].legend(fontsize=7, loc="best")
    for c in range(cols):
        axes[rows - 1][c].set_xlabel("time since the first action (s)", fontsize=8)
    fig.suptitle(f"{plan.dataset_name} episode {plan.episode_index} at speed {plan.speed:g}: target vs achieved",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_errors(trace: ReplayTrace, metrics: ReplayMetrics, path: Path) -> Path:
    """|achieved - dataset action| per joint over time, the evaluation window shaded, the limits dashed."""
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for ax, gripper in zip(axes, (False, True), strict=True):
        for j, jm in enumerate(metrics.joints):
            if jm.gripper == gripper:
                ax.plot(trace.times, np.abs(trace.achieved[:, j] - trace.targets[:, j]), lw=0.8, label=jm.name)
        limit = metrics.thresholds.max_gripper_error if gripper else metrics.thresholds.max_arm_error
        ax.axhline(limit, color="r", ls="--", lw=0.8)
        ax.axvspan(*metrics.window, color="tab:green", alpha=0.08)
        ax.set_ylabel("|achieved - target|", fontsize=8)
        ax.set_title("grippers (0..1)" if gripper else "arm joints (rad)", fontsize=9, loc="left")
        ax.legend(fontsize=6, ncol=4)
        ax.tick_params(labelsize=7)
    axes[1].set_xlabel("time since the first action (s)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def markdown(inputs: ReportInputs, plots: list[Path]) -> str:
    plan, trace, m = inputs.plan, inputs.trace, inputs.metrics
    verdict = "STOPPED (e-stop)" if m.estopped else ("PASS" if m.passed else "FAIL")
    lines = [
        f"# Arm replay ({inputs.mode}): {plan.dataset_name} episode {plan.episode_index}: {verdict}", "",
        f"- dataset: `{inputs.dataset}`; task: {plan.task or '-'}",
        f"- robot: {inputs.robot or '-'}; servo {trace.servo_hz:g} Hz",
        f"- {len(plan.actions)} actions at {plan.fps:g} fps x speed {plan.speed:g}: {plan.duration_s:.2f} s; "
        f"ramp {trace.ramp_s:.2f} s ({trace.ramp_ticks} ticks); {trace.ticks} replay ticks",
        f"- first-action guard: {'far joints ' + str(list(trace.far_joints)) if trace.far_joints else 'ok'}",
        f"- position-limit clamps of targets: {trace.target_clamps or 'none'}; output clamps: "
        f"{trace.output_clamps or 'none'}",
        f"- pass when max |achieved - action| <= {m.thresholds.max_arm_error:g} (arm joints) / "
        f"{m.thresholds.max_gripper_error:g} (grippers) over t in [{m.window[0]:.2f}, {m.window[1]:.2f}] s "
        f"(after a {m.thresholds.settle_s:g} s settle)",
        "", "## Tracking", "",
        "Errors in robot units (rad; grippers 0..1) of achieved vs dataset action at the same instant. `cmd vs "
        "achieved`: achieved vs the servo's command (the motors alone). `aligned`: achieved vs the action "
        f"{m.latency_ms:.0f} ms earlier (the arm joints' median lag), i.e. the motion's shape with the delay taken "
        "out. Lag: achieved behind the action by cross-correlation of per-tick velocities (robodata.lag), in ms and "
        "in dataset frames as played; `cmd lag`: achieved behind the servo command.", "",
        "| joint | mean | p95 | max | limit | cmd vs achieved mean | cmd vs achieved max | aligned mean "
        "| aligned max | lag (ms) | lag (frames) | peak corr | cmd lag (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def opt(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for j in m.joints:
        flag = "" if j.passed else " **FAIL**"
        lines.append(f"| {j.name} | {j.mean:.4f} | {j.p95:.4f} | {j.max:.4f}{flag} | {j.threshold:g} | "
                     f"{j.command_mean:.4f} | {j.command_max:.4f} | {j.aligned_mean:.4f} | {j.aligned_max:.4f} | "
                     f"{opt(j.lag_ms, '.1f')} | "
                     f"{opt(j.lag_frames, '.2f')} | {opt(j.lag_peak, '.2f')} | {opt(j.command_lag_ms, '.1f')} |")
    lines += ["", "```", format_metrics(m), "```"]
    if inputs.preview is not None:
        lines += ["", "## Preview", "", "```", format_preview(inputs.preview), "```"]
    if trace.events:
        lines += ["", "## Loop events", ""] + [f"- {e}" for e in trace.events]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(out: Path, inputs: ReportInputs, *, plots: bool = True) -> Path:
    """Write report.md (+ plots/*.png, trace.npz) into `out`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    if plots and inputs.trace.ticks:
        plot_dir = out / "plots"
        plot_dir.mkdir(exist_ok=True)
        made.append(plot_joints(inputs.trace, inputs.plan, plot_dir / "joints.png"))
        made.append(plot_errors(inputs.trace, inputs.metrics, plot_dir / "tracking_error.png"))
    t = inputs.trace
    np.savez_compressed(out / "trace.npz", times=t.times, targets=t.targets, commands=t.commands,
                        velocities=t.velocities, achieved=t.achieved, joint_names=np.array(t.joint_names),
                        dataset_times=inputs.plan.times, dataset_actions=inputs.plan.actions)
    report = out / "report.md"
    report.write_text(markdown(inputs, made))
    return report
