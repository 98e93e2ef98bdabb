"""NormalizationPipeline: the one path between robot units and model space, with a report per request.

Why one object: the server, the oracle and the doctor must transform data identically, and the only way to be
sure is to call the same code. The model side calls:

    inputs, in_report = pipeline.prepare(state)                 # state: float32 [state_dim], robot units
    ...model runs on inputs.state (float32 [model_state_dim]) and inputs.state_bins (int64 [state_dim])...
    actions, out_report = pipeline.finish(model_actions, inputs.robot_state)   # [H, model_action_dim] -> [H, A]
    report = in_report.merged(out_report)                      # report.to_proto(), report.warnings

Input steps: select_state -> normalize_state -> discretize_state -> pad_state.
Output steps: unpad_actions -> denormalize_actions -> delta_to_absolute -> gripper_convention -> robot_limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policy_norm.config import NormalizationConfig
from policy_norm.deltas import delta_state_indices
from policy_norm.errors import NormRangeError, StepError
from policy_norm.report import DimensionSummary, NormReport, NormWarning, StepRecord
from policy_norm.resolve import DegenerateDim, ResolvedNormalization, resolve
from policy_norm.spec import NormStatsSpec
from policy_norm.stats import NormStats
from policy_norm.steps import (
    AbsoluteToDelta,
    DeltaToAbsolute,
    Denormalize,
    DiscretizeState,
    GripperConvention,
    Normalize,
    PadState,
    RobotLimits,
    SelectState,
    UnpadActions,
    check_array,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Warning codes a strict pipeline turns into NormRangeError.
STRICT_CODES = frozenset(
    {"state_out_of_range", "state_bin_clipped", "action_out_of_range", "padded_output_nonzero", "action_limit_clipped"}
)


@dataclass(frozen=True)
class ModelInputs:
    """What `prepare` hands the model.

    state: normalized and zero-padded, float32 [model_state_dim]. state_bins: Pi0.5 prompt bins, int64
    [state_dim] in [0, bins-1] (None when state_bins = 0). normalized_state: float32 [state_dim], unpadded.
    robot_state: float32 [state_dim], the selected state in robot units; pass it to `finish`.
    """

    state: F32
    state_bins: I64 | None
    normalized_state: F32
    robot_state: F32


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
        limits = config.joint_limits or {}
        self._select = SelectState(config.state_names)
        self._normalize_state = Normalize(self.resolved.state, "normalize_state")
        self._discretize = DiscretizeState(config.state_bins, config.state_names)
        self._pad = PadState(config.state_dim, config.model_state_dim)
        self._unpad = UnpadActions(config.action_names, config.model_action_dim)
        self._denormalize = Denormalize(self.resolved.actions)
        self._to_absolute = DeltaToAbsolute(config.action_names, config.state_names, self.delta_index)
        self._gripper = GripperConvention(
            config.action_names, config.gripper_dims(), config.gripper.convention, config.gripper.source_range
        )
        self._limits = RobotLimits(
            config.action_names,
            tuple(limits[n][0] if n in limits else -np.inf for n in config.action_names),
            tuple(limits[n][1] if n in limits else np.inf for n in config.action_names),
        )
        self._to_delta = AbsoluteToDelta(config.action_names, config.state_names, self.delta_index)
        self._normalize_actions = Normalize(self.resolved.actions, "normalize_actions")

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

    def prepare(self, state: object, names: Sequence[str] | None = None) -> tuple[ModelInputs, NormReport]:
        """Robot state (float32 [state_dim], or any order when `names` is given) -> model inputs + report."""
        records: list[StepRecord] = []
        robot_state, rec = self._select.run(state, names)
        records.append(rec)
        normalized, rec = self._normalize_state.run(robot_state)
        records.append(rec)
        bins, clipped, rec = self._discretize.run(normalized)
        records.append(rec)
        padded, rec = self._pad.run(normalized)
        records.append(rec)

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
        warnings = self._state_warnings(normalized, robot_state, clipped)
        report = NormReport(
            mode=self.mode,
            steps=tuple(records),
            state=dims,
            state_bins_clipped=int(clipped.sum()),
            warnings=warnings,
        )
        self._enforce_strict(report)
        return ModelInputs(padded, bins, normalized, robot_state), report

    def _state_warnings(self, normalized: F32, robot_state: F32, clipped: npt.NDArray[np.bool_]) -> tuple[
        NormWarning, ...
    ]:
        out: list[NormWarning] = []
        bound = self.bound
        frac_limit = self.config.thresholds.state_fraction
        nz = self.resolved.state
        for i, name in enumerate(self.config.state_names):
            v = float(normalized[i])
            field = f"observation.state[{i}] ({name})"
            out_of_range = float(abs(v) > bound) > frac_limit
            bin_note = ""
            if clipped[i]:
                bin_note = "; its prompt bin is clipped to 0" if v < -1 else "; its prompt bin saturates at the top"
            if out_of_range:
                out.append(NormWarning(
                    "state_out_of_range", field,
                    f"normalized {v:+.3f} is outside [-{bound:g}, {bound:g}] (robot value {float(robot_state[i]):.4g}, "
                    f"stats {self._stats_text(nz.a[i], nz.b[i])}){bin_note}",
                ))
            elif clipped[i]:
                out.append(NormWarning(
                    "state_bin_clipped", field, f"normalized {v:+.3f} is outside [-1, 1]{bin_note}"
                ))
        return tuple(out)

    def _stats_text(self, a: float, b: float) -> str:
        if self.mode == "quantile":
            return f"q01 {a:.4g}, q99 {b:.4g}"
        if self.mode == "zscore":
            return f"mean {a:.4g}, std {b:.4g}"
        return "identity"

    # ---- output side ------------------------------------------------------------------------------------

    def finish(self, model_actions: object, state: object) -> tuple[F32, NormReport]:
        """Model output (float32 [H, model_action_dim]) + robot state of the observation -> robot-unit actions."""
        records: list[StepRecord] = []
        unpadded, max_pad, rec = self._unpad.run(model_actions)
        records.append(rec)
        denorm, rec = self._denormalize.run(unpadded)
        records.append(rec)
        absolute, rec = self._to_absolute.run(denorm, state)
        records.append(rec)
        gripped, grip_clips, rec = self._gripper.run(absolute)
        records.append(rec)
        limited, limit_clips, rec = self._limits.run(gripped)
        records.append(rec)
        actions: F32 = limited.astype(np.float32)
        check_array(actions, "finish", "actions", (unpadded.shape[0], self.config.action_dim), np.float32,
                    self.config.action_names)

        bound = self.bound
        names = self.config.action_names
        out_frac = np.mean(np.abs(unpadded) > bound, axis=0)
        dims = tuple(
            DimensionSummary(
                name=names[j],
                normalized_min=float(unpadded[:, j].min()),
                normalized_max=float(unpadded[:, j].max()),
                fraction_out_of_range=float(out_frac[j]),
                clipped_count=int(grip_clips[j] + limit_clips[j]),
            )
            for j in range(len(names))
        )
        warnings = self._action_warnings(unpadded, out_frac, max_pad, grip_clips, limit_clips, gripped)
        report = NormReport(mode=self.mode, steps=tuple(records), actions=dims, warnings=warnings)
        self._enforce_strict(report)
        return actions, report

    def _action_warnings(
        self,
        unpadded: F32,
        out_frac: npt.NDArray[np.float64],
        max_pad: float,
        grip_clips: I64,
        limit_clips: I64,
        before_limits: npt.NDArray[np.float64],
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
            if grip_clips[j]:
                out.append(NormWarning(
                    "gripper_clipped", field, f"{int(grip_clips[j])} value(s) clipped into the gripper range [0, 1]"
                ))
            if limit_clips[j]:
                lo, hi = self._limits.lower[j], self._limits.upper[j]
                worst = float(np.max(np.maximum(before_limits[:, j] - hi, lo - before_limits[:, j])))
                out.append(NormWarning(
                    "action_limit_clipped", field,
                    f"{int(limit_clips[j])} value(s) clipped to the joint limits [{lo:.4g}, {hi:.4g}] "
                    f"(worst {worst:.3g} beyond)",
                ))
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
        delta = self._to_delta.run(self._gripper.inverse(robot.astype(np.float64)).astype(np.float32), state)
        normalized, _ = self._normalize_actions.run(delta.astype(np.float32))
        out = np.zeros((normalized.shape[0], self.config.model_action_dim), dtype=np.float32)
        out[:, : self.config.action_dim] = normalized
        return out

    def normalize_states(self, states: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Robot-unit states [N, state_dim] -> model space (float64, no casting), for checks over datasets."""
        arr = np.asarray(states, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.config.state_dim:
            raise StepError(f"normalize_states: states must be [N, {self.config.state_dim}], got {list(arr.shape)}")
        return self.resolved.state.normalize(arr)
