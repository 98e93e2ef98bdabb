"""NormalizationPipeline: the one path between robot units and model space, with a report per request.

Why one object: the server, the oracle and the doctor must transform data identically, and the only way to be
sure is to call the same code. The model side calls:

    inputs, in_report = pipeline.prepare(state)                 # state: float32 [state_dim], robot units
    ...model runs on inputs.state (float32 [model_state_dim]) and inputs.state_bins (int64 [state_dim])...
    actions, out_report = pipeline.finish(model_actions, inputs.robot_state)   # [H, model_action_dim] -> [H, A]
    report = in_report.merged(out_report)                      # report.to_proto(), report.warnings

Input steps: select_state -> normalize_state -> discretize_state -> pad_state.
Output steps: unpad_actions -> denormalize_actions -> delta_to_absolute -> gripper_convention -> robot_limits.
Inverse steps (encode_actions): gripper_to_model -> absolute_to_delta -> normalize_actions -> pad_actions.

The three lists are built from the config in one place (`build_steps`) and run by one loop; the report is made from
what the steps leave in the data (model-space values, prompt bins, clips) and their records, so a new step is one
class plus its place in a list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from policy_norm.config import NormalizationConfig
from policy_norm.deltas import delta_state_indices
from policy_norm.errors import NormRangeError, StepError
from policy_norm.report import DimensionSummary, NormReport, NormWarning
from policy_norm.resolve import DegenerateDim, ResolvedNormalization, resolve
from policy_norm.spec import NormStatsSpec
from policy_norm.stats import NormStats
from policy_norm.steps import (
    STATE_BIN_OUT_OF_RANGE,
    AbsoluteToDelta,
    Clips,
    DeltaToAbsolute,
    Denormalize,
    DiscretizeState,
    GripperConvention,
    GripperToModel,
    Normalize,
    PadActions,
    PadState,
    RobotLimits,
    SelectState,
    Step,
    StepData,
    UnpadActions,
    check_array,
    run_steps,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Warning codes a strict pipeline turns into NormRangeError.
STRICT_CODES = frozenset(
    {"state_out_of_range", "state_bin_out_of_range", "action_out_of_range", "padded_output_nonzero",
     "action_limit_clipped"}
)


@dataclass(frozen=True)
class NormalizedInputs:
    """What `prepare` hands the model.

    state: normalized and zero-padded, float32 [model_state_dim]. state_bins: Pi0.5 prompt bins, int64
    [state_dim] in [-1, bins-1] as the trainers bin them (None when state_bins = 0). normalized_state: float32
    [state_dim], unpadded.
    robot_state: float32 [state_dim], the selected state in robot units; pass it to `finish`.
    """

    state: F32
    state_bins: I64 | None
    normalized_state: F32
    robot_state: F32


@dataclass(frozen=True)
class PipelineSteps:
    """The pipeline's three step lists, in the order they run."""

    inputs: tuple[Step, ...]  # prepare: robot state -> model inputs
    outputs: tuple[Step, ...]  # finish: model actions -> robot-unit actions
    inverse: tuple[Step, ...]  # encode_actions: robot-unit actions -> model space (finish without its clips)


def build_steps(config: NormalizationConfig, resolved: ResolvedNormalization,
                delta_index: tuple[int, ...]) -> PipelineSteps:
    """The step lists a config calls for (every step is always present; one with nothing to do says so)."""
    limits = config.joint_limits or {}
    gripper = GripperConvention(
        config.action_names, config.gripper_dims(), config.gripper.convention, config.gripper.source_range
    )
    inputs: tuple[Step, ...] = (
        SelectState(config.state_names),
        Normalize(resolved.state, "normalize_state"),
        DiscretizeState(config.state_bins, config.state_names),
        PadState(config.state_dim, config.model_state_dim),
    )
    outputs: tuple[Step, ...] = (
        UnpadActions(config.action_names, config.model_action_dim),
        Denormalize(resolved.actions),
        DeltaToAbsolute(config.action_names, config.state_names, delta_index),
        gripper,
        RobotLimits(
            config.action_names,
            tuple(limits[n][0] if n in limits else -np.inf for n in config.action_names),
            tuple(limits[n][1] if n in limits else np.inf for n in config.action_names),
        ),
    )
    inverse: tuple[Step, ...] = (
        GripperToModel(gripper),
        AbsoluteToDelta(config.action_names, config.state_names, delta_index),
        Normalize(resolved.actions, "normalize_actions"),
        PadActions(config.action_dim, config.model_action_dim),
    )
    return PipelineSteps(inputs, outputs, inverse)


