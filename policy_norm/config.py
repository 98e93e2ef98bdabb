"""NormalizationConfig: every choice the pipeline makes, explicit and validated once.

Why: the failure this layer exists for came from choices nobody wrote down (was the data normalized? with
which mode? is the output denormalized? are actions deltas?). Each of those is a field here, embedded as the
"normalization" object of a JSON policy config (`to_dict` / `from_dict`), and checked at construction so a
typo or a wrong length is a startup error naming the field, never a silent default at request time.

Example (bimanual YAM, Pi0.5):

    {"mode": "quantile", "epsilon": "openpi",
     "state_names": ["left_joint1", ..., "right_gripper"], "action_names": [...same 14...],
     "action_delta_mask": {"make_bool_mask": [6, -1, 6, -1]}, "action_horizon": 50,
     "model_state_dim": 32, "model_action_dim": 32, "state_bins": 256,
     "gripper": {"convention": "clip01"},
     "joint_limits": {"left_joint1": [-2.61799, 3.14159], ..., "right_gripper": [0.0, 1.0]},
     "degenerate_policy": "refuse", "strict": false}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policy_norm.errors import NormConfigError
from policy_norm.modes import NormMode, parse_optional_mode
from policy_norm.numeric import EPSILON_CONVENTIONS, make_bool_mask

DEGENERATE_POLICIES: tuple[str, ...] = ("refuse", "passthrough", "zero")
_NULL_MODE = " (or null = from the checkpoint)"
GRIPPER_CONVENTIONS: tuple[str, ...] = ("clip01", "affine01", "none")


def _where(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_keys(raw: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise NormConfigError(f"{where or 'normalization'}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise NormConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NormConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _str_or_none(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise NormConfigError(f"{where}: expected a string or null, got {value!r}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise NormConfigError(f"{where}: expected a list of joint names, got {value!r}")
    return tuple(value)


def _pair(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise NormConfigError(f"{where}: expected [lower, upper], got {value!r}")
    return _float(value[0], f"{where}[0]"), _float(value[1], f"{where}[1]")


@dataclass(frozen=True)
class GripperConfig:
    """How gripper outputs are brought into the robot's convention (YAM: 0 = closed .. 1 = open).

    convention: "clip01" clips to [0, 1]; "affine01" maps `source_range` linearly onto [0, 1] then clips (for a
    model trained on e.g. 0..100 or metres of finger travel); "none" leaves the values (the report says so).
    dims: action dims that are grippers; None = every action whose name contains "gripper".
    """

    convention: str = "clip01"
    dims: tuple[int, ...] | None = None
    source_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.convention not in GRIPPER_CONVENTIONS:
            raise NormConfigError(
                f"gripper.convention must be one of {GRIPPER_CONVENTIONS}, got {self.convention!r}"
            )
        lo, hi = self.source_range
        if not hi > lo:
            raise NormConfigError(f"gripper.source_range must be [lower, upper] with upper > lower, got {lo}, {hi}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "convention": self.convention,
            "dims": None if self.dims is None else list(self.dims),
            "source_range": list(self.source_range),
        }

    @staticmethod
    def from_dict(raw: Any, where: str = "gripper") -> GripperConfig:
        if not isinstance(raw, Mapping):
            raise NormConfigError(f"{where}: expected an object, got {raw!r}")
        _check_keys(raw, ("convention", "dims", "source_range"), where)
        dims_raw = raw.get("dims")
        dims: tuple[int, ...] | None = None
        if dims_raw is not None:
            if not isinstance(dims_raw, list | tuple):
                raise NormConfigError(f"{where}.dims: expected a list of action indices, got {dims_raw!r}")
            dims = tuple(_int(d, f"{where}.dims[{i}]") for i, d in enumerate(dims_raw))
        conv = raw.get("convention", "clip01")
        if not isinstance(conv, str):
            raise NormConfigError(f"{where}.convention: expected a string, got {conv!r}")
        return GripperConfig(
            convention=conv,
            dims=dims,
            source_range=_pair(raw.get("source_range", [0.0, 1.0]), f"{where}.source_range"),
        )


@dataclass(frozen=True)
class RangeThresholds:
    """When a normalized value counts as out of range, and when that becomes a warning (or, strict, an error).

    A value is out of range when |n| > quantile_bound (quantile mode; ~2% of training values are, by the
    definition of q01/q99) or |n| > zscore_bound (z-score mode). A state dim warns when its out-of-range
    fraction exceeds state_fraction (a single state is 0 or 1, so the default warns on any); an action dim
    when more than action_fraction of the chunk is out. A padded output dim warns when |value| exceeds
    padded_bound (the model was trained to emit ~0 there).
    """

    quantile_bound: float = 1.0
    zscore_bound: float = 5.0
    state_fraction: float = 0.0
    action_fraction: float = 0.2
    padded_bound: float = 1.0

    def __post_init__(self) -> None:
        for name in ("quantile_bound", "zscore_bound", "padded_bound"):
            if not getattr(self, name) > 0:
                raise NormConfigError(f"thresholds.{name} must be > 0, got {getattr(self, name)}")
        for name in ("state_fraction", "action_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise NormConfigError(f"thresholds.{name} must be in [0, 1), got {getattr(self, name)}")

    def bound(self, mode: NormMode) -> float:
        return self.zscore_bound if mode == NormMode.ZSCORE else self.quantile_bound

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @staticmethod
    def from_dict(raw: Any, where: str = "thresholds") -> RangeThresholds:
        if not isinstance(raw, Mapping):
            raise NormConfigError(f"{where}: expected an object, got {raw!r}")
        keys = tuple(RangeThresholds.__dataclass_fields__)
        _check_keys(raw, keys, where)
        return RangeThresholds(**{k: _float(v, _where(where, k)) for k, v in raw.items()})


@dataclass(frozen=True)
class NormalizationConfig:
    """Everything the normalization pipeline needs besides the stats themselves.

    mode: "quantile" (Pi0.5, pi0-FAST), "zscore" (Pi0) or "identity"; None = take it from the checkpoint,
    which works only where the checkpoint records it (LeRobot processor files, our stats format).
    epsilon: "openpi" or "lerobot" (see numeric.py); None = the convention of the stats' source.
    action_delta_mask: per action dim, True = the model emits a delta to the chunk-start state.
    action_horizon: chunk length the stats were computed over (needed to compare delta stats with data).
    model_state_dim / model_action_dim: the model's padded widths (32 for Pi0.5).
    state_bins: prompt discretization bins (256 for Pi0.5; 0 = the model takes no discrete state).
    joint_limits: {action name: (lower, upper)} clipped (and reported) after everything else; None = no clip.
    degenerate_policy: for dims whose range (q99 - q01) or std is below degenerate_threshold (robot units):
    "refuse" to start, "passthrough" (value goes through unnormalized), or "zero" (pinned to 0 in model space,
    emitted as the dim's constant value).
    asset_id / stats_file: where the checkpoint's stats are, when not unambiguous.
    """

    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_delta_mask: tuple[bool, ...]
    model_state_dim: int
    model_action_dim: int
    mode: NormMode | None = None
    epsilon: str | None = None
    action_horizon: int | None = None
    state_bins: int = 256
    gripper: GripperConfig = field(default_factory=GripperConfig)
    joint_limits: Mapping[str, tuple[float, float]] | None = None
    thresholds: RangeThresholds = field(default_factory=RangeThresholds)
    strict: bool = False
    degenerate_policy: str = "refuse"
    degenerate_threshold: float = 1e-3
    asset_id: str | None = None
    stats_file: str | None = None

    def __post_init__(self) -> None:
        for label, names in (("state_names", self.state_names), ("action_names", self.action_names)):
            if not names:
                raise NormConfigError(f"{label} must be non-empty")
            dup = sorted({n for n in names if list(names).count(n) > 1})
            if dup:
                raise NormConfigError(f"{label} has duplicates: {dup}")
        if len(self.action_delta_mask) != len(self.action_names):
            raise NormConfigError(
                f"action_delta_mask has {len(self.action_delta_mask)} entries, expected {len(self.action_names)} "
                f"(one per action dim)"
            )
        if self.model_state_dim < len(self.state_names):
            raise NormConfigError(
                f"model_state_dim ({self.model_state_dim}) < number of state dims ({len(self.state_names)})"
            )
        if self.model_action_dim < len(self.action_names):
            raise NormConfigError(
                f"model_action_dim ({self.model_action_dim}) < number of action dims ({len(self.action_names)})"
            )
        # A string mode (JSON, a caller's literal) becomes the enum here, so the field always holds a NormMode.
        object.__setattr__(self, "mode", parse_optional_mode(self.mode, "mode", NormConfigError, _NULL_MODE))
        if self.epsilon is not None and self.epsilon not in EPSILON_CONVENTIONS:
            raise NormConfigError(f"epsilon must be one of {EPSILON_CONVENTIONS} or null, got {self.epsilon!r}")
        if self.action_horizon is not None and self.action_horizon < 1:
            raise NormConfigError(f"action_horizon must be >= 1, got {self.action_horizon}")
        if self.state_bins != 0 and self.state_bins < 2:
            raise NormConfigError(f"state_bins must be 0 (no discrete state) or >= 2, got {self.state_bins}")
        if self.degenerate_policy not in DEGENERATE_POLICIES:
            raise NormConfigError(
                f"degenerate_policy must be one of {DEGENERATE_POLICIES}, got {self.degenerate_policy!r}"
            )
        if not self.degenerate_threshold >= 0:
            raise NormConfigError(f"degenerate_threshold must be >= 0, got {self.degenerate_threshold}")
        if self.gripper.dims is not None:
            bad = [d for d in self.gripper.dims if not 0 <= d < len(self.action_names)]
            if bad:
                raise NormConfigError(f"gripper.dims {bad} outside the {len(self.action_names)} action dims")
        if self.joint_limits is not None:
            unknown = sorted(set(self.joint_limits) - set(self.action_names))
            if unknown:
                raise NormConfigError(f"joint_limits names {unknown} are not action names {list(self.action_names)}")
            for name, (lo, hi) in self.joint_limits.items():
                if not hi > lo:
                    raise NormConfigError(f"joint_limits.{name}: upper ({hi}) must be > lower ({lo})")

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def gripper_dims(self) -> tuple[int, ...]:
        if self.gripper.dims is not None:
            return self.gripper.dims
        return tuple(i for i, n in enumerate(self.action_names) if "gripper" in n.lower())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `from_dict(to_dict())` gives an equal config."""
        return {
            "mode": None if self.mode is None else self.mode.value,
            "epsilon": self.epsilon,
            "state_names": list(self.state_names),
            "action_names": list(self.action_names),
            "action_delta_mask": list(self.action_delta_mask),
            "action_horizon": self.action_horizon,
            "model_state_dim": self.model_state_dim,
            "model_action_dim": self.model_action_dim,
            "state_bins": self.state_bins,
            "gripper": self.gripper.to_dict(),
            "joint_limits": None
            if self.joint_limits is None
            else {k: [lo, hi] for k, (lo, hi) in self.joint_limits.items()},
            "thresholds": self.thresholds.to_dict(),
            "strict": self.strict,
            "degenerate_policy": self.degenerate_policy,
            "degenerate_threshold": self.degenerate_threshold,
            "asset_id": self.asset_id,
            "stats_file": self.stats_file,
        }

    @staticmethod
    def from_dict(raw: Any, where: str = "normalization") -> NormalizationConfig:
        """Parse the 'normalization' object of a policy config; errors name the offending key."""
        if not isinstance(raw, Mapping):
            raise NormConfigError(f"{where}: expected an object, got {type(raw).__name__}")
        _check_keys(raw, tuple(NormalizationConfig.__dataclass_fields__), where)
        required = ("state_names", "action_names", "action_delta_mask", "model_state_dim", "model_action_dim")
        missing = [k for k in required if k not in raw]
        if missing:
            raise NormConfigError(f"{where}: missing required key(s) {missing}")
        state_names = _names(raw["state_names"], f"{where}.state_names")
        action_names = _names(raw["action_names"], f"{where}.action_names")
        strict = raw.get("strict", False)
        if not isinstance(strict, bool):
            raise NormConfigError(f"{where}.strict: expected true/false, got {strict!r}")
        policy = raw.get("degenerate_policy", "refuse")
        if not isinstance(policy, str):
            raise NormConfigError(f"{where}.degenerate_policy: expected a string, got {policy!r}")
        horizon = raw.get("action_horizon")
        return NormalizationConfig(
            state_names=state_names,
            action_names=action_names,
            action_delta_mask=_parse_mask(raw["action_delta_mask"], f"{where}.action_delta_mask"),
            model_state_dim=_int(raw["model_state_dim"], f"{where}.model_state_dim"),
            model_action_dim=_int(raw["model_action_dim"], f"{where}.model_action_dim"),
            mode=parse_optional_mode(raw.get("mode"), f"{where}.mode", NormConfigError, _NULL_MODE),
            epsilon=_str_or_none(raw.get("epsilon"), f"{where}.epsilon"),
            action_horizon=None if horizon is None else _int(horizon, f"{where}.action_horizon"),
            state_bins=_int(raw.get("state_bins", 256), f"{where}.state_bins"),
            gripper=GripperConfig.from_dict(raw.get("gripper", {}), f"{where}.gripper"),
            joint_limits=_parse_limits(raw.get("joint_limits"), f"{where}.joint_limits"),
            thresholds=RangeThresholds.from_dict(raw.get("thresholds", {}), f"{where}.thresholds"),
            strict=strict,
            degenerate_policy=policy,
            degenerate_threshold=_float(raw.get("degenerate_threshold", 1e-3), f"{where}.degenerate_threshold"),
            asset_id=_str_or_none(raw.get("asset_id"), f"{where}.asset_id"),
            stats_file=_str_or_none(raw.get("stats_file"), f"{where}.stats_file"),
        )


def _parse_mask(raw: Any, where: str) -> tuple[bool, ...]:
    """A list of booleans, or {"make_bool_mask": [6, -1, 6, -1]} (openpi's shorthand)."""
    if isinstance(raw, Mapping):
        _check_keys(raw, ("make_bool_mask",), where)
        dims = raw.get("make_bool_mask")
        if not isinstance(dims, list | tuple):
            raise NormConfigError(f"{where}.make_bool_mask: expected a list of non-zero integers, got {dims!r}")
        try:
            return make_bool_mask(*dims)
        except ValueError as err:
            raise NormConfigError(f"{where}.make_bool_mask: {err}") from err
    if isinstance(raw, list | tuple) and all(isinstance(v, bool) for v in raw):
        return tuple(raw)
    raise NormConfigError(
        f"{where}: expected a list of true/false (one per action dim) or {{\"make_bool_mask\": [...]}}, got {raw!r}"
    )


def _parse_limits(raw: Any, where: str) -> Mapping[str, tuple[float, float]] | None:
    """null or {name: [lower, upper]}. The limits are written out, never named: they belong to the robot (its
    config is what the arms enforce), and whoever writes the policy config copies them from there."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise NormConfigError(f"{where}: expected null or {{name: [lower, upper]}} (the robot's position limits "
                              f"written out), got {raw!r}")
    return {str(k): _pair(v, f"{where}.{k}") for k, v in raw.items()}
