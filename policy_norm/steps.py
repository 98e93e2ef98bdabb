"""The named steps of the pipeline, each with asserted inputs and outputs and a record of what it did.

Why small steps: openpi's composable transforms are worth keeping, but its `Normalize(norm_stats=None)` that
silently passes data through is how an un-normalized model reached a robot. Here every step asserts shape,
dtype and finiteness on both sides (naming the joint when a value is bad), never mutates its input, and
always says in its record what it did, including "nothing to do, because ...".

Every step has one shape (`Step`): `run(data) -> (data, record)`. What flows between steps is a `StepData`: the
array at this stage plus the context some steps read (the robot state, the observation's joint names) and what
some steps leave for the report (prompt bins, model-space values, clip counts). The pipeline runs a list of steps
in order (`run_steps`) and reads the report's facts from the data and records, never from a particular step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from policy_norm.deltas import absolute_to_delta, delta_to_absolute
from policy_norm.errors import StepError
from policy_norm.finite import first_non_finite
from policy_norm.modes import NormMode
from policy_norm.numeric import discretize_state, state_bin_range
from policy_norm.report import StepRecord
from policy_norm.resolve import FeatureNormalizer

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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
        bad = first_non_finite(value)
        if bad is not None:
            raise StepError(f"{step}: {bad.where(what, names)} is {bad.value} (values must be finite)")
    return value


# The warning a state value outside [-1, 1] raises: its prompt bin is -1 or the top bin, as in training.
STATE_BIN_OUT_OF_RANGE = "state_bin_out_of_range"


@dataclass(frozen=True)
class Clips:
    """What one step clipped (or only flagged), per dim: counts, and for each such dim a note saying how (for
    warnings).

    `code` is the warning a flagged dim raises; `notes[i]` is '' where dim i was not flagged. `altered` is False
    for a step that flags values without changing them (the state bins: out-of-range values keep the trainers'
    bins), so they are reported but not counted as clipped.
    """

    step: str
    code: str
    counts: I64
    notes: tuple[str, ...]
    altered: bool = True


@dataclass(frozen=True)
class StepData:
    """One request's values on their way through a list of steps, with the context and products steps share.

    values: the array at this stage (state vector or action chunk). It enters as the caller gave it, so it is
    typed `object`: every step asserts shape, dtype and finiteness (`check_array`) before using it.
    robot_state: the observation's state in robot units: set by select_state on the way in; on the way out the
    chunk-start state the caller passes, asserted by the steps that add or subtract it.
    names: the observation's state joint names when it sent them (select_state reorders by them).
    model_space: the unpadded model-space values (normalized state; the model's actions before denormalizing).
    state_bins: Pi0.5 prompt bins of the state (None when the model takes none).
    max_abs_padded: the largest |value| the model emitted in its padded action dims.
    clips: what each clipping step clipped, in the order the steps ran.
    """

    values: object
    robot_state: object = None
    names: tuple[str, ...] | None = None
    model_space: F32 | None = None
    state_bins: I64 | None = None
    max_abs_padded: float = 0.0
    clips: tuple[Clips, ...] = ()

    def clip_counts(self, dim: int) -> I64:
        """Per dim, the values clipped by all clipping steps together (zeros when none ran)."""
        total = np.zeros(dim, dtype=np.int64)
        for c in self.clips:
            if c.altered:
                total += c.counts
        return total

    def flag_counts(self, dim: int, code: str) -> I64:
        """Per dim, the values flagged with warning `code` (clipped or not)."""
        total = np.zeros(dim, dtype=np.int64)
        for c in self.clips:
            if c.code == code:
                total += c.counts
        return total


class Step(Protocol):
    """One named transform: asserts its input, returns new data (never mutating what it got) and its record."""

    @property
    def name(self) -> str: ...

    def run(self, data: StepData) -> tuple[StepData, StepRecord]: ...


def run_steps(steps: Sequence[Step], data: StepData) -> tuple[StepData, tuple[StepRecord, ...]]:
    """Run `steps` in order; the data the last one returns and every step's record."""
    records: list[StepRecord] = []
    for step in steps:
        data, record = step.run(data)
        records.append(record)
    return data, tuple(records)


@dataclass(frozen=True)
class SelectState:
    """Pick the configured state dims, in the configured order, from the observation."""

    names: tuple[str, ...]
    name: str = "select_state"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        state, names = data.values, data.names
        if names is None:
            arr = check_array(state, self.name, "state", (len(self.names),), np.float32, self.names)
            out: F32 = np.array(arr, dtype=np.float32)
            return replace(data, values=out, robot_state=out), StepRecord(
                self.name, "no names given: state taken in the configured joint order"
            )
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
        return replace(data, values=out, robot_state=out), StepRecord(self.name, note, {"dropped": len(dropped)})


@dataclass(frozen=True)
class Normalize:
    """Robot units -> model space with the checkpoint's stats (state or actions); the result is also kept as
    the data's `model_space` (what the report's ranges are computed on)."""

    normalizer: FeatureNormalizer
    name: str

    def note(self) -> str:
        nz = self.normalizer
        if nz.mode == NormMode.IDENTITY:
            return "identity mode: values passed unchanged (no normalization configured)"
        deg = [nz.names[i] for i, d in enumerate(nz.degenerate) if d]
        extra = f"; degenerate dims {deg}: {nz.degenerate_policy}" if deg else ""
        return f"{nz.mode} normalization ({nz.epsilon} epsilon) of {nz.dim} dims{extra}"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        nz, values = self.normalizer, data.values
        two_d = isinstance(values, np.ndarray) and values.ndim == 2
        shape: tuple[int | None, ...] = (None, nz.dim) if two_d else (nz.dim,)
        arr = check_array(values, self.name, nz.feature, shape, np.float32, nz.names)
        out: F32 = nz.normalize(arr).astype(np.float32)
        check_array(out, self.name, f"normalized {nz.feature}", out.shape, np.float32, nz.names)
        return replace(data, values=out, model_space=out), StepRecord(self.name, self.note())


@dataclass(frozen=True)
class DiscretizeState:
    """Pi0.5's prompt bins of the normalized state, exactly as the trainers compute them (nothing clipped).

    A value below -1 gets bin -1 and one above 1 the top bin, as in training; both are flagged per dim so the
    report names the joint and its value. The bins go to the data's `state_bins`; the values pass on unchanged
    (the model also takes them, padded)."""

    bins: int
    names: tuple[str, ...]
    name: str = "discretize_state"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        arr = check_array(data.values, self.name, "normalized state", (len(self.names),), np.float32, self.names)
        if self.bins == 0:
            return replace(data, state_bins=None), StepRecord(
                self.name, "disabled (state_bins = 0): the model takes no discrete state"
            )
        k, below, above = discretize_state(arr, self.bins)
        lowest, highest = state_bin_range(self.bins)
        if k.min() < lowest or k.max() > highest:
            raise StepError(f"{self.name}: bins outside [{lowest}, {highest}] (min {k.min()}, max {k.max()})")
        outside = below | above
        note = f"{self.bins} bins over [-1, 1]"
        if outside.any():
            which = [self.names[i] for i in np.flatnonzero(outside)]
            note += f"; {int(below.sum())} value(s) below -1 in bin -1, {int(above.sum())} above 1 in the top " \
                    f"bin {highest} (as the trainers bin them): {which}"
        notes = tuple(
            ("its prompt bin is -1 (below the first bin, as in training)" if below[i]
             else f"its prompt bin is the top bin {highest}") if flagged else ""
            for i, flagged in enumerate(outside)
        )
        flags = Clips(self.name, STATE_BIN_OUT_OF_RANGE, outside.astype(np.int64), notes, altered=False)
        return replace(data, state_bins=k, clips=(*data.clips, flags)), StepRecord(
            self.name, note, {"below": int(below.sum()), "above": int(above.sum())}
        )


@dataclass(frozen=True)
class PadState:
    """Zero-pad the normalized state to the model width (padded dims are exactly 0)."""

    dim: int
    model_dim: int
    name: str = "pad_state"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        arr = check_array(data.values, self.name, "normalized state", (self.dim,), np.float32)
        out = np.zeros(self.model_dim, dtype=np.float32)
        out[: self.dim] = arr
        if np.any(out[self.dim :] != 0.0):
            raise StepError(f"{self.name}: padded dims are not exactly 0")
        note = (
            f"padded {self.dim} -> {self.model_dim} with zeros"
            if self.model_dim > self.dim
            else f"nothing to pad: state dim equals model dim ({self.dim})"
        )
        return replace(data, values=out), StepRecord(self.name, note)


@dataclass(frozen=True)
class UnpadActions:
    """Slice the model's padded action chunk back to the robot's action dims, checking the padded part.

    The unpadded chunk is the data's `model_space`; the largest padded |value| its `max_abs_padded`."""

    names: tuple[str, ...]
    model_dim: int
    name: str = "unpad_actions"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        names = self.names
        arr = check_array(data.values, self.name, "model actions", (None, self.model_dim), np.float32, names)
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
        return replace(data, values=out, model_space=out, max_abs_padded=max_pad), StepRecord(
            self.name, note, {"max_abs_padded": max_pad}
        )


@dataclass(frozen=True)
class Denormalize:
    """Model space -> robot units (or delta units for masked dims) with the checkpoint's action stats."""

    normalizer: FeatureNormalizer
    name: str = "denormalize_actions"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        nz = self.normalizer
        arr = check_array(data.values, self.name, "normalized actions", (None, nz.dim), np.float32, nz.names)
        out = nz.unnormalize(arr)
        check_array(out, self.name, "actions", out.shape, np.float64, nz.names)
        note = Normalize(nz, self.name).note().replace("normalization", "unnormalization")
        return replace(data, values=out), StepRecord(self.name, note)


def _chunk_and_state(step: str, data: StepData, action_names: tuple[str, ...], state_names: tuple[str, ...],
                     dtype: type[np.floating[Any]]) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.generic]]:
    """The chunk [H, action_dim] and the chunk-start state [state_dim] a delta step needs, both asserted."""
    arr = check_array(data.values, step, "actions", (None, len(action_names)), dtype, action_names)
    st = check_array(data.robot_state, step, "state", (len(state_names),), np.float32, state_names)
    return arr, st


