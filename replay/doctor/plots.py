"""PNG plots for the state-bin coverage and the reconstruction error (the report's other plots are in
`doctor_report`).

Why plots for these: a table of 14 bin counts hides which joints the model is blind to; a bar chart against
the 256 available bins shows it at a glance, and the reconstruction error per chunk step shows whether a
policy is off from the first action (stats, conventions) or only drifts late in the chunk (the model).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen before pyplot is imported
import numpy as np

from replay.doctor.bins import BinCoverage
from replay.doctor.recon import ReconResult


def plot_bins(bins: BinCoverage, path: Path) -> Path:
    names = [d.name for d in bins.dims]
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.3 * len(names) + 1.8), squeeze=False)
    used, clip = axes[0]
    used.barh(y, [d.bins_used for d in bins.dims], color="tab:blue", alpha=0.7)
    used.set_xlim(0, bins.bins)
    used.set_title(f"distinct state bins used (of {bins.bins})", fontsize=9)
    clip.barh(y - 0.2, [100 * d.frac_below for d in bins.dims], height=0.4, label="below -1 (bin -1)")
    clip.barh(y + 0.2, [100 * d.frac_above for d in bins.dims], height=0.4, label=f"above +1 (bin {bins.bins - 1})")
    clip.set_title("frames clipped (%)", fontsize=9)
    clip.legend(fontsize=7)
    for ax in (used, clip):
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_recon(recon: ReconResult, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
    per_joint, per_step = axes[0]
    y = np.arange(len(recon.action_names))
    per_joint.barh(y - 0.2, recon.first_l1, height=0.4, label="first action L1")
    per_joint.barh(y + 0.2, recon.chunk_l1, height=0.4, label="chunk L1")
    per_joint.axvline(recon.warn_first_l1, color="tab:red", lw=0.8, ls="--")
    per_joint.set_yticks(y, recon.action_names, fontsize=7)
    per_joint.invert_yaxis()
    per_joint.set_title("reconstruction error per joint (raw units; dashed: warning threshold)", fontsize=9)
    per_joint.legend(fontsize=7)
    per_step.plot(np.arange(recon.horizon), recon.step_l1, marker=".")
    per_step.set_xlabel("chunk step")
    per_step.set_title("mean |error| over joints and frames per chunk step", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
