"""The flow loop (the expert's Euler steps after the prefix pass) with static shapes, compiled or as a CUDA graph.

Why: after the prefix pass a chunk is ten expert passes over H action tokens; each is hundreds of small ops, so
eager execution is bound by per-op dispatch (CPU) or kernel launch (CUDA), not by arithmetic. Every input of the
loop has a shape fixed by the model and the batch size (prefix keys/values, pad mask, noise, the ten times), so
the loop can be compiled once (`torch.compile`, per batch size) or recorded once into a CUDA graph and replayed
(per batch size and step count). The step is `Pi05Model.flow_step`, so the captured loop computes exactly what
the plain loop computes; the per-step finite check becomes a flag per step read once at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from policy_server.model.execution import ExecutionConfig

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE

    from policy_server.model.pi05 import Pi05Model, PrefixCache

StepFn = Callable[..., tuple[Tensor, Tensor]]


@dataclass
class _RecordedFlow:
    """One CUDA graph of the whole loop and the static tensors it reads and writes."""

    graph: torch.cuda.CUDAGraph
    kv: list[tuple[Tensor, Tensor]]
    pad: Tensor
    noise: Tensor
    times: Tensor
    out: Tensor
    finite: Tensor


class CapturedFlow:
    """Runs a model's unguided cached flow loop the way its ExecutionConfig says ("compile" or "cuda_graph")."""

    def __init__(self, model: Pi05Model, execution: ExecutionConfig) -> None:
        if execution.flow_capture == "none":
            raise ValueError("CapturedFlow needs flow_capture 'compile', 'cuda_graph' or 'auto', got 'none'")
        self.model = model
        self.execution = execution
        self._compiled: StepFn | None = None
        self._graphs: dict[tuple[int, ...], _RecordedFlow] = {}
        self._pool: _POOL_HANDLE | None = None

    def mode(self, device: torch.device) -> str:
        return self.execution.resolve(device).flow_capture

    def run(self, cache: PrefixCache, noise: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        """Integrate from `noise` over `times` ([steps] float32); returns (x_0 [B, H, A], finite flags [steps])."""
        if self.mode(noise.device) == "cuda_graph":
            return self._replay(cache, noise, times)
        return self._run_compiled(cache, noise, times)

    # -- torch.compile ----------------------------------------------------------------------------------------
    def _run_compiled(self, cache: PrefixCache, noise: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        if self._compiled is None:
            # One step compiled (not the unrolled loop): the step's graph is the same for every t, so it is
            # compiled once per batch size, in a tenth of the time an unrolled loop would take. torch keeps up to
            # `torch._dynamo.config.recompile_limit` (8) batch sizes compiled; beyond that it runs them eagerly.
            self._compiled = torch.compile(self.model.flow_step, dynamic=False, fullgraph=True)
        step = self._compiled
        ctx = self.model.suffix_context(cache, noise.shape[0])
        dt = _dt(times)
        # Every step gets tensors of one kind (the loop runs under inference_mode, so a clone of the noise is an
        # inference tensor like the steps' outputs): one compiled graph per batch size, not two.
        x, flags = noise.clone(), []
        for i in range(times.shape[0]):
            x, finite = step(cache.kv, ctx, x, times[i].clone(), dt)
            flags.append(finite)
        return x, torch.stack(flags)

    # -- CUDA graph -------------------------------------------------------------------------------------------
    def _replay(self, cache: PrefixCache, noise: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        key = (*noise.shape, times.shape[0], cache.pad.shape[1])
        recorded = self._graphs.get(key)
        if recorded is None:
            recorded = self._record(cache, noise, times)
            self._graphs[key] = recorded
        for (k_static, v_static), (k, v) in zip(recorded.kv, cache.kv, strict=True):
            k_static.copy_(k)
            v_static.copy_(v)
        recorded.pad.copy_(cache.pad)
        recorded.noise.copy_(noise)
        recorded.times.copy_(times)
        recorded.graph.replay()
        return recorded.out.clone(), recorded.finite.clone()

    def _record(self, cache: PrefixCache, noise: Tensor, times: Tensor) -> _RecordedFlow:
        """Record the loop for this batch size: warm up on a side stream (allocator, cuBLAS and kernel choice),
        then capture. All graphs share one memory pool; they are replayed one at a time and their outputs are
        copied out right after each replay, so sharing is safe."""
        from policy_server.model.pi05 import PrefixCache

        device = noise.device
        kv = [(k.clone(), v.clone()) for k, v in cache.kv]
        pad, static_noise, static_times = cache.pad.clone(), noise.clone(), times.clone()
        model = self.model

        def loop() -> tuple[Tensor, Tensor]:
            ctx = model.suffix_context(PrefixCache(kv=kv, pad=pad), static_noise.shape[0])
            dt = _dt(static_times)
            x, flags = static_noise, []
            for i in range(static_times.shape[0]):
                x, finite = model.flow_step(kv, ctx, x, static_times[i], dt)
                flags.append(finite)
            return x, torch.stack(flags)

        side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                loop()
        torch.cuda.current_stream(device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out, finite = loop()
        return _RecordedFlow(graph=graph, kv=kv, pad=pad, noise=static_noise, times=static_times, out=out,
                             finite=finite)


def _dt(times: Tensor) -> Tensor:
    """The loop's float32 step, -1/steps, computed as the plain loop computes it (not from the times)."""
    return torch.full((), -1.0 / times.shape[0], dtype=torch.float32, device=times.device)
