"""Strict checkpoint loading: every missing, unexpected or mis-shaped key fails the load, with the list.

The model is built on the meta device (no memory), each tensor is read once from disk straight into its final
buffer (converted to the dtype policy's dtype for that parameter), and the tensors are assigned to the model,
so peak memory stays near the size of the weights. The file's sha256 is computed in the same pass.
A partially loaded model can never be returned: the function either returns a fully loaded, policy-checked
model or raises.

Every tensor the model uses is scanned for NaN and infinity as it is read (one vectorised reduction per tensor,
while the next is hashed), and a non-finite one refuses the whole load naming the tensor. The warm-up inference
is no substitute: `--no-warmup` skips it, and a NaN in an embedding row its prompt never uses passes it.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from policy_server.checkpoint.layouts import (
    EMBED_TOKENS,
    CheckpointError,
    CheckpointInfo,
    inspect_checkpoint,
    is_pi0,
    plan_keys,
)
from policy_server.checkpoint.safetensors_io import find_non_finite, iter_tensors, read_index
from policy_server.model.dtype_policy import DtypePolicy, apply_dtype_policy, assert_dtype_policy, param_dtype
from policy_server.model.pi05 import Pi05Model

log = logging.getLogger(__name__)
MAX_LISTED = 25


@dataclass
class LoadReport:
    layout: str
    weights: Path
    weight_hash: str
    dtype_policy: DtypePolicy
    renamed: list[tuple[str, str]] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    stored_dtypes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.layout} checkpoint {self.weights} (sha256 {self.weight_hash[:16]}...), "
                 f"dtype policy {self.dtype_policy.value}, stored dtypes {self.stored_dtypes}"]
        lines += [f"renamed {old} -> {new}" for old, new in self.renamed]
        lines += [f"ignored {k}: {why}" for k, why in self.ignored.items()]
        lines += self.notes
        return "\n".join(lines)


@dataclass
class LoadedModel:
    model: Pi05Model
    info: CheckpointInfo
    report: LoadReport


def _listing(label: str, items: list[str]) -> str:
    shown = items[:MAX_LISTED]
    more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{label} ({len(items)}): {', '.join(shown)}{more}"


def load_checkpoint(
    directory: Path, *, dtype_policy: DtypePolicy = DtypePolicy.FLOAT32, device: torch.device | str = "cpu"
) -> LoadedModel:
    """Load a Pi0.5 checkpoint (openpi or LeRobot layout) strictly. Raises CheckpointError listing problems."""
    info = inspect_checkpoint(Path(directory))
    index = read_index(info.weights)
    stored = list(index.entries)
    if is_pi0(stored):
        raise CheckpointError(f"{info.weights} is a Pi0 checkpoint (its action expert has no adaRMSNorm dense "
                              "layers); only Pi0.5 is supported")
    plan = plan_keys(info.layout, stored)

    with torch.device("meta"):
        model = Pi05Model(info.config)
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    mapped: dict[str, str] = {}
    for stored_name, model_name in plan.to_model.items():
        if model_name in mapped.values():
            raise CheckpointError(f"{info.weights}: two stored tensors map to '{model_name}'")
        mapped[stored_name] = model_name
    present = set(mapped.values())
    missing = sorted(set(expected) - present)
    unexpected = sorted(s for s, m in mapped.items() if m not in expected)
    mis_shaped = sorted(
        f"{s} {list(index.entries[s].shape)} (model expects {list(expected[m])})"
        for s, m in mapped.items() if m in expected and index.entries[s].shape != expected[m]
    )
    if missing or unexpected or mis_shaped:
        parts = [f"checkpoint {info.weights} ({info.layout} layout) does not match the model "
                 f"{info.config.paligemma_variant}/{info.config.action_expert_variant}/{info.config.vision_variant}"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mis_shaped:
            parts.append(_listing("mis-shaped keys", mis_shaped))
        raise CheckpointError("\n  ".join(parts))

    hasher = hashlib.sha256()
    state: dict[str, torch.Tensor] = {}
    stored_dtypes: Counter[str] = Counter()
    duplicate: torch.Tensor | None = None
    target_device = torch.device(device)
    for name, tensor in iter_tensors(index, hasher):
        stored_dtypes[str(tensor.dtype).removeprefix("torch.")] += 1
        if name == plan.lm_head_duplicate:
            duplicate = tensor
            continue
        if name not in mapped:
            continue  # ignored key (read for the hash only)
        non_finite = find_non_finite(tensor)
        if non_finite is not None:
            raise CheckpointError(f"{info.weights}: tensor '{name}' has {non_finite.describe()}; "
                                  "refusing to serve")
        target_name = mapped[name]
        state[target_name] = tensor.to(device=target_device, dtype=param_dtype(target_name, dtype_policy))
        del tensor
    report = LoadReport(
        layout=info.layout, weights=info.weights, weight_hash=hasher.hexdigest(), dtype_policy=dtype_policy,
        renamed=plan.renamed, ignored=dict(plan.ignored), stored_dtypes=dict(stored_dtypes), notes=list(info.notes),
    )
    if plan.tied_from_lm_head:
        report.notes.append("tied embedding restored from paligemma.lm_head.weight (embed_tokens was not stored)")
    if duplicate is not None:
        same = torch.equal(duplicate.to(state[EMBED_TOKENS].dtype), state[EMBED_TOKENS].cpu())
        report.notes.append("paligemma.lm_head.weight stored next to embed_tokens: "
                            + ("identical (tied), ignored" if same else
                               "DIFFERENT from embed_tokens; Pi0.5 embeds with embed_tokens, lm_head ignored"))
    model.load_state_dict(state, strict=True, assign=True)
    model.requires_grad_(False)
    model.eval()
    apply_dtype_policy(model, dtype_policy)
    assert_dtype_policy(model)
    for name, p in model.named_parameters():
        if p.device.type == "meta":  # pragma: no cover - load_state_dict(strict=True) already guarantees this
            raise CheckpointError(f"parameter {name} was not loaded")
    log.info("%s", report.summary())
    return LoadedModel(model=model, info=info, report=report)
