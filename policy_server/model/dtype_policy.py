"""One explicit dtype policy, applied at load and asserted at run time.

`float32`: every parameter float32 (the CPU policy, and the reference every bf16 result is compared to).
`bfloat16`: openpi's mixed policy -- everything bfloat16 except the SigLIP patch/position embeddings, every
Gemma norm (including the adaRMSNorm dense layers) and the top-level action/time projections, which stay
float32. The model stores the policy it was loaded with; `assert_dtype_policy` runs before every inference,
so weights converted behind its back (e.g. a stray `.half()` or `.to(torch.bfloat16)`) are refused instead of
silently producing different numbers.
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import nn

FP32_SELECTORS = (
    "patch_embedding.weight",
    "patch_embedding.bias",
    "position_embedding.weight",
    "input_layernorm",
    "post_attention_layernorm",
    "model.norm",
)
TOP_LEVEL_FP32 = ("action_in_proj.", "action_out_proj.", "time_mlp_in.", "time_mlp_out.")


class DtypePolicyError(RuntimeError):
    """A parameter's dtype differs from the model's dtype policy (named parameter, expected and actual)."""


class DtypePolicy(StrEnum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"

    @classmethod
    def parse(cls, value: str, device: torch.device) -> DtypePolicy:
        """'float32' | 'bfloat16' | 'auto' (bfloat16 on CUDA, float32 elsewhere)."""
        if value == "auto":
            return cls.BFLOAT16 if device.type == "cuda" else cls.FLOAT32
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"dtype policy must be float32, bfloat16 or auto, got '{value}'") from None


def param_dtype(name: str, policy: DtypePolicy) -> torch.dtype:
    """The dtype `policy` assigns to the parameter called `name`."""
    if policy is DtypePolicy.FLOAT32:
        return torch.float32
    if name.startswith(TOP_LEVEL_FP32) or any(s in name for s in FP32_SELECTORS):
        return torch.float32
    return torch.bfloat16


def apply_dtype_policy(model: nn.Module, policy: DtypePolicy) -> None:
    for name, param in model.named_parameters():
        target = param_dtype(name, policy)
        if param.dtype != target:
            param.data = param.data.to(target)
    model._dtype_policy = policy  # type: ignore[assignment]  # read back by model_dtype_policy


def model_dtype_policy(model: nn.Module) -> DtypePolicy:
    policy = getattr(model, "_dtype_policy", None)
    if not isinstance(policy, DtypePolicy):
        raise DtypePolicyError(
            "model has no dtype policy; build it with Pi05Model or load it through policy_server.checkpoint"
        )
    return policy


def assert_dtype_policy(model: nn.Module) -> DtypePolicy:
    """Raise DtypePolicyError naming the first parameter whose dtype breaks the model's policy."""
    policy = model_dtype_policy(model)
    wrong = [(n, p.dtype) for n, p in model.named_parameters() if p.dtype != param_dtype(n, policy)]
    if wrong:
        name, dtype = wrong[0]
        raise DtypePolicyError(
            f"parameter '{name}' is {dtype} but the model was loaded with dtype policy '{policy.value}' "
            f"(expects {param_dtype(name, policy)}); {len(wrong)} parameters differ. Reload the checkpoint with "
            "the policy you want instead of converting a loaded model."
        )
    return policy
