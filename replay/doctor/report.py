"""The doctor's outputs: a markdown report, PNG plots and findings.json in --out.

Why files: a dataset problem is argued about by people who did not run the command; the report carries the
findings with the numbers, and the plots show what the numbers mean (state vs action per joint, lag curves,
normalized ranges against [-1, 1], frame intervals, state bin coverage, reconstruction error).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen before pyplot is imported
import numpy as np
import numpy.typing as npt

from policy_norm.modes import NormMode
from replay.doctor.arms import ArmResult
from replay.doctor.bins import BinCoverage
from replay.doctor.checks import LagResult, lag_ms
from replay.doctor.findings import SEVERITIES, Finding, count
from replay.doctor.norm import NormSection
from replay.doctor.plots import plot_bins, plot_recon
from replay.doctor.raw import DoctorEpisode
from replay.doctor.recon import ReconResult
from replay.doctor.sections import arms_section, bins_section, recon_section, stats_section
from robodata.dataset import DatasetInfo


@dataclass(frozen=True)
class ReportInputs:
    info: DatasetInfo
    episodes: Sequence[DoctorEpisode]
    findings: Sequence[Finding]
    lag: LagResult | None
    dts: dict[int, npt.NDArray[np.float64]]
    norm: NormSection | None
    checkpoint: str | None
    arms: ArmResult | None = None
    bins: BinCoverage | None = None
    recon: ReconResult | None = None


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, max(1, n))
    return (n + cols - 1) // cols, cols


def plot_episode(ep: DoctorEpisode, info: DatasetInfo, state_index: Sequence[int], path: Path) -> Path:
    rows, cols = _grid(info.action_dim)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows), squeeze=False)
    t = np.arange(len(ep))
    for j, name in enumerate(info.action_names):
        ax = axes[j // cols][j % cols]
        ax.plot(t, ep.actions[:, j], label="action", lw=1.2)
        if state_index[j] >= 0:
            ax.plot(t, ep.states[:, state_index[j]], label="state", lw=1.0, alpha=0.8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for k in range(info.action_dim, rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"episode {ep.index}: action vs state per joint (frames)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_lag(lag: LagResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    ks = np.arange(-lag.max_lag, lag.max_lag + 1)
    for name, curve in lag.curves.items():
        ax.plot(ks, curve, lw=1, label=f"{name} ({lag.lags[name]:+d})")
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("k (frames): corr(diff action[t], diff state[t + k])")
    ax.set_ylabel("correlation")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_normalized(norm: NormSection, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, feature in zip(axes, ("state", "actions"), strict=True):
        metrics = norm.data.metrics.get(feature, ())
        names = norm.pipeline.resolved.state.names if feature == "state" else norm.pipeline.resolved.actions.names
        y = np.arange(len(metrics))
        if norm.pipeline.mode == NormMode.ZSCORE:
            lo = [m.n_mean - m.n_std for m in metrics]
            hi = [m.n_mean + m.n_std for m in metrics]
            band = "mean +/- std"
        else:
            lo = [m.n_lo for m in metrics]
            hi = [m.n_hi for m in metrics]
            band = "1%..99%"
        ax.barh(y, np.subtract(hi, lo), left=lo, color="tab:blue", alpha=0.6)
        ax.axvspan(-1, 1, color="tab:green", alpha=0.12)
        ax.axvline(-1, color="tab:green", lw=0.8)
        ax.axvline(1, color="tab:green", lw=0.8)
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{feature}: normalized {band} (green: [-1, 1])", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_intervals(dts: dict[int, npt.NDArray[np.float64]], fps: float, path: Path, max_episodes: int = 20) -> Path:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for index in list(dts)[:max_episodes]:
        ax.plot(dts[index] * 1e3, lw=0.8, label=f"ep {index}")
    ax.axhline(1e3 / fps, color="k", lw=0.6, ls="--")
    ax.set_xlabel("frame")
    ax.set_ylabel("interval (ms)")
    ax.set_title(f"frame intervals (dashed: 1/fps at {fps:g} fps)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_plots(inputs: ReportInputs, out: Path, state_index: Sequence[int]) -> list[Path]:
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    usable = [ep for ep in inputs.episodes if len(ep) > 1]
    if usable:
        made.append(plot_episode(usable[0], inputs.info, state_index, plots / f"episode_{usable[0].index}.png"))
    if inputs.lag is not None and inputs.lag.curves:
        made.append(plot_lag(inputs.lag, plots / "lag.png"))
    if inputs.norm is not None:
        made.append(plot_normalized(inputs.norm, plots / "normalized_ranges.png"))
    if inputs.dts:
        made.append(plot_intervals(inputs.dts, inputs.info.fps, plots / "frame_intervals.png"))
    if inputs.bins is not None:
        made.append(plot_bins(inputs.bins, plots / "state_bins.png"))
    if inputs.recon is not None:
        made.append(plot_recon(inputs.recon, plots / "reconstruction_error.png"))
    return made


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_markdown(inputs: ReportInputs, out: Path, plots: Sequence[Path]) -> Path:
    info = inputs.info
    f = list(inputs.findings)
    lines = [
        "# Data doctor report",
        "",
        f"- dataset: `{info.path}` ({info.format}), {info.num_episodes} episodes, {info.num_frames} frames, "
        f"{info.fps:g} fps",
        f"- checkpoint: `{inputs.checkpoint}`" if inputs.checkpoint else "- checkpoint: none (data-only checks)",
        f"- findings: {count(f, 'error')} error(s), {count(f, 'warning')} warning(s), {count(f, 'info')} info",
        "",
    ]
    for severity in SEVERITIES:
        group = [x for x in f if x.severity == severity]
        if not group:
            continue
        lines += [f"## {severity.capitalize()}s", "", "| code | where | message |", "|---|---|---|"]
        lines += [f"| `{x.code}` | {_md_escape(x.where)} | {_md_escape(x.message)} |" for x in group]
        lines.append("")
    if inputs.norm is not None:
        norm = inputs.norm
        lines += ["## Normalization", "", f"config: {norm.config_source}", "", "```", norm.pipeline.describe(), "```",
                  "", f"Sample of {norm.data.samples} rows normalized with the checkpoint's stats:", "",
                  "| feature | joint | data 1% | data 99% | norm 1% | norm 99% | norm mean | norm std | "
                  "outside [-1,1] |", "|---|---|---|---|---|---|---|---|---|"]
        for feature in ("state", "actions"):
            nz = norm.pipeline.resolved.state if feature == "state" else norm.pipeline.resolved.actions
            for name, m in zip(nz.names, norm.data.metrics.get(feature, ()), strict=False):
                lines.append(f"| {feature} | {name} | {m.raw_lo:.4g} | {m.raw_hi:.4g} | {m.n_lo:+.3f} | "
                             f"{m.n_hi:+.3f} | {m.n_mean:+.3f} | {m.n_std:.3f} | {m.frac_outside:.1%} |")
        lines.append("")
    if inputs.lag is not None and inputs.lag.lags:
        lines += ["## Action-to-state lag", "", f"Estimated by cross-correlation at {info.fps:g} fps; positive: the "
                  "state trails the action.", "", "| joint | lag (frames) | lag (ms) | peak correlation |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {v:+d} | {lag_ms(v, info.fps):+.0f} | {inputs.lag.peaks[k]:.2f} |"
                  for k, v in inputs.lag.lags.items()]
        lines.append("")
    lines += arms_section(inputs.arms) + bins_section(inputs.bins) + recon_section(inputs.recon)
    lines += stats_section(inputs.episodes, info.state_names, info.action_names)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in plots]
        lines.append("")
    if info.notes:
        lines += ["## Reader notes", ""] + [f"- {n}" for n in info.notes] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    (out / "findings.json").write_text(json.dumps([x.as_dict() for x in f], indent=2) + "\n")
    return path
