"""Markdown sections of the doctor report: per-dimension statistics, arms, state bins, reconstruction error.

Why separate from `doctor_report`: these are plain tables over results the checks already computed; keeping
them here keeps the report writer about layout and plots, and lets each table change without touching it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from replay.doctor.arms import ARMS, ArmResult
from replay.doctor.bins import BinCoverage
from replay.doctor.raw import DoctorEpisode
from replay.doctor.recon import ReconResult


def stats_section(episodes: Sequence[DoctorEpisode], state_names: Sequence[str],
                  action_names: Sequence[str]) -> list[str]:
    """min / 1% / median / 99% / max / mean / std per dim over every finite frame."""
    if not episodes:
        return []
    lines = ["## Per-dimension statistics", "", "| feature | dim | min | 1% | median | 99% | max | mean | std | "
             "non-finite |", "|---|---|---|---|---|---|---|---|---|---|"]
    for feature, names, arrays in (("state", state_names, [ep.states for ep in episodes]),
                                   ("action", action_names, [ep.actions for ep in episodes])):
        data = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays])
        for j, name in enumerate(names):
            col: npt.NDArray[np.float64] = data[:, j]
            good = col[np.isfinite(col)]
            bad = col.size - good.size
            if good.size == 0:
                lines.append(f"| {feature} | {name} | - | - | - | - | - | - | - | {bad} |")
                continue
            q = np.quantile(good, [0.0, 0.01, 0.5, 0.99, 1.0])
            lines.append(f"| {feature} | {name} | " + " | ".join(f"{v:.4g}" for v in q)
                         + f" | {good.mean():.4g} | {good.std():.4g} | {bad} |")
    return lines + [""]


def arms_section(arms: ArmResult | None) -> list[str]:
    if arms is None:
        return []
    lines = ["## Left/right arms", "",
             "Tracking error of each arm's actions against each arm's state (median over joints "
             f"{', '.join(arms.layout.suffixes)} of min over lags of median |error|, absolute or delta form, relative "
             "to the joint's range; lower = tracks better). The diagonal should be far below the off-diagonal.", "",
             "| actions \\ state | " + " | ".join(f"{s}_*" for s in ARMS) + " | state range | action range |",
             "|---|---|---|---|---|"]
    for a in ARMS:
        lines.append(f"| {a}_* | " + " | ".join(f"{arms.error[a][s]:.3g}" for s in ARMS)
                     + f" | {arms.state_spread[a]:.3g} | {arms.action_spread[a]:.3g} |")
    return lines + [""]


def bins_section(bins: BinCoverage | None) -> list[str]:
    if bins is None:
        return []
    lines = ["## State bin coverage", "",
             f"{bins.frames} frames' states normalized with the checkpoint's stats and cut into the model's "
             f"{bins.bins} prompt bins.", "",
             "| dim | bins used | lowest..highest | below -1 (bin -1) | above +1 (top bin) | note |",
             "|---|---|---|---|---|---|"]
    for d in bins.dims:
        lines.append(f"| {d.name} | {d.bins_used} / {bins.bins} | {d.lowest}..{d.highest} | {d.frac_below:.1%} | "
                     f"{d.frac_above:.1%} | {d.skipped} |")
    return lines + [""]


def recon_section(recon: ReconResult | None) -> list[str]:
    if recon is None:
        return []
    lines = ["## Action reconstruction error", "",
             f"Policy: {recon.source}. {recon.frames} sampled frame(s); each returned {recon.horizon}-step chunk is "
             "compared with the dataset's next actions (padded with the episode's last action). Raw units (rad; "
             f"gripper 0..1). Warning threshold on the first-action L1: {recon.warn_first_l1:g}.", "",
             "| joint | first action L1 | first action RMS | chunk L1 | chunk RMS |", "|---|---|---|---|---|"]
    for j, name in enumerate(recon.action_names):
        flag = " **(above threshold)**" if recon.first_l1[j] > recon.warn_first_l1 else ""
        lines.append(f"| {name} | {recon.first_l1[j]:.4g}{flag} | {recon.first_rms[j]:.4g} | "
                     f"{recon.chunk_l1[j]:.4g} | {recon.chunk_rms[j]:.4g} |")
    lines += ["", "Worst frames (largest per-joint chunk L1):", "",
              "| episode | frame | joint | chunk L1 | first action error |", "|---|---|---|---|---|"]
    lines += [f"| {w.episode} | {w.frame} | {w.joint} | {w.chunk_l1:.4g} | {w.first_error:.4g} |"
              for w in recon.worst]
    return lines + [""]
