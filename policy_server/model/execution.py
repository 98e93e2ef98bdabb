"""How the Pi0.5 model executes (not what it computes): the attention kernel and how the flow loop is launched.

Every choice computes the same function; the tests hold each one to the eager reference (float32 to 1e-5,
bfloat16 within the bf16-vs-fp32 tolerance). Kept apart from `config` because a checkpoint fixes the model's
sizes, while the execution is the serving machine's business and may change between runs of the same weights.

attention:
    "sdpa" (default): `torch.nn.functional.scaled_dot_product_attention` with grouped K/V (the single KV head
    is never copied) and a boolean mask; one fused kernel instead of matmul/softmax/matmul plus two copies of
    K/V per layer. It is the default because it equals the eager path within tolerance on every preset the tests
    run, measured no slower than eager on CPU for the demo preset and 1.7x faster for `tiny` (docs/benchmarks.md,
    "Fused attention and captured flow loop"), and on CUDA it runs the memory-efficient fused kernel.
    "eager": the reference -- the published formula op by op, softmax in float32.
flow_capture (the ten expert steps after the prefix pass; the prefix pass itself always runs as is):
    "none" (default for a bare model): Python launches every op of every step.
    "compile": the static-shape flow loop through `torch.compile` (inductor; C++ on CPU, Triton on CUDA),
    compiled once per batch size on first use (the server warms it up at start).
    "cuda_graph": the static-shape flow loop recorded once per batch size into a CUDA graph and replayed,
    which removes the per-kernel launch cost; CUDA only.
    "auto": "cuda_graph" on CUDA, "none" elsewhere. Recording a CUDA graph costs a few flow loops at start;
    compiling on CPU costs tens of seconds per batch size at start (measured on 2 cores), which a CPU server
    (the demo, development) should not pay unasked, so on CPU "compile" is asked for by name.
compile_prefix: the prefix pass (SigLIP + LLM over the prefix) through `torch.compile` as well, per batch size.
    Off by default: at full size on CUDA the prefix is compute-bound (large matmuls), so compiling gains little
    for its start-up cost; on CPU, small models' prefix is bound by per-op overhead and it pays.
RTC-guided sampling needs autograd through the expert and the uncached reference recomputes the prefix, so both
always run the plain loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ATTENTION_BACKENDS = ("sdpa", "eager")
FLOW_CAPTURE_MODES = ("none", "compile", "cuda_graph", "auto")


class ExecutionConfigError(ValueError):
    """An execution option names an unknown backend or one the device cannot run."""


@dataclass(frozen=True)
class ExecutionConfig:
    attention: str = "sdpa"
    flow_capture: str = "none"
    compile_prefix: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_BACKENDS:
            raise ExecutionConfigError(f"attention must be one of {list(ATTENTION_BACKENDS)}, "
                                       f"got '{self.attention}'")
        if self.flow_capture not in FLOW_CAPTURE_MODES:
            raise ExecutionConfigError(f"flow_capture must be one of {list(FLOW_CAPTURE_MODES)}, "
                                       f"got '{self.flow_capture}'")

    def resolve(self, device: torch.device) -> ExecutionConfig:
        """The same config with "auto" replaced by the device's choice; refuses cuda_graph off CUDA by name."""
        capture = self.flow_capture
        if capture == "auto":
            capture = "cuda_graph" if device.type == "cuda" else "none"
        if capture == "cuda_graph" and device.type != "cuda":
            raise ExecutionConfigError(f"flow_capture 'cuda_graph' needs a CUDA device, the model is on "
                                       f"'{device}'; use 'compile' or 'none'")
        return ExecutionConfig(attention=self.attention, flow_capture=capture, compile_prefix=self.compile_prefix)
