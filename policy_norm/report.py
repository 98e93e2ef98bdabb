"""What the pipeline saw on one request, as data: per-dim ranges, clips, steps and warnings.

Why: "nothing in the stack said so" is the failure this layer exists to end. Each request's report travels to
the client as the proto `NormReport` plus `Warning`s, so an operator sees a clipped state bin or an action
outside the training range the moment it happens, by joint name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protos import policy_pb2 as pb


@dataclass(frozen=True)
class NormWarning:
    """An anomaly worth showing the operator; same fields as the server's PolicyWarning and proto Warning."""

    code: str
    field: str
    message: str

    def to_proto(self) -> pb.Warning:
        return pb.Warning(code=self.code, field=self.field, message=self.message)


@dataclass(frozen=True)
class DimensionSummary:
    """One dim of one request: normalized range, out-of-range fraction and clip count."""

    name: str
    normalized_min: float
    normalized_max: float
    fraction_out_of_range: float
    clipped_count: int

    def to_proto(self) -> pb.DimensionReport:
        return pb.DimensionReport(
            name=self.name,
            normalized_min=self.normalized_min,
            normalized_max=self.normalized_max,
            fraction_out_of_range=self.fraction_out_of_range,
            clipped_count=self.clipped_count,
        )


@dataclass(frozen=True)
class StepRecord:
    """One step that ran: its name, what it did (or why it had nothing to do), and numbers worth keeping."""

    name: str
    note: str
    details: Mapping[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class NormReport:
    """The report of `prepare` (state side), `finish` (action side), or both merged."""

    mode: str
    steps: tuple[StepRecord, ...] = ()
    state: tuple[DimensionSummary, ...] = ()
    actions: tuple[DimensionSummary, ...] = ()
    state_bins_out_of_range: int = 0
    warnings: tuple[NormWarning, ...] = ()

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def step(self, name: str) -> StepRecord:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step '{name}' in this report; steps are {list(self.step_names)}")

    def merged(self, other: NormReport) -> NormReport:
        """Input report + output report -> the one report a response carries."""
        if other.mode != self.mode:
            raise ValueError(f"cannot merge reports of modes '{self.mode}' and '{other.mode}'")
        return NormReport(
            mode=self.mode,
            steps=self.steps + other.steps,
            state=self.state or other.state,
            actions=self.actions or other.actions,
            state_bins_out_of_range=self.state_bins_out_of_range + other.state_bins_out_of_range,
            warnings=self.warnings + other.warnings,
        )

    def to_proto(self) -> pb.NormReport:
        return pb.NormReport(
            mode=self.mode,
            state=[d.to_proto() for d in self.state],
            actions=[d.to_proto() for d in self.actions],
            state_bins_out_of_range=self.state_bins_out_of_range,
            steps=list(self.step_names),
        )

    def warnings_proto(self) -> list[pb.Warning]:
        return [w.to_proto() for w in self.warnings]

    def describe(self) -> str:
        """Human-readable multi-line summary (logs, the doctor's report)."""
        lines = [f"mode {self.mode}"]
        lines += [f"  {s.name}: {s.note}" for s in self.steps]
        lines += [f"  warning {w.code} {w.field}: {w.message}" for w in self.warnings]
        return "\n".join(lines)
