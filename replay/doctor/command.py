"""`python -m replay doctor`: find what is wrong with a dataset (and a checkpoint's view of it) before motion.

Why: every failure of the seed incident was visible in the data before the arm moved: actions never
normalized, output left in model space, stats from elsewhere. The doctor runs every check it can (data-only
checks always; normalization and state-bin checks when --checkpoint is given; the action reconstruction error
when a policy is given with --server or --checkpoint --local-model) and prints one line per finding with its
severity. Exit code: 0 clean (info only), 1 warnings but no error, 2 any error; a dataset that cannot be
opened is an error (2, from the command line entry point).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from policy_norm.checkpoint import read_policy_config
from policy_norm.errors import NormalizationError
from policy_norm.modes import MODE_NAMES, NormMode, parse_optional_mode
from replay.doctor.arms import (
    ArmResult,
    ArmThresholds,
    analyze_arms,
    arm_findings,
    arm_layout,
    crossed_arms,
    tracked_state_index,
)
from replay.doctor.bins import BinCoverage, BinThresholds, bin_coverage, bin_findings
from replay.doctor.checks import (
    CheckThresholds,
    LagResult,
    check_degenerate,
    check_finite,
    check_gripper_convention,
    check_normalized_looking_actions,
    check_outliers,
    check_timestamps,
    delta_evidence,
    delta_mask_findings,
    estimate_lags,
    lag_findings,
    normalized_looking_findings,
    state_index_for_actions,
)
from replay.doctor.findings import Finding, count
from replay.doctor.norm import CheckpointRequest, NormSection, checkpoint_findings
from replay.doctor.raw import DoctorEpisode, load_episodes
from replay.doctor.recon import ReconRequest, ReconResult, reconstruction
from replay.doctor.stored_stats import compare_stored_stats, stored_stats_findings
from replay.doctor.stream import StreamSettings, stream_checks
from replay.file_check import file_findings
from replay.stats_tool import parse_delta_mask
from robodata.dataset import Dataset, DatasetInfo

EXIT_CLEAN = 0
EXIT_WARNINGS = 1
EXIT_ERRORS = 2


def exit_code(findings: list[Finding]) -> int:
    """0 clean (info only), 1 warnings but no error, 2 any error."""
    if count(findings, "error"):
        return EXIT_ERRORS
    return EXIT_WARNINGS if count(findings, "warning") else EXIT_CLEAN


@dataclass(frozen=True)
class DoctorOptions:
    checkpoint: Path | None = None
    out: Path | None = None
    mode: NormMode | None = None
    delta_mask: tuple[bool, ...] | None = None
    action_horizon: int | None = None
    asset_id: str | None = None
    plots: bool = True
    thresholds: CheckThresholds = field(default_factory=CheckThresholds)
    arm_thresholds: ArmThresholds = field(default_factory=ArmThresholds)
    bin_thresholds: BinThresholds = field(default_factory=BinThresholds)
    recon: ReconRequest | None = None
    # Joint limits by the dataset's dim names (the robot config's limits through a name map); None: the YAM
    # table, for names that end in its joint names.
    joint_limits: Mapping[str, tuple[float, float]] | None = None
    # How the data must fit the checkpoint's stats: "coverage" (span them: the training set), "containment" (lie
    # inside them: a recording or a few episodes), "auto" (containment for our recordings, else coverage).
    stats_fit: str = "auto"
    # Above stream.exact_frames frames the data checks stream one episode at a time (bounded memory).
    stream: StreamSettings = field(default_factory=StreamSettings)


STATS_FITS = ("auto", "coverage", "containment")


@dataclass(frozen=True)
class DoctorResult:
    findings: list[Finding]
    report: Path | None
    plots: list[Path]
    norm: NormSection | None
    arms: ArmResult | None = None
    bins: BinCoverage | None = None
    recon: ReconResult | None = None

    @property
    def errors(self) -> int:
        return count(self.findings, "error")

    @property
    def warnings(self) -> int:
        return count(self.findings, "warning")

    @property
    def exit_code(self) -> int:
        return exit_code(self.findings)

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}


def run_doctor(ds: Dataset, options: DoctorOptions) -> DoctorResult:
    """Every check the options ask for. A dataset of more than `options.stream.exact_frames` frames is checked
    one episode at a time in bounded memory (replay.doctor.stream); a smaller one with all frames in memory."""
    if ds.info.num_frames > options.stream.exact_frames:
        return _run_streamed(ds, options)
    info = ds.info
    th = options.thresholds
    episodes, findings = load_episodes(ds)
    findings += file_findings(ds)  # unreadable video/data files, named (replay.file_check)
    state_index = state_index_for_actions(info.action_names, info.state_names)
    findings += check_finite(episodes, info.state_names, info.action_names)
    ts_findings, dts = check_timestamps(episodes, info.fps, th)
    findings += ts_findings
    lag: LagResult | None = None
    norm: NormSection | None = None
    arms: ArmResult | None = None
    bins: BinCoverage | None = None
    recon: ReconResult | None = None
    if episodes:
        states = np.concatenate([np.asarray(ep.states, dtype=np.float64) for ep in episodes])
        actions = np.concatenate([np.asarray(ep.actions, dtype=np.float64) for ep in episodes])
        findings += check_degenerate(states, actions, info.state_names, info.action_names, th)
        findings += check_gripper_convention(states, actions, info.state_names, info.action_names)
        findings += check_outliers(episodes, info.state_names, info.action_names, th, options.joint_limits)
        layout = arm_layout(info.state_names, info.action_names)
        paired = state_index
        if layout is not None:
            arms = analyze_arms(episodes, layout, states, actions, options.arm_thresholds)
            findings += arm_findings(arms, options.arm_thresholds)
            # Swapped arms are reported once (above); lag and delta evidence pair each action with the state
            # of the arm it tracks, so the swap does not also read as lags of random size.
            paired = tracked_state_index(arms, options.arm_thresholds, state_index)
        lag = estimate_lags(episodes, info.action_names, paired, th)
        lag_notes = lag_findings(lag, info.fps, th)
        if arms is not None and crossed_arms(arms, options.arm_thresholds):
            lag_notes = [Finding(f.severity, f.code, f.where, f.message + " (actions paired with the state of the "
                                 "arm they track: see arms_swapped)") for f in lag_notes]
        findings += lag_notes
        evidence = delta_evidence(episodes, info.action_names, paired, th)
        mask, mask_source = _delta_mask(info, options, findings)
        findings += delta_mask_findings(evidence, info.action_names, mask, mask_source)
        findings += check_normalized_looking_actions(states, actions, info.action_names, paired, evidence)
        if _compare_stored_stats(ds, len(episodes), findings):
            findings += stored_stats_findings(
                compare_stored_stats(info.stats, episodes, info.state_names, info.action_names))
        if options.checkpoint is not None:
            ck_findings, norm, bins = _checkpoint_checks(info, episodes, states, options)
            findings += ck_findings
        if options.recon is not None:
            recon_findings, recon = reconstruction(ds, episodes, options.recon)
            findings += recon_findings
    else:
        findings.append(Finding("error", "no_episodes", str(info.path), "no episode could be read"))
    report, plots = _report(info, episodes, findings, lag, dts, norm, arms, bins, recon, options, state_index)
    return DoctorResult(findings, report, plots, norm, arms, bins, recon)


def _run_streamed(ds: Dataset, options: DoctorOptions) -> DoctorResult:
    """run_doctor for a dataset too large for memory: the data-only checks streamed over the episodes (see
    replay.doctor.stream), the checks that need frames on the stream's seeded sample of whole episodes."""
    info = ds.info
    findings = file_findings(ds)
    compare = _compare_stored_stats(ds, info.num_episodes, findings)
    streamed = stream_checks(ds, options.thresholds, options.arm_thresholds,
                             None if options.joint_limits is None else dict(options.joint_limits), options.stream,
                             compare)
    findings += streamed.findings
    norm: NormSection | None = None
    bins: BinCoverage | None = None
    recon: ReconResult | None = None
    sample = streamed.sample
    if streamed.episodes:
        mask, mask_source = _delta_mask(info, options, findings)
        findings += delta_mask_findings(streamed.evidence, info.action_names, mask, mask_source)
        findings += normalized_looking_findings(streamed.state_columns, streamed.action_columns, info.action_names,
                                                streamed.paired, streamed.evidence)
        if options.checkpoint is not None and sample:
            states = np.concatenate([np.asarray(ep.states, dtype=np.float64) for ep in sample])
            ck_findings, norm, bins = _checkpoint_checks(info, sample, states, options)
            findings += ck_findings
        if options.recon is not None and sample:
            recon_findings, recon = reconstruction(ds, sample, options.recon)
            findings += recon_findings
    else:
        findings.append(Finding("error", "no_episodes", str(info.path), "no episode could be read"))
    state_index = state_index_for_actions(info.action_names, info.state_names)
    report, plots = _report(info, sample, findings, streamed.lag, streamed.dts, norm, streamed.arms, bins, recon,
                            options, state_index)
    return DoctorResult(findings, report, plots, norm, streamed.arms, bins, recon)


