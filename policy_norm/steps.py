"""The named steps of the pipeline, each with asserted inputs and outputs and a record of what it did.

Why small steps: openpi's composable transforms are worth keeping, but its `Normalize(norm_stats=None)` that
silently passes data through is how an un-normalized model reached a robot. Here every step asserts shape,
dtype and finiteness on both sides (naming the joint when a value is bad), never mutates its input, and
always says in its record what it did, including "nothing to do, because ...".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policy_norm.deltas import absolute_to_delta, delta_to_absolute
from policy_norm.errors import StepError
from policy_norm.numeric import discretize_state
from policy_norm.report import StepRecord
from policy_norm.resolve import FeatureNormalizer

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _label(names: Sequence[str], i: int) -> str:
    return f"[{i}] ({names[i]})" if i < len(names) else f"[{i}] (padded dim)"


def check_array(
    value: object,
    step: str,
    what: str,
    shape: tuple[int | None, ...],
    dtype: type[np.generic],
    names: Sequence[str] = (),
) -> npt.NDArray[np.generic]:
    """Assert an ndarray of `dtype` and `shape` (None = any size on that axis) holding only finite values."""
    if not isinstance(value, np.ndarray):
        raise StepError(f"{step}: {what} must be a numpy array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise StepError(f"{step}: {what} must be {np.dtype(dtype).name}, got {value.dtype}")
    want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape, strict=True)):
        raise StepError(f"{step}: {what} must have shape {want}, got {list(value.shape)}")
    if np.issubdtype(value.dtype, np.floating):
        bad = ~np.isfinite(value)
        if bad.any():
            idx = np.argwhere(bad)[0]
            col = int(idx[-1])
            where = f"{what}{_label(names, col)}" if names else f"{what} at {tuple(int(i) for i in idx)}"
            if value.ndim == 2:
                where += f" at row {int(idx[0])}"
            raise StepError(f"{step}: {where} is {value[tuple(idx)]} (values must be finite)")
    return value


@dataclass(frozen=True)
class SelectState:
    """Pick the configured state dims, in the configured order, from the observation."""

    names: tuple[str, ...]
    name: str = "select_state"

    def run(self, state: object, names: Sequence[str] | None) -> tuple[F32, StepRecord]:
        if names is None:
            arr = check_array(state, self.name, "state", (len(self.names),), np.float32, self.names)
            out: F32 = np.array(arr, dtype=np.float32)
            return out, StepRecord(self.name, "no names given: state taken in the configured joint order")
        names = tuple(names)
        if len(set(names)) != len(names):
            raise StepError(f"{self.name}: observation state names have duplicates: {list(names)}")
        arr = check_array(state, self.name, "state", (len(names),), np.float32, names)
        missing = [n for n in self.names if n not in names]
        if missing:
            raise StepError(f"{self.name}: observation lacks state joints {missing}; it has {list(names)}")
        order = [names.index(n) for n in self.names]
        out = np.array(arr[order], dtype=np.float32)
        dropped = [n for n in names if n not in self.names]
        if order == list(range(len(self.names))) and not dropped:
            note = "names match the configured joint order"
        else:
            note = "reordered to the configured joint order" + (f"; dropped {dropped}" if dropped else "")
        return out, StepRecord(self.name, note, {"dropped": len(dropped)})


@dataclass(frozen=True)
class Normalize:
    """Robot units -> model space with the checkpoint's stats (state or actions)."""

    normalizer: FeatureNormalizer
    name: str

    def note(self) -> str:
        nz = self.normalizer
        if nz.mode == "identity":
            return "identity mode: values passed unchanged (no normalization configured)"
        deg = [nz.names[i] for i, d in enumerate(nz.degenerate) if d]
        extra = f"; degenerate dims {deg}: {nz.degenerate_policy}" if deg else ""
        return f"{nz.mode} normalization ({nz.epsilon} epsilon) of {nz.dim} dims{extra}"

    def run(self, values: object) -> tuple[F32, StepRecord]:
        nz = self.normalizer
        two_d = isinstance(values, np.ndarray) and values.ndim == 2
        shape: tuple[int | None, ...] = (None, nz.dim) if two_d else (nz.dim,)
        arr = check_array(values, self.name, nz.feature, shape, np.float32, nz.names)
        out: F32 = nz.normalize(arr).astype(np.float32)
        check_array(out, self.name, f"normalized {nz.feature}", out.shape, np.float32, nz.names)
        return out, StepRecord(self.name, self.note())


