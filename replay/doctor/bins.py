"""Coverage of Pi0.5's 256 state bins: how much of the state the model can actually read from its prompt.

Why: Pi0.5 sees the robot state only as one discrete token per dim (the normalized value cut into 256 bins over
[-1, 1]). When the checkpoint's stats are much wider than the data, a joint's whole motion lands in a handful
of bins and the model is effectively blind to it; when they are narrower, many frames fall outside [-1, 1] into
bin -1 or the top bin and lose their value (the trainers bin them so too: nothing is clipped). Both are invisible
in the normalized floats and obvious in the bins. The normalization and the discretization are the normalization
module's own (`NormalizationPipeline.normalize_states`, `numeric.discretize_state`) at the precision the server
runs them (`served_bins`), so the bins are exactly the ones the server puts into the prompt.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policy_norm.numeric import discretize_state
from policy_norm.pipeline import NormalizationPipeline
from replay.doctor.findings import Finding

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class BinThresholds:
    """min_bins: warn when a dim's states occupy fewer distinct bins than this while the raw data has at least
    as many distinct values (a truly discrete dim, like a binary gripper, is not information lost by binning).
    clip_fraction: warn when more than this fraction of a dim's frames fall outside [-1, 1] (bin -1 or the top
    bin)."""

    min_bins: int = 16
    clip_fraction: float = 0.05


@dataclass(frozen=True)
class DimCoverage:
    index: int
    name: str
    bins_used: int
    lowest: int
    highest: int
    frac_below: float  # normalized < -1: bin -1
    frac_above: float  # normalized > +1: the top bin
    raw_distinct: int
    skipped: str  # "" or why the dim is not judged ("degenerate in the stats")

    @property
    def where(self) -> str:
        return f"state[{self.index}] ({self.name})"


@dataclass(frozen=True)
class BinCoverage:
    bins: int
    frames: int
    dims: tuple[DimCoverage, ...]


def served_bins(pipeline: NormalizationPipeline, states: F64) -> tuple[I64, Bools, Bools]:
    """The prompt bins `pipeline.prepare` gives each state row [N, state_dim] on the server, and which normalized
    values fall below -1 / above +1 (bin -1 / the top bin).

    The server's roundings, at array speed: the state arrives as float32 (the wire's dtype) and the normalize
    step hands float32 to the discretization. Rounded the same way here, a value cannot land on the other side
    of a bin edge than on the server (a float64 path can). `prepare` itself is not called per frame: it builds a
    report for each (~0.2 ms), minutes over a large dataset, and a strict pipeline would refuse the very frames
    this counts."""
    wire = np.asarray(states, dtype=np.float32)
    normalized = pipeline.normalize_states(wire).astype(np.float32)
    return discretize_state(normalized, pipeline.config.state_bins)


def bin_coverage(pipeline: NormalizationPipeline, states: F64) -> BinCoverage | None:
    """Per state dim: distinct bins over every finite frame, and the fractions outside [-1, 1] at each end.

    None when the model takes no discrete state (state_bins = 0)."""
    bins = pipeline.config.state_bins
    if bins == 0:
        return None
    rows = states[np.isfinite(states).all(axis=1)]
    k, below, above = served_bins(pipeline, rows)
    nz = pipeline.resolved.state
    dims = []
    for i, name in enumerate(nz.names):
        n = max(rows.shape[0], 1)
        used = np.unique(k[:, i]) if rows.shape[0] else np.zeros(0, dtype=np.int64)
        dims.append(DimCoverage(
            index=i, name=name, bins_used=int(used.size),
            lowest=int(used.min()) if used.size else 0, highest=int(used.max()) if used.size else 0,
            frac_below=float(below[:, i].sum()) / n, frac_above=float(above[:, i].sum()) / n,
            raw_distinct=int(np.unique(rows[:, i]).size),
            skipped="degenerate in the stats" if nz.degenerate[i] else "",
        ))
    return BinCoverage(bins, int(rows.shape[0]), tuple(dims))


def bin_findings(coverage: BinCoverage, th: BinThresholds, clipping_reported: Collection[str] = (),
                 as_trained: Collection[str] = ()) -> list[Finding]:
    """Few bins used (warning), many frames outside [-1, 1] (warning, unless `clipping_reported` already names the dim),
    and one info line summarizing coverage. `as_trained`: dims whose bins are what training produced from the same
    values (quantiles narrower than the training data, the values inside its range; the data check says so in an
    INFO): neither warning applies to them."""
    out: list[Finding] = []
    top = coverage.bins - 1
    judged = [d for d in coverage.dims if not d.skipped]
    for d in judged:
        if d.where in as_trained:
            continue
        if d.bins_used < th.min_bins and d.raw_distinct >= th.min_bins:
            out.append(Finding(
                "warning", "state_bins_few", d.where,
                f"state bins: {d.name} occupies only {d.bins_used} of {coverage.bins} bins (bins "
                f"{d.lowest}..{d.highest}, {d.raw_distinct} distinct raw values, threshold {th.min_bins}): the state "
                f"token carries almost no information about this joint; are the stats much wider than the data?",
            ))
        clipped = d.frac_below + d.frac_above
        if clipped > th.clip_fraction and d.where not in clipping_reported:
            out.append(Finding(
                "warning", "state_bins_out_of_range", d.where,
                f"state bins: {clipped:.1%} of {d.name} frames fall outside [-1, 1] ({d.frac_below:.1%} below -1 in "
                f"bin -1, {d.frac_above:.1%} above +1 in bin {top}; threshold {th.clip_fraction:.0%}): the stats are "
                f"narrower than the data",
            ))
    if judged:
        worst = min(judged, key=lambda d: d.bins_used)
        out.append(Finding(
            "info", "state_bin_coverage", "state",
            f"{coverage.frames} frames use {worst.bins_used}..{max(d.bins_used for d in judged)} of "
            f"{coverage.bins} state bins per dim (fewest: {worst.name}); max outside [-1, 1] "
            f"{max(d.frac_below + d.frac_above for d in judged):.1%}",
        ))
    return out
