"""Action reconstruction error: how far a policy's chunks are from the dataset's own actions, in robot units.

Why: the normalization checks say whether the checkpoint's stats fit the data; this says whether the whole
chain (stats, delta mask, gripper convention, image preprocessing, the weights) reproduces the demonstrations
it was trained on. Each sampled frame's observation goes to the policy; the returned chunk [H, A] is compared
with the dataset's next H actions (padded with the episode's last action past its end, as the dataset policy
does, and the padded rows counted like real ones here), giving per-joint L1 and RMS over the whole chunk and
for the first action, in raw units (rad, gripper 0..1). The dataset policy served on the same dataset must give
exactly 0: anything else is the deploy path.

The asking and comparing is the oracle's (`replay.oracle.core`, `replay.oracle.command`): this module only picks the
frames (skipping ones whose stored state is not finite), and turns the result into findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from replay.doctor.findings import Finding
from replay.doctor.raw import DoctorEpisode
from replay.oracle.command import OracleOptions, summarize
from replay.oracle.core import Alignment, OracleError, align, collect, thin
from replay.oracle.result import PADDED_INCLUDE
from replay.oracle.sources import ChunkSource, LocalModelSource, ServerSource
from replay.oracle.stats import WorstFrame
from robodata.dataset import Dataset

F64 = npt.NDArray[np.float64]

__all__ = ["ReconRequest", "ReconResult", "WorstFrame", "open_source", "recon_findings", "reconstruction",
           "request_problem", "sample_frames"]


@dataclass(frozen=True)
class ReconRequest:
    """Which policy to ask (a server HOST:PORT, or a checkpoint dir loaded here), which frames, what to flag.

    warn_first_l1: warn when a joint's mean first-action |error| exceeds this (raw units: rad for joints,
    0..1 for grippers; 0.1 rad is about 6 degrees, 0.1 gripper is a tenth of its travel)."""

    server: str | None = None
    local_model: bool = False
    checkpoint: Path | None = None
    device: str = "cpu"
    stride: int = 10
    max_frames: int = 200
    warn_first_l1: float = 0.1
    noise_seed: int = 0
    worst: int = 5


@dataclass(frozen=True)
class ReconResult:
    source: str
    action_names: tuple[str, ...]
    horizon: int
    frames: int
    chunk_l1: F64  # [A]
    chunk_rms: F64
    first_l1: F64
    first_rms: F64
    step_l1: F64  # [H]: mean |error| over frames and joints per chunk step
    worst: tuple[WorstFrame, ...]
    warn_first_l1: float


def sample_frames(episodes: Sequence[DoctorEpisode], stride: int, max_frames: int) -> list[tuple[int, int]]:
    """Every `stride`-th frame of every episode; evenly thinned to `max_frames` so all episodes stay covered."""
    picks = [(ep.index, t) for ep in episodes for t in range(0, len(ep), max(stride, 1))
             if np.isfinite(ep.states[t]).all()]
    return thin(picks, max(max_frames, 1))


def _names(what: str, policy: Sequence[str], dataset: Sequence[str], findings: list[Finding]) -> bool:
    """The doctor's view of a name mismatch: same dims with other names is a warning (compared by position),
    other dims an error."""
    if sorted(policy) == sorted(dataset):
        return True
    if len(policy) == len(dataset):
        findings.append(Finding("warning", "reconstruction_names_differ", what,
                                f"the policy's {what} names {list(policy)} differ from the dataset's {list(dataset)}; "
                                f"compared by position"))
        return True
    findings.append(Finding("error", "reconstruction_failed", what,
                            f"the policy has {len(policy)} {what} dims, the dataset {len(dataset)}: nothing to "
                            f"compare"))
    return False


def request_problem(req: ReconRequest) -> str | None:
    if req.server is not None and req.local_model:
        return "give --server or --local-model, not both"
    if req.server is None and not req.local_model:
        return "give --server HOST:PORT or --checkpoint DIR --local-model"
    if req.local_model and req.checkpoint is None:
        return "--local-model needs --checkpoint DIR (the Pi0.5 checkpoint to load)"
    return None


def open_source(req: ReconRequest) -> ChunkSource:
    if req.server is not None:
        return ServerSource(req.server, req.noise_seed)
    assert req.checkpoint is not None, request_problem(req)
    return LocalModelSource(req.checkpoint, req.noise_seed, req.device)


def reconstruction(ds: Dataset, episodes: Sequence[DoctorEpisode], req: ReconRequest) -> tuple[
    list[Finding], ReconResult | None
]:
    """Ask the policy for a chunk at each sampled frame and compare with the dataset's actions."""
    findings: list[Finding] = []
    problem = request_problem(req)
    if problem is not None:
        return [Finding("error", "reconstruction_failed", "options", problem)], None
    where = req.server or f"local model {req.checkpoint}"
    try:
        source = open_source(req)
    except Exception as err:  # the doctor reports any way a policy fails to start instead of crashing
        findings.append(Finding("error", "reconstruction_failed", where,
                                f"could not start the policy: {type(err).__name__}: {err}"))
        return findings, None
    try:
        return _run(ds, episodes, req, source, findings)
    finally:
        source.close()


