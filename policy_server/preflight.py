"""Memory preflight: refuse to load a checkpoint the device has no room for, before touching the weights.

Why: loading 7 GB of weights into a GPU that is already half full fails late and obscurely (an OOM in the
middle of the load or, worse, at the first inference while the robot waits). The estimate is the weights under
the chosen dtype policy plus the largest working set of one inference (batch 1), with a stated headroom.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from policy_server.model.config import GEMMA_VARIANTS, Pi05Config
from policy_server.model.dtype_policy import DtypePolicy, param_dtype
from policy_server.model.pi05 import Pi05Model

GIB = 2**30
# CUDA context, allocator slack and library workspaces (cuBLAS, attention) at full size.
RUNTIME_OVERHEAD_BYTES = 768 * 2**20


class PreflightError(RuntimeError):
    """The device lacks the memory to serve the model; the message gives the numbers and what to do."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes


def estimate_memory(cfg: Pi05Config, policy: DtypePolicy, batch: int = 1) -> MemoryEstimate:
    with torch.device("meta"):
        model = Pi05Model(cfg)
    weights = sum(p.numel() * torch.empty((), dtype=param_dtype(n, policy)).element_size()
                  for n, p in model.named_parameters())
    act = 2 if policy is DtypePolicy.BFLOAT16 else 4
    llm, expert, vision = cfg.llm, cfg.expert, cfg.vision
    prefix = cfg.prefix_len
    kv_cache = llm.depth * 2 * batch * prefix * llm.num_kv_heads * llm.head_dim * act
    prefix_scores = batch * llm.num_heads * prefix * prefix * 4 * 2  # float32 logits + softmax
    prefix_mlp = batch * prefix * llm.mlp_dim * act * 3
    vision_scores = batch * vision.num_heads * vision.num_patches**2 * 4 * 2
    suffix = batch * cfg.action_horizon * (expert.mlp_dim * 3 + llm.num_heads * (prefix + cfg.action_horizon) * 2) * 4
    transient = max(prefix_scores + prefix_mlp, vision_scores, suffix)
    overhead = RUNTIME_OVERHEAD_BYTES if cfg.llm.width >= GEMMA_VARIANTS["gemma_2b"].width else 64 * 2**20
    return MemoryEstimate(weights_bytes=weights, activation_bytes=kv_cache + transient + overhead)


def available_bytes(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes on `device` (GPU memory, or MemAvailable/MemTotal of the host for the CPU)."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    info: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return info.get("MemAvailable", 0), info.get("MemTotal", 0)


def preflight(cfg: Pi05Config, policy: DtypePolicy, device: torch.device, headroom: float = 1.1) -> MemoryEstimate:
    """Raise PreflightError if `device` cannot hold the model and one inference with `headroom` to spare."""
    estimate = estimate_memory(cfg, policy)
    free, total = available_bytes(device)
    needed = int(estimate.total_bytes * headroom)
    if needed > free:
        hint = ("free GPU memory (other processes: nvidia-smi), use --dtype bfloat16, or a larger GPU"
                if device.type == "cuda" else "close other programs or use a machine with more memory")
        raise PreflightError(
            f"{device}: {free / GIB:.2f} GiB free of {total / GIB:.2f} GiB, but serving "
            f"{cfg.paligemma_variant}/{cfg.action_expert_variant} with dtype policy '{policy.value}' needs about "
            f"{needed / GIB:.2f} GiB (weights {estimate.weights_bytes / GIB:.2f} GiB + one inference "
            f"{estimate.activation_bytes / GIB:.2f} GiB, x{headroom} headroom); {hint}"
        )
    return estimate
