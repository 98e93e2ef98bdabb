"""Policy types `serve` can build, by name (`--policy dataset|pi05`): the builder and the facts the CLI needs.

Why a registry: the CLI decides three things per policy type: which arguments it cannot do without (refused by
name before anything loads), how to build it, and whether batching concurrent requests pays off by default
(only a model on CUDA gains from one batched call). Kept in one table, a new policy type is one
`register_policy_type` call; the builders import their policy lazily, so listing the choices loads no model code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policy_server.policy import Policy


@dataclass(frozen=True)
class PolicyRequest:
    """What `serve` was given to build a policy from; each policy type reads the fields it uses."""

    checkpoint: Path | None = None
    dataset: Path | None = None
    policy_config: Path | None = None
    tokenizer: Path | None = None
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16"
    asset_id: str | None = None
    warmup: bool = True
    allow_stats_mismatch: bool = False  # serve even if `dataset` is clearly not normalized by the stats
    horizon: int = 50  # dataset policy: action chunk length
    require_images: bool = True  # dataset policy: refuse observations without the dataset's cameras
    attention: str = "sdpa"  # pi05: "sdpa" | "eager" (policy_server.model.execution)
    flow_capture: str = "auto"  # pi05: "auto" | "none" | "compile" | "cuda_graph"
    compile_prefix: bool = False  # pi05: torch.compile the prefix pass too
    warmup_max_batch: int = 1  # pi05: captured flow loops are made for batch sizes 1..this at start


@dataclass(frozen=True)
class PolicyType:
    """One `--policy` choice."""

    name: str
    build: Callable[[PolicyRequest], Policy]
    # PolicyRequest fields this type cannot do without, each with how `serve` spells it ("--checkpoint DIR").
    requires: Mapping[str, str] = field(default_factory=dict)
    # Runs a model whose batched call costs less than its requests one by one on CUDA: batching is on by
    # default there (off on CPU, where a batch costs as much as its requests one by one).
    batches_on_cuda: bool = False
    help: str = ""

    def missing_argument(self, request: PolicyRequest) -> str | None:
        """How `serve` spells the first required argument `request` lacks, or None when it has them all."""
        for name, spelled in self.requires.items():
            if getattr(request, name) is None:
                return spelled
        return None


_POLICY_TYPES: dict[str, PolicyType] = {}


def register_policy_type(policy_type: PolicyType) -> PolicyType:
    """Add a policy type under its name; a name is registered once (a second one would silently shadow it)."""
    if policy_type.name in _POLICY_TYPES:
        raise ValueError(f"policy type {policy_type.name!r} is already registered")
    unknown = sorted(set(policy_type.requires) - set(PolicyRequest.__dataclass_fields__))
    if unknown:
        raise ValueError(f"policy type {policy_type.name!r} requires {unknown}, which are not PolicyRequest fields")
    _POLICY_TYPES[policy_type.name] = policy_type
    return policy_type


def policy_type_names() -> tuple[str, ...]:
    """The `--policy` choices, in registration order."""
    return tuple(_POLICY_TYPES)


def get_policy_type(name: str) -> PolicyType:
    if name not in _POLICY_TYPES:
        raise KeyError(f"unknown policy {name}; known: {list(_POLICY_TYPES)}")
    return _POLICY_TYPES[name]


def _given(value: Path | None, spelled: str) -> Path:
    """A required path, already checked by `missing_argument`; this narrows the type for the builder."""
    if value is None:
        raise ValueError(f"{spelled} is required")
    return value


def _build_dataset(request: PolicyRequest) -> Policy:
    from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig

    return DatasetPolicy(DatasetPolicyConfig(
        dataset=_given(request.dataset, "--dataset PATH"), action_horizon=request.horizon,
        require_images=request.require_images,
    ))


def _build_pi05(request: PolicyRequest) -> Policy:
    from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions

    policy = Pi05Policy(Pi05ServeOptions(
        checkpoint=_given(request.checkpoint, "--checkpoint DIR"), policy_config=request.policy_config,
        tokenizer=request.tokenizer, device=request.device, dtype=request.dtype, asset_id=request.asset_id,
        warmup=request.warmup, attention=request.attention, flow_capture=request.flow_capture,
        compile_prefix=request.compile_prefix, warmup_max_batch=request.warmup_max_batch,
    ))
    if request.dataset is not None:
        from policy_server.dataset_check import check_dataset_against_policy

        check_dataset_against_policy(policy.pipeline, request.dataset, allow_mismatch=request.allow_stats_mismatch)
    return policy


register_policy_type(PolicyType(
    name="dataset", build=_build_dataset, requires={"dataset": "--dataset PATH"}, batches_on_cuda=False,
    help="answer with the dataset's own next actions (tests the deploy path)",
))
register_policy_type(PolicyType(
    name="pi05", build=_build_pi05, requires={"checkpoint": "--checkpoint DIR"}, batches_on_cuda=True,
    help="the model in --checkpoint (default when --checkpoint is given)",
))
