"""Check stats against the robot and the mode, once, and turn them into per-feature normalizers.

Why: every way stats go wrong (wrong dim count, joints in another order, q99 <= q01, a z-score run with only
quantile stats, a gripper that never moved in the training data) is cheaper to catch at load than to
discover as a flying arm. What passes becomes a `FeatureNormalizer` whose arrays are known-good, so the
per-request steps only assert shapes and finiteness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policy_norm.config import NormalizationConfig
from policy_norm.errors import NormConfigError, NormStatsError
from policy_norm.modes import NormMode
from policy_norm.numeric import MODE_FORMULAS
from policy_norm.stats import FeatureNormStats, NormStats

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DegenerateDim:
    """A dim whose range/std is ~0, and what is done with it."""

    feature: str
    index: int
    name: str
    spread: float
    policy: str

    def describe(self) -> str:
        what = {
            "passthrough": "passed through unnormalized",
            "zero": "pinned to 0 in model space (emitted as its constant value)",
            "refuse": "refused",
        }[self.policy]
        return f"{self.feature}[{self.index}] ({self.name}) is degenerate (spread {self.spread:.3g}): {what}"


@dataclass(frozen=True)
class FeatureNormalizer:
    """Normalize / unnormalize one feature with known-good stats; degenerate dims handled by policy."""

    feature: str
    names: tuple[str, ...]
    mode: NormMode
    epsilon: str
    a: F64  # q01 (quantile) or mean (z-score); zeros in identity mode
    b: F64  # q99 (quantile) or std (z-score); ones in identity mode
    degenerate: tuple[bool, ...]
    degenerate_policy: str
    constant: F64  # the value a degenerate dim is emitted as under the "zero" policy

    @property
    def dim(self) -> int:
        return len(self.names)

    def normalize(self, x: npt.ArrayLike) -> F64:
        """x [..., D] in robot units -> model space; returns a new float64 array."""
        values = np.asarray(x, dtype=np.float64)
        out = MODE_FORMULAS[self.mode].normalize(values, self.a, self.b, self.epsilon)
        mask = np.asarray(self.degenerate, dtype=bool)
        if mask.any():
            if self.degenerate_policy == "passthrough":
                out = np.where(mask, values, out)
            else:
                out = np.where(mask, 0.0, out)
        return out

    def unnormalize(self, n: npt.ArrayLike) -> F64:
        """n [..., D] in model space -> robot units; returns a new float64 array."""
        values = np.asarray(n, dtype=np.float64)
        out = MODE_FORMULAS[self.mode].unnormalize(values, self.a, self.b, self.epsilon)
        mask = np.asarray(self.degenerate, dtype=bool)
        if mask.any():
            if self.degenerate_policy == "passthrough":
                out = np.where(mask, values, out)
            else:
                out = np.where(mask, self.constant, out)
        return out

    def label(self, i: int) -> str:
        return f"{self.feature}[{i}] ({self.names[i]})"

    def describe_stats(self, i: int) -> str:
        """Dim i's stats for messages: 'q01 -0.5, q99 1.2', 'mean 0.1, std 0.3' or 'identity'."""
        return MODE_FORMULAS[self.mode].describe_stats(float(self.a[i]), float(self.b[i]))


@dataclass(frozen=True)
class ResolvedNormalization:
    mode: NormMode
    epsilon: str
    state: FeatureNormalizer
    actions: FeatureNormalizer
    degenerate: tuple[DegenerateDim, ...]
    notes: tuple[str, ...]
    # The stats in the robot's joint order, named by the config (what PolicyMetadata and digests use).
    state_stats: FeatureNormStats
    action_stats: FeatureNormStats


def resolve_mode(config_mode: NormMode | None, stats: NormStats, config_where: str) -> NormMode:
    """The mode from the config or the checkpoint's own record; both absent or disagreeing is an error."""
    if config_mode is not None and stats.mode is not None and config_mode != stats.mode:
        raise NormConfigError(
            f"mode conflict: {config_where} says '{config_mode}' but {stats.source.describe()} records "
            f"'{stats.mode}'; remove one or make them agree"
        )
    mode = config_mode or stats.mode
    if mode is None:
        raise NormConfigError(
            f"normalization mode unknown: {stats.source.describe()} does not record it; set \"mode\" "
            f"(\"{NormMode.QUANTILE}\" for Pi0.5/pi0-FAST, \"{NormMode.ZSCORE}\" for Pi0) in {config_where}"
        )
    return mode


def resolve_epsilon(config_eps: str | None, stats: NormStats, config_where: str) -> str:
    eps = config_eps or stats.epsilon
    if eps is None:
        raise NormConfigError(
            f"epsilon convention unknown: {stats.source.describe()} does not record it; set \"epsilon\" "
            f"(\"openpi\" or \"lerobot\") in {config_where}"
        )
    return eps


