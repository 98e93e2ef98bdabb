"""Norm stats as typed values: per-feature arrays plus where they came from.

Why: four file formats (openpi, LeRobot dataset, LeRobot processor, ours) carry the same facts in different
shapes; once loaded they are this one type, checked for shape and finiteness at construction, so nothing
downstream re-parses or re-checks. Names are kept when the source has them so dims can be checked by joint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from policy_norm.errors import NormStatsError
from policy_norm.modes import NormMode, parse_optional_mode
from policy_norm.spec import FeatureStatsSpec, NormStatsSpec

F64 = npt.NDArray[np.float64]

STAT_KEYS: tuple[str, ...] = ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99")
FEATURES: tuple[str, ...] = ("state", "actions")


@dataclass(frozen=True)
class FeatureNormStats:
    """Per-dimension statistics of one feature; any stat may be absent (None)."""

    mean: F64 | None = None
    std: F64 | None = None
    min: F64 | None = None
    max: F64 | None = None
    q01: F64 | None = None
    q10: F64 | None = None
    q50: F64 | None = None
    q90: F64 | None = None
    q99: F64 | None = None
    count: int | None = None
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        dims = {key: arr.shape for key in STAT_KEYS if (arr := getattr(self, key)) is not None}
        if not dims:
            raise NormStatsError("feature stats hold no statistics (expected at least one of mean/std/q01/q99)")
        shapes = set(dims.values())
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise NormStatsError(f"feature stats must all be 1-D of one length, got shapes {dims}")
        for key in STAT_KEYS:
            arr = getattr(self, key)
            if arr is None:
                continue
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                i = int(bad[0])
                raise NormStatsError(f"{key}[{i}]{self._label(i)} is {arr[i]} (stats must be finite)")
        if self.names is not None and len(self.names) != self.dim:
            raise NormStatsError(f"stats have {self.dim} dims but {len(self.names)} names: {list(self.names)}")

    def _label(self, i: int) -> str:
        return f" ({self.names[i]})" if self.names is not None and i < len(self.names) else ""

    @property
    def dim(self) -> int:
        for key in STAT_KEYS:
            arr = getattr(self, key)
            if arr is not None:
                return int(arr.shape[0])
        raise AssertionError("unreachable: checked in __post_init__")

    def get(self, key: str) -> F64 | None:
        if key not in STAT_KEYS:
            raise KeyError(f"unknown stat '{key}'; stats are {STAT_KEYS}")
        value: F64 | None = getattr(self, key)
        return value

    def present(self) -> tuple[str, ...]:
        return tuple(key for key in STAT_KEYS if getattr(self, key) is not None)

    def label(self, i: int) -> str:
        """'3 (left_joint4)' or '3' when the stats carry no names."""
        return f"{i}{self._label(i)}"

    def reordered(self, order: list[int], names: tuple[str, ...]) -> FeatureNormStats:
        """The same stats with dims picked in `order` and renamed (used to put stats in robot joint order)."""
        picked: dict[str, F64 | None] = {}
        for key in STAT_KEYS:
            arr = getattr(self, key)
            picked[key] = None if arr is None else np.asarray(arr[order], dtype=np.float64)
        return FeatureNormStats(**picked, count=self.count, names=names)

    def to_spec(self) -> FeatureStatsSpec:
        def tup(arr: F64 | None) -> tuple[float, ...]:
            return () if arr is None else tuple(float(v) for v in arr)

        return FeatureStatsSpec(
            mean=tup(self.mean), std=tup(self.std), q01=tup(self.q01), q99=tup(self.q99),
            min=tup(self.min), max=tup(self.max),
        )

    @staticmethod
    def from_mapping(
        raw: Mapping[str, object], where: str, names: tuple[str, ...] | None = None
    ) -> FeatureNormStats:
        """Build from {stat: list of numbers} (unknown stats ignored, `count` read as an integer)."""
        arrays: dict[str, F64 | None] = {}
        for key in STAT_KEYS:
            value = raw.get(key)
            if value is None:
                arrays[key] = None
                continue
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise NormStatsError(f"{where}.{key}: not a list of numbers ({err})") from err
            if arr.ndim != 1:
                raise NormStatsError(f"{where}.{key}: expected a 1-D list, got shape {list(arr.shape)}")
            arrays[key] = arr
        count_raw = raw.get("count")
        count: int | None = None
        if count_raw is not None:
            try:
                count = int(np.asarray(count_raw, dtype=np.float64).reshape(-1)[0])
            except (TypeError, ValueError, IndexError) as err:
                raise NormStatsError(f"{where}.count: not a number ({err})") from err
        try:
            return FeatureNormStats(**arrays, count=count, names=names)
        except NormStatsError as err:
            raise NormStatsError(f"{where}: {err}") from err


@dataclass(frozen=True)
class StatsSource:
    """Where stats came from: kind ("openpi", "lerobot-dataset", "lerobot-processor", "yam") and file."""

    kind: str
    path: str
    detail: str = ""

    def describe(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} stats {self.path}{extra}"


@dataclass(frozen=True)
class NormStats:
    """State and action stats of one checkpoint or dataset.

    `mode`, `epsilon` and `action_delta_mask` are set only when the source records them (LeRobot processor
    norm_map and eps, our own format); openpi's norm_stats.json and LeRobot's stats.json record none of them.
    """

    state: FeatureNormStats
    actions: FeatureNormStats
    source: StatsSource
    mode: NormMode | None = None
    epsilon: str | None = None
    action_delta_mask: tuple[bool, ...] | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"{self.source.describe()}: mode"
        object.__setattr__(self, "mode", parse_optional_mode(self.mode, where, NormStatsError))

    def feature(self, name: str) -> FeatureNormStats:
        if name == "state":
            return self.state
        if name == "actions":
            return self.actions
        raise KeyError(f"feature must be one of {FEATURES}, got '{name}'")

    def to_spec(self, mode: NormMode) -> NormStatsSpec:
        return NormStatsSpec(mode=mode, state=self.state.to_spec(), actions=self.actions.to_spec())

    def digest(self, mode: NormMode) -> str:
        """sha256 of the canonical JSON of (mode, stats), identical to PolicyMetadata's norm_stats.digest."""
        return self.to_spec(mode).digest()