def _delta_mask(info: DatasetInfo, options: DoctorOptions, findings: list[Finding]) -> tuple[
    tuple[bool, ...] | None, str
]:
    """The delta mask to judge the actions with (the checkpoint's policy_config.json before --delta-mask), None
    when neither gives one or its length is wrong (an error is added)."""
    mask, mask_source = options.delta_mask, "--delta-mask"
    if options.checkpoint is not None:
        from_config = _config_mask(options.checkpoint)
        if from_config is not None:
            mask, mask_source = from_config, "the checkpoint's policy_config.json"
    if mask is not None and len(mask) != info.action_dim:
        findings.append(Finding("error", "delta_mask_length", mask_source,
                                f"delta mask has {len(mask)} entries, the dataset {info.action_dim} action dims"))
        mask = None
    return mask, mask_source


def _compare_stored_stats(ds: Dataset, episodes_read: int, findings: list[Finding]) -> bool:
    """Whether the stored stats can be compared with the episodes read (an INFO says why not when they describe
    more episodes than the doctor reads)."""
    info = ds.info
    # Stored stats describe every episode unless the reader aggregated them over the selection (v2.1
    # per-episode stats); comparing a subset with whole-dataset stats would name a false cause.
    subset = next((n for n in info.notes if n.startswith("reading ") and " of " in n), None)
    per_selection = any("over the selected episodes" in n for n in info.notes)
    if subset is not None and not per_selection and info.stats:
        findings.append(Finding("info", "stored_stats_not_compared", "dataset",
                                f"stored stats not compared with the data: they describe the whole dataset and "
                                f"the doctor is {subset}"))
        return False
    return episodes_read == len(ds.episode_indices()) and info.num_episodes == episodes_read