@dataclass(frozen=True)
class DiscretizeState:
    """Pi0.5's prompt bins of the normalized state; out-of-range values are clipped into [0, bins-1] and counted."""

    bins: int
    names: tuple[str, ...]
    name: str = "discretize_state"

    def run(self, normalized: object) -> tuple[I64 | None, npt.NDArray[np.bool_], StepRecord]:
        arr = check_array(normalized, self.name, "normalized state", (len(self.names),), np.float32, self.names)
        if self.bins == 0:
            none = np.zeros(len(self.names), dtype=bool)
            return None, none, StepRecord(self.name, "disabled (state_bins = 0): the model takes no discrete state")
        k, below, above = discretize_state(arr, self.bins)
        if k.min() < 0 or k.max() > self.bins - 1:
            raise StepError(
                f"{self.name}: bins outside [0, {self.bins - 1}] after clipping (min {k.min()}, max {k.max()})"
            )
        clipped = below | above
        note = f"{self.bins} bins over [-1, 1]"
        if clipped.any():
            which = [self.names[i] for i in np.flatnonzero(clipped)]
            note += f"; {int(below.sum())} value(s) below -1 clipped to bin 0, {int(above.sum())} above 1 " \
                    f"saturated at bin {self.bins - 1}: {which}"
        return k, clipped, StepRecord(
            self.name, note, {"below": int(below.sum()), "above": int(above.sum())}
        )


@dataclass(frozen=True)
class PadState:
    """Zero-pad the normalized state to the model width (padded dims are exactly 0)."""

    dim: int
    model_dim: int
    name: str = "pad_state"

    def run(self, normalized: object) -> tuple[F32, StepRecord]:
        arr = check_array(normalized, self.name, "normalized state", (self.dim,), np.float32)
        out = np.zeros(self.model_dim, dtype=np.float32)
        out[: self.dim] = arr
        if np.any(out[self.dim :] != 0.0):
            raise StepError(f"{self.name}: padded dims are not exactly 0")
        note = (
            f"padded {self.dim} -> {self.model_dim} with zeros"
            if self.model_dim > self.dim
            else f"nothing to pad: state dim equals model dim ({self.dim})"
        )
        return out, StepRecord(self.name, note)


@dataclass(frozen=True)
class UnpadActions:
    """Slice the model's padded action chunk back to the robot's action dims, checking the padded part."""

    names: tuple[str, ...]
    model_dim: int
    name: str = "unpad_actions"

    def run(self, model_actions: object) -> tuple[F32, float, StepRecord]:
        names = self.names
        arr = check_array(model_actions, self.name, "model actions", (None, self.model_dim), np.float32, names)
        if arr.shape[0] == 0:
            raise StepError(f"{self.name}: model actions hold no steps (shape {list(arr.shape)})")
        out: F32 = np.array(arr[:, : len(names)], dtype=np.float32)
        padded = arr[:, len(names) :]
        max_pad = float(np.abs(padded).max()) if padded.size else 0.0
        note = (
            f"kept {len(names)} of {self.model_dim} dims; max |padded output| {max_pad:.3g}"
            if padded.size
            else f"nothing to unpad: model dim equals action dim ({len(names)})"
        )
        return out, max_pad, StepRecord(self.name, note, {"max_abs_padded": max_pad})


@dataclass(frozen=True)
class Denormalize:
    """Model space -> robot units (or delta units for masked dims) with the checkpoint's action stats."""

    normalizer: FeatureNormalizer
    name: str = "denormalize_actions"

    def run(self, normalized: object) -> tuple[F64, StepRecord]:
        nz = self.normalizer
        arr = check_array(normalized, self.name, "normalized actions", (None, nz.dim), np.float32, nz.names)
        out = nz.unnormalize(arr)
        check_array(out, self.name, "actions", out.shape, np.float64, nz.names)
        return out, StepRecord(self.name, Normalize(nz, self.name).note().replace("normalization", "unnormalization"))


