"""`python -m replay compare-reference`: a dataset against a known-good source (another dataset, or a recording
of the rig's own cameras and arms).

    python -m replay compare-reference --dataset PATH --reference PATH [--episodes ..] [--reference-episodes ..]
        [--name-map MAP] [--reference-name-map MAP] [--max-episodes 5] [--frames-per-episode 16]

Why a reference: some faults cannot be seen from one dataset alone. A camera whose red and blue channels were
exchanged (BGR frames stored as RGB) holds perfectly plausible pictures; only next to pictures of the same rig
known to be right does the exchange show: its per-channel colour statistics match the reference's once red and
blue are swapped back, and not before. The same goes for a camera at another resolution, a recording at
another frame rate, joints moving over ranges the robot never reached in the reference, and episodes starting
from another pose.

What is compared, per camera (paired by name, else by position when the counts agree): resolution, and the
mean and 10/50/90th percentiles of each channel over frames sampled from a few episodes; a channel-order swap
is named when the statistics with red and blue exchanged are much closer to the reference's than as stored.
For the arms: the frame rate, each joint's 1..99 % range of the state and the action, and each joint's median
start pose. One line per finding (severity, code, where: message), exit 0 clean, 1 warnings, 2 errors.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
import numpy.typing as npt

from replay.dataset_args import (
    add_dataset_arguments,
    map_joint_names,
    open_from_args,
    parse_episodes,
    robot_joint_names,
)
from replay.doctor.findings import Finding, count
from robodata.dataset import Dataset, DatasetError
from robodata.open import open_dataset

F64 = npt.NDArray[np.float64]
EXIT_CLEAN, EXIT_WARNINGS, EXIT_ERRORS = 0, 1, 2
STAT_NAMES = ("mean", "p10", "p50", "p90")
CHANNELS = ("R", "G", "B")
RB_SWAPPED = [2, 1, 0]


@dataclass(frozen=True)
class ReferenceOptions:
    """How much is read and when a difference is reported.

    max_episodes / frames_per_episode: episodes sampled (evenly) for the camera statistics, and frames per
    episode. numeric_episodes: episodes sampled for ranges and start poses. swap_ratio / min_swap_gain: a
    channel swap is named when the swapped distance is below swap_ratio x the stored one and at least
    min_swap_gain grey levels smaller. colour_warn: grey levels of mean difference that are worth a warning
    (lighting, white balance, another scene). range_margin: how far past the reference's 1..99 % range (as a
    fraction of its width, at least min_span) a joint may go. start_tolerance: rad (gripper units) a median
    start pose may differ by (more when the reference's own starts spread more). fps_tolerance: relative
    frame-rate difference.
    """

    max_episodes: int = 5
    frames_per_episode: int = 16
    numeric_episodes: int = 50
    swap_ratio: float = 0.5
    min_swap_gain: float = 4.0
    colour_warn: float = 25.0
    range_margin: float = 0.25
    min_span: float = 0.05
    start_tolerance: float = 0.25
    fps_tolerance: float = 0.02


@dataclass(frozen=True)
class CameraStats:
    """One camera: frame size and [3 channels, STAT_NAMES] statistics over the sampled frames (0..255)."""

    name: str
    height: int
    width: int
    stats: F64
    frames: int


@dataclass(frozen=True)
class SourceSummary:
    """What the comparison needs from one source."""

    label: str
    path: str
    fps: float
    cameras: dict[str, CameraStats]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    state_range: F64  # [2, D]: 1st and 99th percentile
    action_range: F64
    starts: F64  # [E, D] first state of each sampled episode
    notes: list[str] = field(default_factory=list)


def _spread(indices: list[int], n: int) -> list[int]:
    if len(indices) <= n:
        return list(indices)
    picks = np.linspace(0, len(indices) - 1, n).round().astype(int)
    return [indices[i] for i in sorted(set(picks.tolist()))]


def camera_stats(frames: npt.NDArray[np.uint8]) -> F64:
    """[3, 4]: mean, 10th, 50th and 90th percentile of each RGB channel of [N, H, W, 3] frames."""
    pixels = frames[:, ::2, ::2, :].reshape(-1, 3).astype(np.float64)
    pct = np.percentile(pixels, [10, 50, 90], axis=0)  # [3 pct, 3 ch]
    return np.stack([pixels.mean(axis=0), *pct], axis=1)


def summarize(ds: Dataset, label: str, options: ReferenceOptions) -> SourceSummary:
    """Read the sampled episodes of one source (numbers from up to numeric_episodes, pictures from max_episodes)."""
    info = ds.info
    indices = ds.episode_indices()
    if not indices:
        raise DatasetError(f"{info.path}: no episode to compare")
    numeric = _spread(indices, options.numeric_episodes)
    pictures = set(_spread(indices, options.max_episodes))
    states, actions, starts = [], [], []
    samples: dict[str, list[npt.NDArray[np.uint8]]] = {c: [] for c in info.camera_names}
    notes: list[str] = []
    for index in numeric:
        ep = ds.episode(index)
        states.append(np.asarray(ep.states, dtype=np.float64))
        actions.append(np.asarray(ep.actions, dtype=np.float64))
        starts.append(np.asarray(ep.states[0], dtype=np.float64))
        if index not in pictures:
            continue
        picks = np.linspace(0, len(ep) - 1, min(options.frames_per_episode, len(ep))).round().astype(int)
        for cam in info.camera_names:
            try:
                samples[cam].append(ep.images(cam)[np.unique(picks)])
            except DatasetError as err:
                notes.append(f"{label} camera {cam}, episode {index}: not read ({err})")
    cameras = {}
    for cam_info in info.cameras:
        frames = samples[cam_info.name]
        if frames:
            stacked = np.concatenate(frames)
            cameras[cam_info.name] = CameraStats(cam_info.name, cam_info.height, cam_info.width,
                                                 camera_stats(stacked), int(stacked.shape[0]))
    all_states, all_actions = np.concatenate(states), np.concatenate(actions)
    return SourceSummary(label, str(info.path), info.fps, cameras, info.state_names, info.action_names,
                         np.percentile(all_states, [1, 99], axis=0), np.percentile(all_actions, [1, 99], axis=0),
                         np.stack(starts), notes)


def _stats_text(stats: F64) -> str:
    return " ".join(f"{c}={stats[i, 0]:.0f}" for i, c in enumerate(CHANNELS))


def _pairs(data: list[str], ref: list[str]) -> tuple[list[tuple[str, str]], str | None]:
    named = [(c, c) for c in data if c in ref]
    if named:
        return named, None
    if len(data) == len(ref) and data:
        return list(zip(data, ref, strict=True)), (f"camera names differ (dataset {data}, reference {ref}); "
                                                   "paired by position")
    return [], None


def compare_cameras(data: SourceSummary, ref: SourceSummary, options: ReferenceOptions) -> list[Finding]:
    out: list[Finding] = []
    pairs, note = _pairs(list(data.cameras), list(ref.cameras))
    if note:
        out.append(Finding("info", "camera_pairing", "cameras", note))
    unpaired = [c for c in data.cameras if c not in {a for a, _ in pairs}]
    if unpaired and ref.cameras:
        out.append(Finding("warning", "camera_missing_in_reference", "cameras",
                           f"{unpaired} have no camera to compare with in the reference (it has {list(ref.cameras)})"))
    for cam, ref_cam in pairs:
        d, r = data.cameras[cam], ref.cameras[ref_cam]
        where = f"camera {cam}" + (f" (reference {ref_cam})" if cam != ref_cam else "")
        if (d.height, d.width) != (r.height, r.width):
            out.append(Finding("warning", "camera_resolution", where,
                               f"{d.width}x{d.height} vs the reference's {r.width}x{r.height}"))
        same = float(np.mean(np.abs(d.stats - r.stats)))
        swapped = float(np.mean(np.abs(d.stats[RB_SWAPPED] - r.stats)))
        if swapped < options.swap_ratio * same and same - swapped >= options.min_swap_gain:
            out.append(Finding(
                "error", "camera_channel_order", where,
                f"red and blue look exchanged (BGR frames stored as RGB): channel means {_stats_text(d.stats)} vs "
                f"the reference's {_stats_text(r.stats)}; with R and B swapped back the colour statistics differ "
                f"by {swapped:.1f} grey levels instead of {same:.1f}; fix the capture's channel order (or convert "
                "the stored frames) before training"))
        elif same >= options.colour_warn:
            out.append(Finding("warning", "camera_colour", where,
                               f"colour statistics differ by {same:.1f} grey levels on average (channel means "
                               f"{_stats_text(d.stats)} vs {_stats_text(r.stats)}): lighting, exposure, white balance "
                               "or another scene"))
    return out


def _joint_pairs(names: tuple[str, ...], ref_names: tuple[str, ...]) -> list[tuple[int, int, str]]:
    by_name = [(i, ref_names.index(n), n) for i, n in enumerate(names) if n in ref_names]
    if by_name or len(names) != len(ref_names):
        return by_name
    return [(i, i, f"{n} (reference {ref_names[i]})") for i, n in enumerate(names)]


def compare_joints(data: SourceSummary, ref: SourceSummary, options: ReferenceOptions) -> list[Finding]:
    out: list[Finding] = []
    for what, names, ref_names, rng, ref_rng in (
        ("state", data.state_names, ref.state_names, data.state_range, ref.state_range),
        ("action", data.action_names, ref.action_names, data.action_range, ref.action_range),
    ):
        pairs = _joint_pairs(names, ref_names)
        if not pairs:
            out.append(Finding("warning", "joint_names", f"{what} names",
                               f"no {what} name in common with the reference ({list(names)} vs {list(ref_names)}); "
                               "pass --name-map / --reference-name-map to compare them"))
            continue
        for i, j, label in pairs:
            lo, hi = float(rng[0, i]), float(rng[1, i])
            rlo, rhi = float(ref_rng[0, j]), float(ref_rng[1, j])
            span, ref_span = hi - lo, max(rhi - rlo, options.min_span)
            ratio = span / ref_span
            if 50.0 < ratio < 65.0:
                out.append(Finding("error", "joint_range_unit", f"{what} {label}",
                                   f"range {lo:.3g}..{hi:.3g} is {ratio:.1f}x the reference's {rlo:.3g}..{rhi:.3g} "
                                   "(180/pi = 57.3: degrees where the reference has radians)"))
                continue
            margin = options.range_margin * ref_span
            if lo < rlo - margin or hi > rhi + margin:
                out.append(Finding("warning", "joint_range", f"{what} {label}",
                                   f"1..99 % range {lo:.3f}..{hi:.3f} goes past the reference's {rlo:.3f}..{rhi:.3f} "
                                   f"(by more than {options.range_margin:.0%} of its width)"))
    pairs = _joint_pairs(data.state_names, ref.state_names)
    start, ref_start = np.median(data.starts, axis=0), np.median(ref.starts, axis=0)
    # A reference whose own episodes start all over the place tolerates more (3 of its standard deviations).
    ref_spread = np.std(ref.starts, axis=0)
    for i, j, label in pairs:
        gap = float(start[i] - ref_start[j])
        tolerance = max(options.start_tolerance, 3.0 * float(ref_spread[j]))
        if abs(gap) > tolerance:
            out.append(Finding("warning", "start_pose", f"state {label}",
                               f"episodes start at {start[i]:.3f} (median) where the reference's start at "
                               f"{ref_start[j]:.3f} ({gap:+.3f}, beyond {tolerance:.3f})"))
    return out


def compare(data: SourceSummary, ref: SourceSummary, options: ReferenceOptions) -> list[Finding]:
    """Every finding of the dataset against the reference, cameras first."""
    out: list[Finding] = [Finding("info", "reference_note", "read", n) for n in data.notes + ref.notes]
    if abs(data.fps - ref.fps) > options.fps_tolerance * ref.fps:
        out.append(Finding("warning", "fps", "dataset", f"{data.fps:g} fps vs the reference's {ref.fps:g}"))
    if not data.cameras and not ref.cameras:
        out.append(Finding("info", "no_cameras", "cameras", "neither source has cameras to compare"))
    out += compare_cameras(data, ref, options)
    out += compare_joints(data, ref, options)
    return out


def exit_code(findings: list[Finding]) -> int:
    if count(findings, "error"):
        return EXIT_ERRORS
    return EXIT_WARNINGS if count(findings, "warning") else EXIT_CLEAN


def format_summary(data: SourceSummary, ref: SourceSummary) -> list[str]:
    lines = [f"dataset    {data.path} ({data.fps:g} fps, {data.starts.shape[0]} episodes sampled)",
             f"reference  {ref.path} ({ref.fps:g} fps, {ref.starts.shape[0]} episodes sampled)",
             "cameras (WxH, frames sampled, channel means R G B: dataset | reference)"]
    pairs, _ = _pairs(list(data.cameras), list(ref.cameras))
    for cam, ref_cam in pairs:
        d, r = data.cameras[cam], ref.cameras[ref_cam]
        lines.append(f"  {cam:<14s} {d.width}x{d.height} {d.frames:4d}  "
                     f"{' '.join(f'{v:5.1f}' for v in d.stats[:, 0])} | {' '.join(f'{v:5.1f}' for v in r.stats[:, 0])}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--reference", required=True,
                        help="known-good dataset or recording of the same rig (any format the tools read)")
    parser.add_argument("--reference-episodes", type=parse_episodes, default=None, help="reference subset")
    parser.add_argument("--reference-name-map", default=None, metavar="MAP",
                        help="rename the reference's joints (same forms as --name-map)")
    parser.add_argument("--max-episodes", type=int, default=ReferenceOptions.max_episodes,
                        help="episodes per source whose camera frames are sampled")
    parser.add_argument("--frames-per-episode", type=int, default=ReferenceOptions.frames_per_episode,
                        help="frames sampled from each of those episodes")


def run(args: argparse.Namespace, out: TextIO) -> int:
    for flag, value in (("--max-episodes", args.max_episodes), ("--frames-per-episode", args.frames_per_episode)):
        if value < 1:
            raise DatasetError(f"{flag} must be >= 1, got {value}")
    options = ReferenceOptions(max_episodes=args.max_episodes, frames_per_episode=args.frames_per_episode)
    dataset = open_from_args(args)
    ref_options = {"episodes": args.reference_episodes} if args.reference_episodes is not None else {}
    reference = open_dataset(args.reference, **ref_options)
    if args.reference_name_map is not None:
        map_joint_names(reference, args.reference_name_map, robot_joint_names(getattr(args, "robot_config", None)))
    data = summarize(dataset, "dataset", options)
    ref = summarize(reference, "reference", options)
    for line in format_summary(data, ref):
        out.write(line + "\n")
    findings = compare(data, ref, options)
    for finding in findings:
        out.write(finding.line() + "\n")
    code = exit_code(findings)
    out.write(f"compare-reference: {count(findings, 'error')} error(s), {count(findings, 'warning')} warning(s); "
              f"exit {code}\n")
    return code