def _produced(value: object, what: str) -> npt.NDArray[Any]:
    """An array a step list must have produced; its absence is a wrongly built list, said as such."""
    if not isinstance(value, np.ndarray):
        raise StepError(f"the step list produced no {what} (got {type(value).__name__}); check the pipeline's steps")
    return value


class NormalizationPipeline:
    """Built from a NormalizationConfig and NormStats; validates both at construction (raises on problems)."""

    def __init__(
        self, config: NormalizationConfig, stats: NormStats, config_where: str = "the normalization config"
    ) -> None:
        self.config = config
        self.stats = stats
        self.resolved: ResolvedNormalization = resolve(config, stats, config_where)
        self.mode = self.resolved.mode
        self.epsilon = self.resolved.epsilon
        self.delta_index = delta_state_indices(config.action_names, config.state_names, config.action_delta_mask)
        self.steps = build_steps(config, self.resolved, self.delta_index)

    # ---- facts ------------------------------------------------------------------------------------------

    @property
    def degenerate(self) -> tuple[DegenerateDim, ...]:
        return self.resolved.degenerate

    @property
    def notes(self) -> tuple[str, ...]:
        return self.resolved.notes

    @property
    def bound(self) -> float:
        return self.config.thresholds.bound(self.mode)

    def to_spec(self) -> NormStatsSpec:
        """The stats for PolicyMetadata (robot joint order, this pipeline's mode)."""
        return NormStatsSpec(
            mode=self.mode,
            state=self.resolved.state_stats.to_spec(),
            actions=self.resolved.action_stats.to_spec(),
        )

    def digest(self) -> str:
        return self.to_spec().digest()

    def describe(self) -> str:
        cfg = self.config
        lines = [
            f"normalization: {self.mode} ({self.epsilon} epsilon), {self.stats.source.describe()}",
            f"  state {cfg.state_dim} -> model {cfg.model_state_dim}, actions {cfg.action_dim} <- model "
            f"{cfg.model_action_dim}, state bins {cfg.state_bins}",
            f"  delta dims: {[n for n, m in zip(cfg.action_names, cfg.action_delta_mask, strict=True) if m]}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    # ---- input side -------------------------------------------------------------------------------------

    def prepare(self, state: object, names: Sequence[str] | None = None) -> tuple[NormalizedInputs, NormReport]:
        """Robot state (float32 [state_dim], or any order when `names` is given) -> model inputs + report."""
        data, records = run_steps(
            self.steps.inputs, StepData(state, names=None if names is None else tuple(names))
        )
        robot_state = _produced(data.robot_state, "robot state")
        normalized = _produced(data.model_space, "normalized state")
        padded = _produced(data.values, "padded state")
        clipped = data.clip_counts(self.config.state_dim)

        bound = self.bound
        names_ = self.config.state_names
        dims = tuple(
            DimensionSummary(
                name=names_[i],
                normalized_min=float(normalized[i]),
                normalized_max=float(normalized[i]),
                fraction_out_of_range=float(abs(normalized[i]) > bound),
                clipped_count=int(clipped[i]),
            )
            for i in range(len(names_))
        )
        warnings = self._state_warnings(normalized, robot_state, data.clips)
        report = NormReport(
            mode=self.mode,
            steps=records,
            state=dims,
            state_bins_out_of_range=int(data.flag_counts(self.config.state_dim, STATE_BIN_OUT_OF_RANGE).sum()),
            warnings=warnings,
        )
        self._enforce_strict(report)
        return NormalizedInputs(padded, data.state_bins, normalized, robot_state), report

    def _state_warnings(self, normalized: F32, robot_state: F32, clips: Sequence[Clips]) -> tuple[NormWarning, ...]:
        out: list[NormWarning] = []
        bound = self.bound
        frac_limit = self.config.thresholds.state_fraction
        nz = self.resolved.state
        for i, name in enumerate(self.config.state_names):
            v = float(normalized[i])
            field = f"observation.state[{i}] ({name})"
            out_of_range = float(abs(v) > bound) > frac_limit
            hits = [c for c in clips if c.counts[i]]
            clip_note = "".join(f"; {c.notes[i]}" for c in hits)
            if out_of_range:
                out.append(NormWarning(
                    "state_out_of_range", field,
                    f"normalized {v:+.3f} is outside [-{bound:g}, {bound:g}] (robot value {float(robot_state[i]):.4g}, "
                    f"stats {nz.describe_stats(i)}){clip_note}",
                ))
            elif hits:
                out.append(NormWarning(hits[0].code, field, f"normalized {v:+.3f} is outside [-1, 1]{clip_note}"))
        return tuple(out)

    # ---- output side ------------------------------------------------------------------------------------

    def finish(self, model_actions: object, state: object) -> tuple[F32, NormReport]:
        """Model output (float32 [H, model_action_dim]) + robot state of the observation -> robot-unit actions."""
        data, records = run_steps(self.steps.outputs, StepData(model_actions, robot_state=state))
        unpadded = _produced(data.model_space, "model-space actions")
        actions: F32 = _produced(data.values, "actions").astype(np.float32)
        check_array(actions, "finish", "actions", (unpadded.shape[0], self.config.action_dim), np.float32,
                    self.config.action_names)
        clipped = data.clip_counts(self.config.action_dim)

        bound = self.bound
        names = self.config.action_names
        out_frac = np.mean(np.abs(unpadded) > bound, axis=0)
        dims = tuple(
            DimensionSummary(
                name=names[j],
                normalized_min=float(unpadded[:, j].min()),
                normalized_max=float(unpadded[:, j].max()),
                fraction_out_of_range=float(out_frac[j]),
                clipped_count=int(clipped[j]),
            )
            for j in range(len(names))
        )
        warnings = self._action_warnings(unpadded, out_frac, data.max_abs_padded, data.clips)
        report = NormReport(mode=self.mode, steps=records, actions=dims, warnings=warnings)
        self._enforce_strict(report)
        return actions, report

    def _action_warnings(
        self,
        unpadded: F32,
        out_frac: npt.NDArray[np.float64],
        max_pad: float,
        clips: Sequence[Clips],
    ) -> tuple[NormWarning, ...]:
        th = self.config.thresholds
        bound = self.bound
        out: list[NormWarning] = []
        for j, name in enumerate(self.config.action_names):
            field = f"actions[{j}] ({name})"
            if out_frac[j] > th.action_fraction:
                out.append(NormWarning(
                    "action_out_of_range", field,
                    f"{out_frac[j]:.0%} of the chunk is outside [-{bound:g}, {bound:g}] in model space "
                    f"(min {float(unpadded[:, j].min()):+.3f}, max {float(unpadded[:, j].max()):+.3f})",
                ))
            out.extend(NormWarning(c.code, field, c.notes[j]) for c in clips if c.counts[j])
        if max_pad > th.padded_bound:
            out.append(NormWarning(
                "padded_output_nonzero", f"model actions[:, {self.config.action_dim}:]",
                f"padded output dims reach |{max_pad:.3g}| (> {th.padded_bound:g}); the model was trained to emit ~0 "
                f"there: is model_action_dim / action order right?",
            ))
        return tuple(out)

    def _enforce_strict(self, report: NormReport) -> None:
        if not self.config.strict:
            return
        bad = [w for w in report.warnings if w.code in STRICT_CODES]
        if bad:
            listing = "; ".join(f"{w.field}: {w.message}" for w in bad)
            raise NormRangeError(f"strict normalization rejected the request: {listing}")

    # ---- encoding robot-unit actions (RTC prefixes, self-test) ------------------------------------------

    def encode_actions(self, actions: object, state: object) -> F32:
        """Robot-unit actions [H, action_dim] -> padded model space [H, model_action_dim] (the inverse of
        `finish` without its clips): gripper to model units, absolute -> delta on masked dims, normalize, zero-pad."""
        robot = check_array(actions, "encode_actions", "actions", (None, self.config.action_dim), np.float32,
                            self.config.action_names)
        data, _ = run_steps(self.steps.inverse, StepData(robot, robot_state=state))
        out: F32 = _produced(data.values, "encoded actions").astype(np.float32, copy=False)
        return out

    def normalize_states(self, states: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Robot-unit states [N, state_dim] -> model space (float64, no casting), for checks over datasets."""
        arr = np.asarray(states, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.config.state_dim:
            raise StepError(f"normalize_states: states must be [N, {self.config.state_dim}], got {list(arr.shape)}")
        return self.resolved.state.normalize(arr)
