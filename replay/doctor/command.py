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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from policy_norm.checkpoint import read_policy_config
from policy_norm.errors import NormalizationError
from policy_norm.modes import MODE_NAMES, NormMode, parse_optional_mode
from replay.doctor.arms import ArmResult, ArmThresholds, analyze_arms, arm_findings, arm_layout
from replay.doctor.bins import BinCoverage, BinThresholds, bin_coverage, bin_findings
from replay.doctor.checks import (
    CheckThresholds,
    LagResult,
    check_degenerate,
    check_finite,
    check_gripper_convention,
    check_normalized_looking_actions,
    check_outliers,
    check_stored_stats,
    check_timestamps,
    delta_evidence,
    delta_mask_findings,
    estimate_lags,
    lag_findings,
    state_index_for_actions,
)
from replay.doctor.findings import Finding, count
from replay.doctor.norm import CheckpointRequest, NormSection, checkpoint_findings
from replay.doctor.raw import load_episodes
from replay.doctor.recon import ReconRequest, ReconResult, reconstruction
from replay.stats_tool import parse_delta_mask
from robodata.dataset import Dataset

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
    # How the data must fit the checkpoint's stats: "coverage" (span them: the training set), "containment" (lie
    # inside them: a recording or a few episodes), "auto" (containment for our recordings, else coverage).
    stats_fit: str = "auto"


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
    info = ds.info
    th = options.thresholds
    episodes, findings = load_episodes(ds)
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
        findings += check_outliers(episodes, actions, info.action_names, th)
        lag = estimate_lags(episodes, info.action_names, state_index, th)
        findings += lag_findings(lag, info.fps, th)
        evidence = delta_evidence(episodes, info.action_names, state_index, th)
        mask, mask_source = options.delta_mask, "--delta-mask"
        if options.checkpoint is not None:
            from_config = _config_mask(options.checkpoint)
            if from_config is not None:
                mask, mask_source = from_config, "the checkpoint's policy_config.json"
        if mask is not None and len(mask) != info.action_dim:
            findings.append(Finding("error", "delta_mask_length", mask_source,
                                    f"delta mask has {len(mask)} entries, the dataset {info.action_dim} action dims"))
            mask = None
        findings += delta_mask_findings(evidence, info.action_names, mask, mask_source)
        findings += check_normalized_looking_actions(states, actions, info.action_names, state_index, evidence)
        layout = arm_layout(info.state_names, info.action_names)
        if layout is not None:
            arms = analyze_arms(episodes, layout, states, actions, options.arm_thresholds)
            findings += arm_findings(arms, options.arm_thresholds)
        if len(episodes) == len(ds.episode_indices()) and info.num_episodes == len(episodes):
            aggregated = any("aggregated" in note for note in info.notes)
            findings += check_stored_stats(info.stats, states, actions, info.state_names, info.action_names, th,
                                           quantiles_exact=not aggregated)
        if options.checkpoint is not None:
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
                    findings += bin_findings(bins, options.bin_thresholds, reported)
        if options.recon is not None:
            recon_findings, recon = reconstruction(ds, episodes, options.recon)
            findings += recon_findings
    else:
        findings.append(Finding("error", "no_episodes", str(info.path), "no episode could be read"))
    report: Path | None = None
    plots: list[Path] = []
    if options.out is not None:
        # Imported here: matplotlib costs ~0.3 s, which every `python -m replay` command would otherwise pay.
        from replay.doctor.report import ReportInputs, write_markdown, write_plots

        options.out.mkdir(parents=True, exist_ok=True)
        inputs = ReportInputs(info, episodes, findings, lag, dts, norm,
                              str(options.checkpoint) if options.checkpoint else None, arms, bins, recon)
        if options.plots:
            plots = write_plots(inputs, options.out, state_index)
        report = write_markdown(inputs, options.out, plots)
    return DoctorResult(findings, report, plots, norm, arms, bins, recon)


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
    )
    result = run_doctor(ds, options)
    for finding in result.findings:
        out.write(finding.line() + "\n")
    f = result.findings
    tail = f"; report {result.report}" if result.report else ""
    out.write(f"doctor: {count(f, 'error')} error(s), {count(f, 'warning')} warning(s), "
              f"{count(f, 'info')} info{tail}\n")
    return exit_code(f)