def _align(ds: Dataset, source: ChunkSource, findings: list[Finding]) -> Alignment | None:
    info = ds.info
    if not (_names("state", source.state_names, info.state_names, findings)
            and _names("action", source.action_names, info.action_names, findings)):
        return None
    try:
        alignment = align(source, info, allow_positional=True)
    except OracleError as err:  # not reached after the checks above; kept so a change there cannot crash
        findings.append(Finding("error", "reconstruction_failed", "names", str(err)))
        return None
    if alignment.missing_cameras:
        missing = list(alignment.missing_cameras)
        findings.append(Finding("warning", "reconstruction_camera_missing", f"cameras {missing}",
                                f"the policy's camera(s) {missing} are not in the dataset ({list(info.camera_names)}); "
                                f"a policy that requires them refuses the frames (as its server would), one that "
                                f"does not gets no image in their slots, so the errors are not representative"))
    return alignment


def _run(ds: Dataset, episodes: Sequence[DoctorEpisode], req: ReconRequest, source: ChunkSource,
         findings: list[Finding]) -> tuple[list[Finding], ReconResult | None]:
    alignment = _align(ds, source, findings)
    if alignment is None:
        return findings, None
    picks = sample_frames(episodes, req.stride, req.max_frames)
    collected = collect(ds, source, alignment, picks)
    failures = collected.failures
    if failures:
        ok = bool(collected.located)
        findings.append(Finding("warning" if ok else "error",
                                "reconstruction_frames_failed" if ok else "reconstruction_failed", source.description,
                                f"{len(failures)} of {len(picks)} sampled frame(s) failed; first: {failures[0]}"))
    if not collected.located:
        if not failures:
            findings.append(Finding("error", "reconstruction_failed", source.description, "no frame to sample"))
        return findings, None
    oracle = summarize(collected, source.description, str(ds.info.path), "not used",
                       OracleOptions(worst=req.worst, padded_rows=PADDED_INCLUDE, normalized=False))
    raw = oracle.raw
    result = ReconResult(
        source=source.description, action_names=oracle.action_names, horizon=oracle.horizon, frames=oracle.frames,
        chunk_l1=raw.joint_l1, chunk_rms=raw.joint_rms, first_l1=raw.first_l1, first_rms=raw.first_rms,
        step_l1=raw.step_l1, worst=oracle.worst_frames, warn_first_l1=req.warn_first_l1,
    )
    if collected.warnings:
        counts = ", ".join(f"{code} x{n}" for code, n in collected.warnings.most_common())
        findings.append(Finding("info", "reconstruction_policy_warnings", source.description,
                                f"the policy answered with warnings: {counts}"))
    return findings + recon_findings(result, req), result


def recon_findings(r: ReconResult, req: ReconRequest) -> list[Finding]:
    """One finding per joint (info, or a warning past the first-action threshold) and a summary."""
    out: list[Finding] = []
    for j, name in enumerate(r.action_names):
        high = r.first_l1[j] > r.warn_first_l1
        text = (f"reconstruction error of {name} over {r.frames} frame(s): first action L1 {r.first_l1[j]:.4g} / "
                f"RMS {r.first_rms[j]:.4g}, {r.horizon}-step chunk L1 {r.chunk_l1[j]:.4g} / RMS {r.chunk_rms[j]:.4g} "
                f"(raw units)")
        if high:
            text += f"; the first-action L1 is above the threshold {r.warn_first_l1:g}"
        out.append(Finding("warning" if high else "info",
                           "reconstruction_error_high" if high else "reconstruction_error", f"action {name}", text))
    worst = "; ".join(f"episode {w.episode} frame {w.frame} {w.joint} chunk L1 {w.chunk_l1:.4g}" for w in r.worst)
    out.append(Finding(
        "info", "reconstruction_summary", r.source,
        f"{r.frames} frame(s) (stride {req.stride}, at most {req.max_frames}), {r.horizon}-step chunks: "
        f"mean over joints first action L1 {float(r.first_l1.mean()):.4g}, chunk L1 "
        f"{float(r.chunk_l1.mean()):.4g}; worst frames: {worst}",
    ))
    return out
