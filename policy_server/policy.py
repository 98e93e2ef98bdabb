"""The one small interface every policy implements (dataset policy, Pi0.5, ...).

A policy receives an already-validated `ObservationInput` and returns actions in robot units plus its
diagnostics. Transport, validation, timing and error mapping live outside it (`policy_server.core`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from policy_server.spec import PolicySpec
from policy_server.validate import ObservationInput
from protos import policy_pb2 as pb


@dataclass(frozen=True)
class PolicyWarning:
    """An anomaly worth showing the operator (kept as data, sent to the client, never only logged)."""

    code: str
    field: str
    message: str


@dataclass
class PolicyOutput:
    actions: npt.NDArray[np.float32]  # [action_horizon, action_dim], robot units
    norm_report: pb.NormReport = field(default_factory=lambda: pb.NormReport(mode="identity"))
    warnings: list[PolicyWarning] = field(default_factory=list)
    preprocess_ms: float = 0.0
    model_ms: float = 0.0
    postprocess_ms: float = 0.0


class PolicyError(RuntimeError):
    """The policy failed on a valid request (e.g. produced NaN). Mapped to INTERNAL; the server keeps serving."""


class Policy(ABC):
    spec: PolicySpec
    # True when infer() may run on several threads at once; otherwise the server serializes calls.
    concurrent_safe: bool = False

    def check(self, obs: ObservationInput) -> None:  # noqa: B027 - optional hook, empty by design
        """Policy-specific input checks beyond the spec; raise protos.codec.WireError naming the field."""

    @abstractmethod
    def infer(self, obs: ObservationInput, noise_seed: int | None = None) -> PolicyOutput:
        """Return an action chunk for one validated observation."""

    def reset(self, episode_index: int) -> None:  # noqa: B027 - stateless policies need nothing
        """Drop per-episode state before `episode_index` starts."""

    def close(self) -> None:  # noqa: B027
        """Release resources (GPU memory, files)."""
