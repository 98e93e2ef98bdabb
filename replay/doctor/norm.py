"""The doctor's checkpoint checks: is this dataset normalized by this checkpoint's stats, in this mode?

Why here and thin: all the reading (openpi / LeRobot checkpoint dirs, policy_config.json) and all the judging
(never normalized, stats from another dataset, double normalization, output denormalization skipped, mode or
delta mask wrong, degenerate dims, state bins) live in `policy_norm`, the same code the server
runs at startup. This module only builds the pipeline for a dataset and turns results into findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from policy_norm.checkpoint import POLICY_CONFIG_FILE, load_checkpoint_normalization
from policy_norm.config import NormalizationConfig
from policy_norm.datacheck import DataCheckResult, DataCheckThresholds, check_data
from policy_norm.errors import NormalizationError
from policy_norm.modes import NormMode
from policy_norm.pipeline import NormalizationPipeline
from policy_norm.selftest import round_trip_selftest
from replay.doctor.findings import Finding
from replay.doctor.raw import DoctorEpisode
from robodata.dataset import DatasetInfo


@dataclass(frozen=True)
class CheckpointRequest:
    """The checkpoint dir, plus what to assume where it has no policy_config.json."""

    checkpoint: Path
    mode: NormMode | None = None
    delta_mask: tuple[bool, ...] | None = None
    action_horizon: int | None = None
    asset_id: str | None = None
    # Whether the data must span the stats' range (the training set) or only lie inside it (a recording).
    coverage: bool = True


@dataclass(frozen=True)
class NormSection:
    """What the report shows about normalization."""

    pipeline: NormalizationPipeline
    data: DataCheckResult
    config_source: str


def _config(info: DatasetInfo, req: CheckpointRequest, findings: list[Finding]) -> NormalizationConfig | None:
    """None = read policy_config.json; else a config built from the dataset's names and the request."""
    if (req.checkpoint / POLICY_CONFIG_FILE).is_file():
        return None
    mask = req.delta_mask
    if mask is None:
        mask = (False,) * info.action_dim
        findings.append(Finding("info", "delta_mask_assumed", "checkpoint",
                                f"no {POLICY_CONFIG_FILE} and no --delta-mask: actions assumed absolute"))
    return NormalizationConfig(
        state_names=info.state_names,
        action_names=info.action_names,
        action_delta_mask=mask,
        model_state_dim=info.state_dim,
        model_action_dim=info.action_dim,
        mode=req.mode,
        action_horizon=req.action_horizon,
        asset_id=req.asset_id,
    )


def checkpoint_findings(info: DatasetInfo, episodes: Sequence[DoctorEpisode], req: CheckpointRequest) -> tuple[
    list[Finding], NormSection | None
]:
    findings: list[Finding] = []
    try:
        given = _config(info, req, findings)
        loaded = load_checkpoint_normalization(req.checkpoint, given, req.asset_id if given is None else None)
        config = loaded.config
        if req.mode is not None and given is None and config.mode not in (None, req.mode):
            findings.append(Finding("warning", "mode_override_ignored", "checkpoint",
                                    f"--mode {req.mode} ignored: {loaded.config_where} sets '{config.mode}'"))
        refuse = config.degenerate_policy == "refuse"
        analysis = replace(config, degenerate_policy="zero") if refuse else config
        pipeline = NormalizationPipeline(analysis, loaded.stats, loaded.config_where)
    except NormalizationError as err:
        findings.append(Finding("error", "checkpoint_unusable", str(req.checkpoint), str(err)))
        return findings, None
    if (config.state_dim, config.action_dim) != (info.state_dim, info.action_dim):
        findings.append(Finding(
            "error", "dims_mismatch", "checkpoint",
            f"the normalization config has {config.state_dim} state / {config.action_dim} action dims, the dataset "
            f"{info.state_dim} / {info.action_dim}",
        ))
        return findings, None
    if (config.state_names, config.action_names) != (info.state_names, info.action_names):
        findings.append(Finding(
            "warning", "names_differ", "checkpoint",
            "the dataset's joint names differ from the normalization config's; dims are compared by position "
            f"(dataset state {list(info.state_names)}, config {list(config.state_names)})",
        ))
    findings.append(Finding("info", "normalization", "checkpoint", pipeline.describe().replace("\n  ", "; ")))
    rt = round_trip_selftest(pipeline)
    if not rt.ok:
        findings.append(Finding("error", "round_trip_failed", "checkpoint", rt.summary().replace("\n", "; ")))
    data = check_data(pipeline, episodes, DataCheckThresholds(coverage=req.coverage))
    for f in data.findings:
        severity = f.severity
        message = f.message
        if f.code == "degenerate_dim" and refuse:
            severity = "error"
            message += " (the configured policy 'refuse' would refuse to start)"
        findings.append(Finding(severity, f.code, f.field, message))
    return findings, NormSection(pipeline, data, loaded.config_where)