def _delta_record(step: str, action_names: tuple[str, ...], state_index: tuple[int, ...], did: str,
                  done: str) -> StepRecord:
    """The record of a delta step: which dims it changed, or that the mask left nothing to do (never silent)."""
    delta = [action_names[j] for j, s in enumerate(state_index) if s >= 0]
    if delta:
        note = f"{did} {len(delta)} delta dim(s): {delta}"
    else:
        note = f"action_delta_mask is all false: every dim is absolute, nothing {done}"
    return StepRecord(step, note, {"delta_dims": len(delta)})


@dataclass(frozen=True)
class DeltaToAbsolute:
    """Add the chunk-start state (robot units) to the dims the delta mask marks (YAM/ALOHA: 6 joints per arm)."""

    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    state_index: tuple[int, ...]  # per action dim, its state dim, -1 = absolute
    name: str = "delta_to_absolute"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        arr, st = _chunk_and_state(self.name, data, self.action_names, self.state_names, np.float64)
        out = delta_to_absolute(arr, st, self.state_index)
        return replace(data, values=out), _delta_record(self.name, self.action_names, self.state_index,
                                                        "added the chunk-start state to", "added")


@dataclass(frozen=True)
class GripperConvention:
    """Bring gripper dims into the robot's 0 (closed) .. 1 (open) convention; clips are counted, not hidden."""

    action_names: tuple[str, ...]
    dims: tuple[int, ...]
    convention: str
    source_range: tuple[float, float]
    name: str = "gripper_convention"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        arr = check_array(data.values, self.name, "actions", (None, len(self.action_names)), np.float64,
                          self.action_names)
        out = np.array(arr, dtype=np.float64)
        grippers = [self.action_names[d] for d in self.dims]
        if not self.dims:
            return replace(data, values=out), StepRecord(
                self.name, "no gripper dims (no action name contains 'gripper' and gripper.dims is unset)"
            )
        if self.convention == "none":
            return replace(data, values=out), StepRecord(
                self.name, f"convention 'none': {grippers} left as the model emits them"
            )
        clips = np.zeros(len(self.action_names), dtype=np.int64)
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
        notes = tuple(f"{int(n)} value(s) clipped into the gripper range [0, 1]" if n else "" for n in clips)
        record = StepRecord(self.name, f"{grippers} {how}; {int(clips.sum())} value(s) clipped",
                            {"clipped": int(clips.sum())})
        return replace(data, values=out, clips=(*data.clips, Clips(self.name, "gripper_clipped", clips, notes))), record

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

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        arr = check_array(data.values, self.name, "actions", (None, len(self.action_names)), np.float64,
                          self.action_names)
        lo = np.asarray(self.lower, dtype=np.float64)
        hi = np.asarray(self.upper, dtype=np.float64)
        limited = np.isfinite(lo) | np.isfinite(hi)
        if not limited.any():
            return replace(data, values=np.array(arr)), StepRecord(
                self.name, "no joint limits configured: actions not clipped"
            )
        out = np.clip(arr, lo, hi)
        clips = np.count_nonzero(out != arr, axis=0).astype(np.int64)
        notes = tuple(self._clip_note(arr, j, int(n)) if n else "" for j, n in enumerate(clips))
        note = f"clipped to the limits of {int(limited.sum())} joint(s); {int(clips.sum())} value(s) clipped"
        done = Clips(self.name, "action_limit_clipped", clips, notes)
        return replace(data, values=out, clips=(*data.clips, done)), StepRecord(
            self.name, note, {"clipped": int(clips.sum())}
        )

    def _clip_note(self, before: npt.NDArray[np.generic], j: int, count: int) -> str:
        lo, hi = self.lower[j], self.upper[j]
        col = np.asarray(before[:, j], dtype=np.float64)
        worst = float(np.max(np.maximum(col - hi, lo - col)))
        return f"{count} value(s) clipped to the joint limits [{lo:.4g}, {hi:.4g}] (worst {worst:.3g} beyond)"


