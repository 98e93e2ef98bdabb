"""PNG plots of an oracle comparison.

Why these three: error against chunk step per joint separates a policy that is off from the first action
(stats, conventions: a flat offset) from one that drifts late in the chunk (the model); error over the
compared frames shows whether it is everywhere or in a few moments of a few episodes; and the predicted
against ground-truth chunks of the worst frames show what the arm would actually have done there.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen before pyplot is imported
import numpy as np

from replay.oracle.result import OracleResult

DPI = 80


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = plt.get_cmap("tab20")
    return [cmap(i % 20) for i in range(n)]


def plot_error_vs_step(r: OracleResult, path: Path) -> Path:
    panels = [("raw units (rad, gripper 0..1)", r.raw.step_joint_l1)]
    if r.normalized is not None:
        panels.append(("normalized units", r.normalized.step_joint_l1))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    steps = np.arange(r.horizon)
    for ax, (title, values) in zip(axes[0], panels, strict=True):
        for j, (name, color) in enumerate(zip(r.action_names, _colors(len(r.action_names)), strict=True)):
            ax.plot(steps, values[:, j], color=color, lw=1.0, label=name)
        ax.set_xlabel("chunk step")
        ax.set_ylabel("mean |error|")
        ax.set_title(f"error vs chunk step per joint, {title}", fontsize=9)
    axes[0][-1].legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_error_over_frames(r: OracleResult, path: Path) -> Path:
    fig, (line, heat) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    x = np.arange(r.frames)
    first = np.abs(r.errors[:, 0]).mean(axis=1)
    line.plot(x, r.raw.frame_l1, marker=".", ms=3, lw=0.8, label="chunk L1 (mean over joints)")
    line.plot(x, first, marker=".", ms=3, lw=0.8, label="first-action L1")
    episodes = [e for e, _ in r.located]
    bounds = [n for n in range(1, r.frames) if episodes[n] != episodes[n - 1]]
    for n in bounds:
        line.axvline(n - 0.5, color="grey", lw=0.6, ls=":")
        heat.axvline(n - 0.5, color="white", lw=0.6)
    line.ticklabel_format(axis="y", useOffset=False)
    top = float(np.nanmax(np.concatenate([r.raw.frame_l1, first]))) if r.frames else 0.0
    line.set_ylim(0.0, 1.15 * top if top > 0 else 1.0)
    line.set_ylabel("mean |error| (raw)")
    line.set_title("error over the compared frames (dotted: episode boundaries)", fontsize=9)
    line.legend(fontsize=7)
    image = heat.imshow(r.raw.frame_joint_l1.T, aspect="auto", interpolation="nearest", cmap="magma")
    heat.set_yticks(np.arange(len(r.action_names)), r.action_names, fontsize=6)
    heat.set_xlabel("compared frame (in episode order)")
    # Below the heatmap, not beside it, so both panels keep the same width and the frames line up.
    fig.colorbar(image, ax=heat, label="chunk L1 per joint (raw)", orientation="horizontal", fraction=0.06,
                 pad=0.18)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_worst_frame(r: OracleResult, rank: int, path: Path) -> Path:
    w = r.worst_frames[rank]
    pair = r.chunk_pair(w.episode, w.frame)
    cols = 7 if len(r.action_names) > 7 else len(r.action_names)
    rows = -(-len(r.action_names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.9 * rows + 0.6), squeeze=False, sharex=True)
    steps = np.arange(r.horizon)
    for j, name in enumerate(r.action_names):
        ax = axes[j // cols][j % cols]
        ax.plot(steps, pair.truth[:, j], color="black", lw=1.0, ls="--", label="dataset")
        ax.plot(steps, pair.predicted[:, j], color="tab:red" if name == w.joint else "tab:blue", lw=1.0,
                label="policy")
        if pair.valid < r.horizon:
            ax.axvspan(pair.valid - 0.5, r.horizon - 0.5, color="grey", alpha=0.2, lw=0)
        ax.set_title(name, fontsize=7, color="tab:red" if name == w.joint else "black")
        if j // cols == rows - 1:
            ax.set_xlabel("chunk step", fontsize=7)
        ax.tick_params(labelsize=6)
    for j in range(len(r.action_names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"worst frame #{rank + 1}: episode {w.episode} frame {w.frame} ({w.joint} chunk L1 "
                 f"{w.chunk_l1:.3g}); grey: padded ground truth", fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.86, wspace=0.45, hspace=0.35)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_plots(r: OracleResult, directory: Path, worst: int = 3) -> list[Path]:
    """error_vs_step.png, error_over_frames.png and worst_frame_<k>.png for the `worst` worst frames."""
    directory.mkdir(parents=True, exist_ok=True)
    made = [plot_error_vs_step(r, directory / "error_vs_step.png"),
            plot_error_over_frames(r, directory / "error_over_frames.png")]
    for k in range(min(worst, len(r.worst_frames))):
        made.append(plot_worst_frame(r, k, directory / f"worst_frame_{k + 1}.png"))
    return made