def _checkpoint_checks(info: DatasetInfo, episodes: list[DoctorEpisode], states: np.ndarray,
                       options: DoctorOptions) -> tuple[list[Finding], NormSection | None, BinCoverage | None]:
    """The checkpoint's normalization checks (policy_norm's, the server's own) and the state-bin coverage."""
    assert options.checkpoint is not None
    findings: list[Finding] = []
    bins: BinCoverage | None = None
    fit = options.stats_fit
    if fit == "auto":
        fit = "containment" if info.format == "recording-zarr" else "coverage"
    findings.append(Finding("info", "stats_fit", "checkpoint",
                            f"data checked for {fit} of the checkpoint's stats ("
                            + ("it must span their range, as training data does" if fit == "coverage" else
                               "it must lie inside their range; a run covers only part of it") + ")"))
    request = CheckpointRequest(options.checkpoint, options.mode, options.delta_mask, options.action_horizon,
                                options.asset_id, coverage=fit == "coverage")
    ck_findings, norm = checkpoint_findings(info, episodes, request)
    findings += ck_findings
    if norm is not None:
        bins = bin_coverage(norm.pipeline, states)
        if bins is not None:
            reported = {f.where for f in ck_findings if f.code == "state_out_of_bin_range"}
            # Dims whose stats are per-episode-mean quantiles, or a run inside the training min/max,
            # land in the bins training put the same values in (the data check's INFO says how many).
            as_trained = {f"state[{i}] ({m_name})" for i, (m, m_name) in enumerate(zip(
                norm.data.metrics.get("state", ()), norm.pipeline.resolved.state.names, strict=False))
                if m.convention == "episode-mean" or m.within_trained}
            findings += bin_findings(bins, options.bin_thresholds, reported, as_trained)
    return findings, norm, bins


def _report(info: DatasetInfo, episodes: list[DoctorEpisode], findings: list[Finding], lag: LagResult | None,
            dts: dict[int, np.ndarray], norm: NormSection | None, arms: ArmResult | None, bins: BinCoverage | None,
            recon: ReconResult | None, options: DoctorOptions, state_index: list[int]) -> tuple[Path | None,
                                                                                                list[Path]]:
    """report.md, findings and plots under options.out (nothing when it is None)."""
    if options.out is None:
        return None, []
    # Imported here: matplotlib costs ~0.3 s, which every `python -m replay` command would otherwise pay.
    from replay.doctor.report import ReportInputs, write_markdown, write_plots

    options.out.mkdir(parents=True, exist_ok=True)
    inputs = ReportInputs(info, episodes, findings, lag, dts, norm,
                          str(options.checkpoint) if options.checkpoint else None, arms, bins, recon)
    plots = write_plots(inputs, options.out, state_index) if options.plots else []
    return write_markdown(inputs, options.out, plots), plots


