"""The one small interface every policy implements (dataset policy, Pi0.5, ...).

A policy receives an already-validated `ObservationInput` and returns actions in robot units plus its
diagnostics. Transport, validation, timing and error mapping live outside it (`policy_server.core`).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from policy_norm.modes import NormMode
from policy_norm.spec import PolicySpec
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
    norm_report: pb.NormReport = field(default_factory=lambda: pb.NormReport(mode=NormMode.IDENTITY))
    warnings: list[PolicyWarning] = field(default_factory=list)
    preprocess_ms: float = 0.0
    model_ms: float = 0.0
    postprocess_ms: float = 0.0


def canonical_digest(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of `value` (sorted keys, no spaces): the same config always gives the
    same digest, whatever order its keys were written in."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PolicyIdentity:
    """The facts that name the model behind a policy. The server stamps them on every response, so a client
    notices a server restarted with other weights, another serving config or other normalization stats between
    two chunks (a restart with the same facts is the same model)."""

    weight_hash: str
    # sha256 of the canonical JSON of the policy's serving config ("" when the policy has none).
    policy_config_digest: str = ""
    # sha256 of the canonical JSON of the normalization stats, as PolicyMetadata.norm_stats.digest ("" without).
    norm_stats_digest: str = ""


class PolicyError(RuntimeError):
    """The policy failed on a valid request (e.g. produced NaN). Mapped to INTERNAL; the server keeps serving."""


# One request of a batch: the validated observation and its noise seed (None = fresh noise).
BatchItem = tuple[ObservationInput, int | None]


class Policy(ABC):
    spec: PolicySpec
    # True when infer() may run on several threads at once; otherwise the server serializes calls.
    concurrent_safe: bool = False
    # True when infer_batch() runs several requests in one model call (cheaper than one call each); the server
    # only batches by default for such policies.
    supports_batching: bool = False

    def identity(self) -> PolicyIdentity:
        """What names this policy's model. The default reads the spec (weights and stats); policies with a serving
        config add its digest."""
        stats = self.spec.norm_stats
        return PolicyIdentity(weight_hash=self.spec.weight_hash,
                              norm_stats_digest=stats.digest() if stats is not None else "")

    def check(self, obs: ObservationInput) -> None:  # noqa: B027 - optional hook, empty by design
        """Policy-specific input checks beyond the spec; raise protos.codec.WireError naming the field."""

    @abstractmethod
    def infer(self, obs: ObservationInput, noise_seed: int | None = None) -> PolicyOutput:
        """Return an action chunk for one validated observation."""

    def batchable(self, obs: ObservationInput) -> bool:
        """Whether this request may share a model call with others; False sends it alone, without waiting
        for a batch to fill."""
        return True

    def infer_batch(self, items: Sequence[BatchItem]) -> list[PolicyOutput | Exception]:
        """Answer several requests; result i belongs to item i and is its output or its own error.

        A bad item (e.g. a state the normalization refuses) must fail only itself, never its neighbours, so
        errors are returned, not raised. This default runs the items one by one; batching policies override it.
        """
        results: list[PolicyOutput | Exception] = []
        for obs, noise_seed in items:
            try:
                results.append(self.infer(obs, noise_seed=noise_seed))
            except Exception as exc:  # kept per item: the caller answers each request with its own error
                results.append(exc)
        return results

    def reset(self, episode_index: int) -> None:  # noqa: B027 - stateless policies need nothing
        """Drop per-episode state before `episode_index` starts."""

    def close(self) -> None:  # noqa: B027
        """Release resources (GPU memory, files)."""
