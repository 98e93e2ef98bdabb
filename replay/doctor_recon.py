"""Action reconstruction error: how far a policy's chunks are from the dataset's own actions, in robot units.

Why: the normalization checks say whether the checkpoint's stats fit the data; this says whether the whole
chain (stats, delta mask, gripper convention, image preprocessing, the weights) reproduces the demonstrations
it was trained on. Each sampled frame's observation goes to the policy; the returned chunk [H, A] is compared
with the dataset's next H actions (padded with the episode's last action past its end, as the dataset policy
does), giving per-joint L1 and RMS over the whole chunk and for the first action, in raw units (rad, gripper
0..1). The dataset policy served on the same dataset must give exactly 0: anything else is the deploy path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from replay.dataset import Dataset, DatasetError
from replay.doctor_findings import Finding
from replay.doctor_raw import DoctorEpisode
from replay.doctor_recon_sources import ChunkSource, FrameObservation, LocalModelSource, ServerSource

F64 = npt.NDArray[np.float64]


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
class WorstFrame:
    episode: int
    frame: int
    joint: str
    chunk_l1: float  # that joint's mean |error| over the chunk
    first_error: float  # that joint's |error| on the first action


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
    if len(picks) <= max_frames:
        return picks
    keep = np.unique(np.linspace(0, len(picks) - 1, max(max_frames, 1)).round().astype(int))
    return [picks[int(i)] for i in keep]


def _columns(have: Sequence[str], want: Sequence[str]) -> list[int] | None:
    """Indices into `have` that give `want`'s order: by name, by position when the names differ but the dims
    agree (generic names), None when the dims differ."""
    if sorted(have) == sorted(want):
        return [list(have).index(n) for n in want]
    return list(range(len(want))) if len(have) == len(want) else None


def _name_check(what: str, policy: Sequence[str], dataset: Sequence[str], findings: list[Finding]) -> bool:
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


def _run(ds: Dataset, episodes: Sequence[DoctorEpisode], req: ReconRequest, source: ChunkSource,
         findings: list[Finding]) -> tuple[list[Finding], ReconResult | None]:
    info = ds.info
    if not (_name_check("state", source.state_names, info.state_names, findings)
            and _name_check("action", source.action_names, info.action_names, findings)):
        return findings, None
    state_order = _columns(info.state_names, source.state_names)  # dataset state in the policy's order
    action_order = _columns(source.action_names, info.action_names)  # policy chunk columns in dataset order
    assert state_order is not None and action_order is not None
    missing = [c for c in source.cameras if c not in info.camera_names]
    if missing:
        findings.append(Finding("warning", "reconstruction_camera_missing", f"cameras {missing}",
                                f"the policy's camera(s) {missing} are not in the dataset ({list(info.camera_names)}); "
                                f"their slots get no image, so the errors are not representative"))
    picks = sample_frames(episodes, req.stride, req.max_frames)
    errors: list[F64] = []
    located: list[tuple[int, int]] = []
    failures: list[str] = []
    warning_codes: Counter[str] = Counter()
    by_episode: dict[int, list[int]] = {}
    for e, t in picks:
        by_episode.setdefault(e, []).append(t)
    for e, frames in by_episode.items():
        try:
            ep = ds.episode(e)
        except DatasetError as err:
            failures += [f"episode {e}: {err}"] * len(frames)
            continue
        for t in frames:
            try:
                frame = ep.frame(t, with_images=bool(ep.camera_names))
                obs = FrameObservation(e, t, frame.timestamp, np.asarray(frame.state, np.float32)[state_order],
                                       frame.task, frame.images)
                chunk, codes = source.infer(obs)
            except Exception as err:  # one bad frame (or a refused request) must not end the sweep
                failures.append(f"episode {e} frame {t}: {type(err).__name__}: {err}")
                continue
            warning_codes.update(codes)
            if chunk.ndim != 2 or chunk.shape[1] != len(action_order) or (errors and len(chunk) != len(errors[0])):
                failures.append(f"episode {e} frame {t}: chunk of shape {list(chunk.shape)}")
                continue
            expected, _ = ep.action_chunk(t, chunk.shape[0])
            errors.append(chunk[:, action_order].astype(np.float64) - expected.astype(np.float64))
            located.append((e, t))
    if failures:
        severity = "error" if not errors else "warning"
        findings.append(Finding(severity, "reconstruction_failed" if not errors else "reconstruction_frames_failed",
                                source.description,
                                f"{len(failures)} of {len(picks)} sampled frame(s) failed; first: {failures[0]}"))
    if not errors:
        if not failures:
            findings.append(Finding("error", "reconstruction_failed", source.description, "no frame to sample"))
        return findings, None
    result = _summarize(np.stack(errors), located, info.action_names, source.description, req)
    if warning_codes:
        counts = ", ".join(f"{code} x{n}" for code, n in warning_codes.most_common())
        findings.append(Finding("info", "reconstruction_policy_warnings", source.description,
                                f"the policy answered with warnings: {counts}"))
    return findings + recon_findings(result, req), result


def _summarize(err: F64, located: Sequence[tuple[int, int]], names: Sequence[str], source: str,
               req: ReconRequest) -> ReconResult:
    """err: [N, H, A] chunk minus dataset actions."""
    per_frame = np.abs(err).mean(axis=1)  # [N, A]
    joint = per_frame.argmax(axis=1)
    score = per_frame.max(axis=1)
    worst = []
    for n in np.argsort(-score, kind="stable")[: req.worst]:
        j = int(joint[n])
        worst.append(WorstFrame(located[n][0], located[n][1], names[j], float(score[n]), float(abs(err[n, 0, j]))))
    return ReconResult(
        source=source, action_names=tuple(names), horizon=int(err.shape[1]), frames=int(err.shape[0]),
        chunk_l1=np.abs(err).mean(axis=(0, 1)), chunk_rms=np.sqrt((err**2).mean(axis=(0, 1))),
        first_l1=np.abs(err[:, 0]).mean(axis=0), first_rms=np.sqrt((err[:, 0] ** 2).mean(axis=0)),
        step_l1=np.abs(err).mean(axis=(0, 2)), worst=tuple(worst), warn_first_l1=req.warn_first_l1,
    )


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