def _config_mask(checkpoint: Path) -> tuple[bool, ...] | None:
    """The delta mask of the checkpoint's policy_config.json, if it has one (errors surface in the norm checks)."""
    try:
        config = read_policy_config(checkpoint)
    except NormalizationError:
        return None
    return None if config is None else config.action_delta_mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="openpi or LeRobot checkpoint dir (norm_stats.json / processor safetensors, and "
                             "policy_config.json when present)")
    parser.add_argument("--out", type=Path, default=None, help="write report.md, findings.json and plots/ here")
    parser.add_argument("--mode", choices=MODE_NAMES, default=None,
                        help="normalization mode when the checkpoint has no policy_config.json and does not record it")
    parser.add_argument("--delta-mask", type=parse_delta_mask, default=None,
                        help="action delta mask (e.g. 6,-1,6,-1) when the checkpoint has no policy_config.json")
    parser.add_argument("--action-horizon", type=int, default=None,
                        help="chunk length the checkpoint's action stats were computed over")
    parser.add_argument("--asset-id", default=None, help="openpi asset id when the checkpoint has several")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--stats-fit", choices=STATS_FITS, default="auto",
                        help="data must span the checkpoint's stats (coverage: its training set) or lie inside them "
                             "(containment: a recording, a few episodes); auto = containment for recordings")
    parser.add_argument("--lag-warn", type=int, default=CheckThresholds.lag_warn_frames,
                        help="flag an action-to-state lag of at least this many frames")
    parser.add_argument("--exact-frames", type=_non_negative, default=StreamSettings.exact_frames,
                        help="check datasets of up to N frames exactly with all frames in memory; larger ones are "
                             "checked one episode at a time in bounded memory (whole-data quantiles from "
                             "histograms, within a stated bin width)")
    recon = parser.add_argument_group("action reconstruction error (a policy's chunks vs the dataset's actions)")
    recon.add_argument("--server", default=None, metavar="HOST:PORT",
                       help="ask the policy server at HOST:PORT for a chunk at each sampled frame")
    recon.add_argument("--local-model", action="store_true",
                       help="load the --checkpoint as a Pi0.5 policy in this process and ask it instead")
    recon.add_argument("--device", default="cpu", help="--local-model device (cpu, cuda, cuda:N)")
    recon.add_argument("--stride", type=_positive, default=ReconRequest.stride,
                       help="sample every K-th frame of each episode")
    recon.add_argument("--max-frames", type=_positive, default=ReconRequest.max_frames,
                       help="at most N sampled frames, evenly spread over the dataset")
    recon.add_argument("--recon-warn", type=float, default=ReconRequest.warn_first_l1,
                       help="warn when a joint's mean first-action error exceeds this (raw units: rad, gripper 0..1)")
    recon.add_argument("--noise-seed", type=int, default=ReconRequest.noise_seed,
                       help="flow-sampling noise seed sent with every request (reproducible errors)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _recon_request(args: argparse.Namespace) -> ReconRequest | None:
    """The reconstruction request the options describe (problems with them become findings later)."""
    if args.server is None and not args.local_model:
        return None
    return ReconRequest(server=args.server, local_model=args.local_model, checkpoint=args.checkpoint,
                        device=args.device, stride=args.stride, max_frames=args.max_frames,
                        warn_first_l1=args.recon_warn, noise_seed=args.noise_seed)


def run(ds: Dataset, args: argparse.Namespace, out: TextIO) -> int:
    options = DoctorOptions(
        checkpoint=args.checkpoint,
        out=args.out,
        mode=parse_optional_mode(args.mode, "--mode"),
        delta_mask=args.delta_mask,
        action_horizon=args.action_horizon,
        asset_id=args.asset_id,
        plots=not args.no_plots,
        thresholds=CheckThresholds(lag_warn_frames=args.lag_warn),
        recon=_recon_request(args),
        stats_fit=args.stats_fit,
        stream=StreamSettings(exact_frames=args.exact_frames),
    )
    result = run_doctor(ds, options)
    for finding in result.findings:
        out.write(finding.line() + "\n")
    f = result.findings
    tail = f"; report {result.report}" if result.report else ""
    out.write(f"doctor: {count(f, 'error')} error(s), {count(f, 'warning')} warning(s), "
              f"{count(f, 'info')} info{tail}\n")
    return exit_code(f)