@dataclass(frozen=True)
class DeltaToAbsolute:
    """Add the chunk-start state (robot units) to the dims the delta mask marks (YAM/ALOHA: 6 joints per arm)."""

    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    state_index: tuple[int, ...]  # per action dim, its state dim, -1 = absolute
    name: str = "delta_to_absolute"

    def run(self, actions: object, state: object) -> tuple[F64, StepRecord]:
        arr = check_array(actions, self.name, "actions", (None, len(self.action_names)), np.float64, self.action_names)
        st = check_array(state, self.name, "state", (len(self.state_names),), np.float32, self.state_names)
        out = delta_to_absolute(arr, st, self.state_index)
        delta = [self.action_names[j] for j, s in enumerate(self.state_index) if s >= 0]
        if delta:
            note = f"added the chunk-start state to {len(delta)} delta dim(s): {delta}"
        else:
            note = "action_delta_mask is all false: every dim is absolute, nothing added"
        return out, StepRecord(self.name, note, {"delta_dims": len(delta)})


@dataclass(frozen=True)
class GripperConvention:
    """Bring gripper dims into the robot's 0 (closed) .. 1 (open) convention; clips are counted, not hidden."""

    action_names: tuple[str, ...]
    dims: tuple[int, ...]
    convention: str
    source_range: tuple[float, float]
    name: str = "gripper_convention"

    def run(self, actions: object) -> tuple[F64, npt.NDArray[np.int64], StepRecord]:
        arr = check_array(actions, self.name, "actions", (None, len(self.action_names)), np.float64, self.action_names)
        out = np.array(arr, dtype=np.float64)
        clips = np.zeros(len(self.action_names), dtype=np.int64)
        grippers = [self.action_names[d] for d in self.dims]
        if not self.dims:
            return out, clips, StepRecord(
                self.name, "no gripper dims (no action name contains 'gripper' and gripper.dims is unset)"
            )
        if self.convention == "none":
            return out, clips, StepRecord(self.name, f"convention 'none': {grippers} left as the model emits them")
        for d in self.dims:
            col = out[:, d]
            if self.convention == "affine01":
                lo, hi = self.source_range
                col = (col - lo) / (hi - lo)
            clipped = np.clip(col, 0.0, 1.0)
            clips[d] = int(np.count_nonzero(clipped != col))
            out[:, d] = clipped
        how = "clipped to [0, 1]" if self.convention == "clip01" else \
            f"mapped {list(self.source_range)} -> [0, 1] and clipped"
        return out, clips, StepRecord(self.name, f"{grippers} {how}; {int(clips.sum())} value(s) clipped",
                                      {"clipped": int(clips.sum())})


    def inverse(self, actions: F64) -> F64:
        """Robot convention -> the model's gripper units (only 'affine01' changes anything)."""
        out = np.array(actions, dtype=np.float64)
        if self.convention == "affine01":
            lo, hi = self.source_range
            for d in self.dims:
                out[..., d] = lo + out[..., d] * (hi - lo)
        return out


@dataclass(frozen=True)
class RobotLimits:
    """Clip to the robot's joint limits; each clip is counted per joint and reported."""

    action_names: tuple[str, ...]
    lower: tuple[float, ...]  # -inf where no limit
    upper: tuple[float, ...]  # +inf where no limit
    name: str = "robot_limits"

    def run(self, actions: object) -> tuple[F64, npt.NDArray[np.int64], StepRecord]:
        arr = check_array(actions, self.name, "actions", (None, len(self.action_names)), np.float64, self.action_names)
        lo = np.asarray(self.lower, dtype=np.float64)
        hi = np.asarray(self.upper, dtype=np.float64)
        limited = np.isfinite(lo) | np.isfinite(hi)
        if not limited.any():
            clips = np.zeros(len(self.action_names), dtype=np.int64)
            return np.array(arr), clips, StepRecord(self.name, "no joint limits configured: actions not clipped")
        out = np.clip(arr, lo, hi)
        clips = np.count_nonzero(out != arr, axis=0).astype(np.int64)
        note = f"clipped to the limits of {int(limited.sum())} joint(s); {int(clips.sum())} value(s) clipped"
        return out, clips, StepRecord(self.name, note, {"clipped": int(clips.sum())})


@dataclass(frozen=True)
class AbsoluteToDelta:
    """Inverse of DeltaToAbsolute, for encoding robot-unit actions into model space (RTC prefixes, self-test)."""

    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    state_index: tuple[int, ...]
    name: str = "absolute_to_delta"

    def run(self, actions: object, state: object) -> F64:
        arr = check_array(actions, self.name, "actions", (None, len(self.action_names)), np.float32, self.action_names)
        st = check_array(state, self.name, "state", (len(self.state_names),), np.float32, self.state_names)
        return absolute_to_delta(arr, st, self.state_index)