# ---- the inverse path: robot-unit actions -> model space (RTC prefixes, self-test) ------------------------


@dataclass(frozen=True)
class GripperToModel:
    """Inverse of GripperConvention: gripper dims from the robot's 0..1 back to the model's units."""

    gripper: GripperConvention
    name: str = "gripper_to_model"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        g = self.gripper
        arr = check_array(data.values, self.name, "actions", (None, len(g.action_names)), np.float32, g.action_names)
        out: F32 = g.inverse(arr.astype(np.float64)).astype(np.float32)
        grippers = [g.action_names[d] for d in g.dims]
        if g.convention == "affine01" and g.dims:
            note = f"{grippers} mapped [0, 1] -> {list(g.source_range)}"
        else:
            note = f"convention '{g.convention}': gripper dims {grippers} unchanged"
        return replace(data, values=out), StepRecord(self.name, note)


@dataclass(frozen=True)
class AbsoluteToDelta:
    """Inverse of DeltaToAbsolute, for encoding robot-unit actions into model space (RTC prefixes, self-test).

    Emits float32, what Normalize takes."""

    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    state_index: tuple[int, ...]
    name: str = "absolute_to_delta"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        arr, st = _chunk_and_state(self.name, data, self.action_names, self.state_names, np.float32)
        out: F32 = absolute_to_delta(arr, st, self.state_index).astype(np.float32)
        return replace(data, values=out), _delta_record(self.name, self.action_names, self.state_index,
                                                        "subtracted the chunk-start state from", "subtracted")


@dataclass(frozen=True)
class PadActions:
    """Zero-pad a model-space action chunk to the model width (padded dims are exactly 0)."""

    dim: int
    model_dim: int
    name: str = "pad_actions"

    def run(self, data: StepData) -> tuple[StepData, StepRecord]:
        arr = check_array(data.values, self.name, "normalized actions", (None, self.dim), np.float32)
        out = np.zeros((arr.shape[0], self.model_dim), dtype=np.float32)
        out[:, : self.dim] = arr
        note = (
            f"padded {self.dim} -> {self.model_dim} with zeros"
            if self.model_dim > self.dim
            else f"nothing to pad: action dim equals model dim ({self.dim})"
        )
        return replace(data, values=out), StepRecord(self.name, note)