def _ordered(feat: FeatureNormStats, names: tuple[str, ...], label: str, where: str) -> tuple[FeatureNormStats, str]:
    """Stats in the robot's joint order; names are checked when the source has them."""
    if feat.dim != len(names):
        hint = ""
        if feat.dim > len(names):
            hint = (" (openpi would silently use the first dims of longer stats, e.g. stats at the padded model "
                    "width; this layer does not guess which dims are the robot's: write stats at the robot's dims)")
        raise NormStatsError(
            f"{where}: {label} stats have {feat.dim} dims, the robot's {label} has {len(names)} "
            f"({', '.join(names)}){hint}"
        )
    if feat.names is None:
        return FeatureNormStats(**{k: feat.get(k) for k in feat.present()}, count=feat.count, names=names), ""
    if feat.names == names:
        return feat, ""
    if set(feat.names) != set(names):
        missing = [n for n in names if n not in feat.names]
        extra = [n for n in feat.names if n not in names]
        raise NormStatsError(
            f"{where}: {label} joint names differ from the robot's: missing {missing}, unexpected {extra}"
        )
    order = [list(feat.names).index(n) for n in names]
    return feat.reordered(order, names), f"{label} stats reordered by joint name to the robot's order"


def _mode_arrays(feat: FeatureNormStats, mode: NormMode, label: str, where: str) -> tuple[F64, F64]:
    f = MODE_FORMULAS[mode]
    if f.stats is None:
        return np.zeros(feat.dim), np.ones(feat.dim)
    ka, kb = f.stats
    a, b = feat.get(ka), feat.get(kb)
    if a is None or b is None:
        have = ", ".join(feat.present())
        hint = ""
        if mode == NormMode.ZSCORE and feat.q01 is not None:
            hint = " (these look like quantile stats: quantile stats cannot be used as z-score; set mode 'quantile')"
        elif mode == NormMode.QUANTILE and feat.mean is not None:
            hint = (
                " (z-score stats cannot be used as quantile stats; recompute stats with quantiles, e.g. "
                "`python -m replay stats`, or set mode 'zscore')"
            )
        raise NormStatsError(f"{where}: mode '{mode}' needs {label}.{ka} and {label}.{kb}; it has {have}{hint}")
    problem = f.problem(a, b, label, feat.names)
    if problem is not None:
        raise NormStatsError(f"{where}: {problem}")
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


def _normalizer(
    feat: FeatureNormStats, label: str, mode: NormMode, epsilon: str, config: NormalizationConfig, where: str
) -> tuple[FeatureNormalizer, list[DegenerateDim]]:
    names = feat.names or ()
    f = MODE_FORMULAS[mode]
    a, b = _mode_arrays(feat, mode, label, where)
    spread = f.spread(a, b)
    constant = f.center(a, b)
    if f.stats is None:
        degenerate = np.zeros(feat.dim, bool)
    else:
        degenerate = (spread < max(config.degenerate_threshold, 0.0)) | (spread <= 0.0)
    dims = [
        DegenerateDim(label, int(i), names[int(i)], float(spread[int(i)]), config.degenerate_policy)
        for i in np.flatnonzero(degenerate)
    ]
    normalizer = FeatureNormalizer(
        feature=label,
        names=names,
        mode=mode,
        epsilon=epsilon,
        a=a,
        b=b,
        degenerate=tuple(bool(d) for d in degenerate),
        degenerate_policy=config.degenerate_policy if dims else "none",
        constant=np.asarray(constant, dtype=np.float64),
    )
    return normalizer, dims


def resolve(
    config: NormalizationConfig, stats: NormStats, config_where: str = "the normalization config"
) -> ResolvedNormalization:
    """Validate `stats` for `config` and build the normalizers; raises naming the field on any problem."""
    where = stats.source.describe()
    mode = resolve_mode(config.mode, stats, config_where)
    epsilon = resolve_epsilon(config.epsilon, stats, config_where)
    if stats.action_delta_mask is not None and stats.action_delta_mask != config.action_delta_mask:
        raise NormConfigError(
            f"delta mask conflict: {where} were computed with action_delta_mask {list(stats.action_delta_mask)} "
            f"but {config_where} has {list(config.action_delta_mask)}"
        )
    notes: list[str] = []
    state_stats, note = _ordered(stats.state, config.state_names, "state", where)
    if note:
        notes.append(note)
    action_stats, note = _ordered(stats.actions, config.action_names, "actions", where)
    if note:
        notes.append(note)
    state, deg_s = _normalizer(state_stats, "state", mode, epsilon, config, where)
    actions, deg_a = _normalizer(action_stats, "actions", mode, epsilon, config, where)
    degenerate = tuple(deg_s + deg_a)
    if degenerate and config.degenerate_policy == "refuse":
        listing = "; ".join(d.describe().replace(": refused", "") for d in degenerate)
        raise NormStatsError(
            f"{where}: degenerate dims (range/std below {config.degenerate_threshold:g}, normalizing would "
            f"amplify noise without bound): {listing}. Set degenerate_policy to 'passthrough' or 'zero' to serve "
            f"anyway, or fix the stats"
        )
    notes.extend(d.describe() for d in degenerate)
    return ResolvedNormalization(mode, epsilon, state, actions, degenerate, tuple(notes), state_stats, action_stats)
