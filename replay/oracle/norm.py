"""The normalized view of action errors: both chunks mapped into the policy's model space before comparing.

Why: a raw error of 0.05 rad means little on a joint that spans 2 rad and a lot on one that spans 0.06 rad;
in model space (quantile: [q01, q99] -> [-1, 1]) every joint is on the scale the model was trained on, which
is where a normalization bug shows. The mapping is always `NormalizationPipeline.encode_actions` (delta mask,
gripper convention, normalization), never a copy of its formulas:

- a local checkpoint: the checkpoint's own pipeline, exactly as it serves;
- a server: a pipeline rebuilt from its PolicyMetadata (norm_stats + action_delta_mask). The metadata does not
  carry the epsilon convention, the gripper convention or the degenerate-dim policy, so openpi's epsilon
  (relative difference ~1e-6 / range), the plain 0..1 gripper and pass-through of degenerate dims are assumed,
  and the view's description says so. A policy that declares mode "identity" but carries q01/q99 (the dataset
  policy does) is viewed in quantile mode with them; with no stats at all there is no normalized view.

Prediction and ground truth are encoded with the same observation state, so the delta step cancels in their
difference and the normalized error is the raw error scaled per joint (2 / (q99 - q01) in quantile mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policy_norm.config import NormalizationConfig
from policy_norm.errors import NormalizationError
from policy_norm.modes import NormMode
from policy_norm.numeric import MODE_FORMULAS
from policy_norm.pipeline import NormalizationPipeline
from policy_norm.stats import FeatureNormStats, NormStats, StatsSource
from protos import policy_pb2 as pb

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_STAT_FIELDS = ("mean", "std", "q01", "q99", "min", "max")


@dataclass(frozen=True)
class NormalizedView:
    """Maps robot-unit action chunks into model space with one pipeline (names in the pipeline's order)."""

    pipeline: NormalizationPipeline
    description: str

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.pipeline.config.state_names

    @property
    def action_names(self) -> tuple[str, ...]:
        return self.pipeline.config.action_names

    def encode(self, actions: npt.ArrayLike, state: npt.ArrayLike) -> F64:
        """actions float [H, A] and the observation state [S] (robot units, this view's order) -> [H, A]."""
        chunk = np.asarray(actions, dtype=np.float32)
        encoded = self.pipeline.encode_actions(chunk, np.asarray(state, dtype=np.float32))
        return np.asarray(encoded[:, : len(self.action_names)], dtype=np.float64)


def view_from_pipeline(pipeline: NormalizationPipeline, where: str) -> tuple[NormalizedView | None, str]:
    """The checkpoint's own pipeline (an identity pipeline gives no normalized view)."""
    if pipeline.mode == NormMode.IDENTITY:
        return None, f"{where} normalizes in identity mode: raw units only"
    cfg = pipeline.config
    deltas = [n for n, m in zip(cfg.action_names, cfg.action_delta_mask, strict=True) if m]
    text = (f"{where}'s normalization pipeline ({pipeline.mode}, {pipeline.epsilon} epsilon, "
            f"{len(deltas)} delta dim(s))")
    if pipeline.degenerate:
        text += "; " + "; ".join(d.describe() for d in pipeline.degenerate)
    return NormalizedView(pipeline, text), text


def _feature(stats: pb.FeatureStats) -> dict[str, list[float]]:
    return {k: [float(v) for v in getattr(stats, k)] for k in _STAT_FIELDS if len(getattr(stats, k))}


def _placeholder(dim: int) -> dict[str, list[float]]:
    """State stats for a pipeline built only to encode actions: the state side is never normalized here."""
    return {"mean": [0.0] * dim, "std": [1.0] * dim, "q01": [-1.0] * dim, "q99": [1.0] * dim}


def _mode_for(declared: str, actions: dict[str, list[float]]) -> tuple[NormMode | None, str]:
    """The mode to view in, and what to say about it (None: no stats to normalize with)."""
    if declared in (NormMode.QUANTILE, NormMode.ZSCORE):
        return NormMode(declared), f"mode {declared}"
    said = f"the policy declares mode '{declared or NormMode.IDENTITY}'"
    if "q01" in actions and "q99" in actions:
        return NormMode.QUANTILE, f"{said} but carries q01/q99: viewed in quantile mode with them"
    if "mean" in actions and "std" in actions:
        return NormMode.ZSCORE, f"{said} but carries mean/std: viewed in z-score mode with them"
    return None, f"{said} and carries no action stats: raw units only"


def view_from_metadata(md: pb.PolicyMetadata, where: str) -> tuple[NormalizedView | None, str]:
    """A pipeline rebuilt from a server's PolicyMetadata (see the module docstring for what is assumed)."""
    state_names, action_names = tuple(md.state_names), tuple(md.action_names)
    if not md.HasField("norm_stats"):
        return None, f"{where} publishes no norm_stats: raw units only"
    actions = _feature(md.norm_stats.actions)
    mode, how = _mode_for(md.norm_stats.mode, actions)
    if mode is None:
        return None, f"{where}: {how}"
    state = _feature(md.norm_stats.state)
    needs = MODE_FORMULAS[mode].stats or ()
    if not all(k in state and len(state[k]) == len(state_names) for k in needs):
        state = _placeholder(len(state_names))
    mask = tuple(md.action_delta_mask) or (False,) * len(action_names)
    try:
        stats = NormStats(
            state=FeatureNormStats.from_mapping(state, "norm_stats.state"),
            actions=FeatureNormStats.from_mapping(actions, "norm_stats.actions"),
            source=StatsSource("policy-metadata", where), mode=mode, epsilon="openpi",
        )
        config = NormalizationConfig(
            state_names=state_names, action_names=action_names, action_delta_mask=mask,
            model_state_dim=len(state_names), model_action_dim=len(action_names), mode=mode, epsilon="openpi",
            state_bins=0, degenerate_policy="passthrough",
        )
        pipeline = NormalizationPipeline(config, stats, f"{where}'s metadata")
    except NormalizationError as err:
        return None, f"{where}: could not build the normalized view from its norm_stats ({err}): raw units only"
    deltas = sum(mask)
    text = (f"{where}'s metadata norm_stats ({how}; {deltas} delta dim(s); openpi epsilon assumed, the metadata "
            f"does not record it)")
    if pipeline.degenerate:
        text += "; " + "; ".join(d.describe() for d in pipeline.degenerate)
    return NormalizedView(pipeline, text), text
