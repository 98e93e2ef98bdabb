"""Pi0.5 in plain PyTorch: SigLIP + PaliGemma LLM over the prefix, a Gemma action expert over the actions.

Inference: the prefix (camera tokens + prompt tokens) runs through the LLM once into a per-layer KV cache; then
N Euler steps of the flow from t = 1 (noise) to t = 0 run only the expert over the H action tokens, attending
to the cached prefix. `sample_actions(..., use_cache=False)` recomputes the prefix jointly at every step
(the training-style forward) and is the reference the cached path is tested against.

Module attribute names reproduce the checkpoint key layout (`paligemma_with_expert.paligemma.model.
language_model.layers.N...`), so both openpi and LeRobot checkpoints load by name after prefix handling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_server.model.config import Pi05Config
from policy_server.model.dtype_policy import DtypePolicy, assert_dtype_policy
from policy_server.model.execution import ExecutionConfig
from policy_server.model.flow_capture import CapturedFlow
from policy_server.model.gemma import GemmaModel, Stream, shared_attention_layer
from policy_server.model.layers import attention_mask, block_attention_mask, rope_cos_sin, sinusoidal_time_embedding
from policy_server.model.rtc import RtcGuidance, guidance_weight
from policy_server.model.siglip import MultiModalProjector, SiglipAttention, SiglipVisionModel, image_features


class ModelInputError(ValueError):
    """Model inputs of the wrong shape, dtype or range; the message names the input and what was expected."""


class ModelOutputError(RuntimeError):
    """The model produced non-finite values; the message names the step."""


@dataclass
class ModelInputs:
    """Preprocessed, batched model inputs.

    images: one [B, 3, S, S] float32 tensor in [-1, 1] per camera slot (config.image_keys order);
    image_masks: [B] bool per slot (False = camera absent, its tokens are masked out);
    tokens: [B, L] int64 prompt tokens; token_masks: [B, L] bool.
    """

    images: list[Tensor]
    image_masks: list[Tensor]
    tokens: Tensor
    token_masks: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    def validate(self, cfg: Pi05Config) -> None:
        b = self.batch_size
        s = cfg.vision.image_size
        if len(self.images) != len(cfg.image_keys) or len(self.image_masks) != len(cfg.image_keys):
            raise ModelInputError(f"expected {len(cfg.image_keys)} images and masks ({list(cfg.image_keys)}), "
                                  f"got {len(self.images)} and {len(self.image_masks)}")
        for key, img, mask in zip(cfg.image_keys, self.images, self.image_masks, strict=True):
            if tuple(img.shape) != (b, 3, s, s) or img.dtype != torch.float32:
                raise ModelInputError(f"image '{key}': expected float32 [{b}, 3, {s}, {s}], "
                                      f"got {img.dtype} {list(img.shape)}")
            if tuple(mask.shape) != (b,) or mask.dtype != torch.bool:
                raise ModelInputError(f"image mask '{key}': expected bool [{b}], got {mask.dtype} {list(mask.shape)}")
            lo, hi = float(img.min()), float(img.max())
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ModelInputError(f"image '{key}': has non-finite pixels")
            if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
                hint = " (looks like 0..255 pixels that were not converted)" if hi > 2 else ""
                raise ModelInputError(f"image '{key}': pixel values must be in [-1, 1], got [{lo:.3f}, {hi:.3f}]{hint}")
        expected = (b, cfg.max_token_len)
        if tuple(self.tokens.shape) != expected or self.tokens.dtype != torch.int64:
            raise ModelInputError(f"tokens: expected int64 {list(expected)}, got {self.tokens.dtype} "
                                  f"{list(self.tokens.shape)}")
        if tuple(self.token_masks.shape) != expected or self.token_masks.dtype != torch.bool:
            raise ModelInputError(f"token_masks: expected bool {list(expected)}, got {self.token_masks.dtype} "
                                  f"{list(self.token_masks.shape)}")
        lo_id, hi_id = int(self.tokens.min()), int(self.tokens.max())
        if lo_id < 0 or hi_id >= cfg.vocab_size:
            bad = (self.tokens < 0) | (self.tokens >= cfg.vocab_size)
            row, col = (int(i) for i in torch.nonzero(bad)[0])
            raise ModelInputError(f"token id {int(self.tokens[row, col])} at [{row}, {col}] is outside the "
                                  f"vocabulary [0, {cfg.vocab_size}); refusing to read a nonexistent embedding")
        if not bool(self.token_masks[:, 0].all()):
            raise ModelInputError("token_masks: every prompt must start with a valid token (BOS)")


@dataclass
class PrefixCache:
    """Per-layer RoPE-rotated keys/values of the prefix and its validity mask."""

    kv: list[tuple[Tensor, Tensor]]
    pad: Tensor


@dataclass
class SuffixContext:
    """What every flow step shares (it depends on the prefix and the chunk's shape, not on x_t or t): the
    suffix tokens' RoPE tables [B, H, head_dim] and the attention mask over prefix + suffix."""

    cos: Tensor
    sin: Tensor
    mask: Tensor


class PaliGemmaInner(nn.Module):
    """The `paligemma.model.` level of the key path: vision tower, projector, language model."""

    def __init__(self, cfg: Pi05Config) -> None:
        super().__init__()
        self.vision_tower = SiglipVisionModel(cfg.vision)
        self.multi_modal_projector = MultiModalProjector(cfg.vision.width, cfg.llm.width)
        self.language_model = GemmaModel(cfg.llm, vocab_size=cfg.vocab_size, cond_dim=None)


class PaliGemma(nn.Module):
    def __init__(self, cfg: Pi05Config) -> None:
        super().__init__()
        self.model = PaliGemmaInner(cfg)


class GemmaExpert(nn.Module):
    def __init__(self, cfg: Pi05Config) -> None:
        super().__init__()
        self.model = GemmaModel(cfg.expert, vocab_size=None, cond_dim=cfg.expert.width)


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, cfg: Pi05Config) -> None:
        super().__init__()
        self.paligemma = PaliGemma(cfg)
        self.gemma_expert = GemmaExpert(cfg)

    @property
    def vision_tower(self) -> SiglipVisionModel:
        return self.paligemma.model.vision_tower

    @property
    def projector(self) -> MultiModalProjector:
        return self.paligemma.model.multi_modal_projector

    @property
    def llm(self) -> GemmaModel:
        return self.paligemma.model.language_model

    @property
    def expert(self) -> GemmaModel:
        return self.gemma_expert.model


class Pi05Model(nn.Module):
    def __init__(self, cfg: Pi05Config) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.expert.width
        self.paligemma_with_expert = PaliGemmaWithExpert(cfg)
        self.action_in_proj = nn.Linear(cfg.action_dim, width)
        self.action_out_proj = nn.Linear(width, cfg.action_dim)
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)
        # A fresh model is all float32; loading or apply_dtype_policy() changes this, nothing else may.
        self._dtype_policy = DtypePolicy.FLOAT32
        self.execution = ExecutionConfig()
        self._captured_flow: CapturedFlow | None = None
        self._captured_flows: dict[ExecutionConfig, CapturedFlow] = {}
        self._compiled_prefix: Callable[[ModelInputs], PrefixCache] | None = None
        self.set_execution(self.execution)

    def set_execution(self, execution: ExecutionConfig) -> None:
        """Choose the attention kernel and the flow-loop capture (`execution.py`).

        Captured loops are kept per config, so switching back to one reuses what it compiled or recorded. A
        recorded CUDA graph reads the weights where they were when it was recorded: after replacing or moving the
        weights, call `reset_captures()`."""
        self.execution = execution
        for module in self.modules():
            if isinstance(module, SiglipAttention):
                module.backend = execution.attention
        if execution.flow_capture == "none":
            self._captured_flow = None
        else:
            self._captured_flow = self._captured_flows.setdefault(execution, CapturedFlow(self, execution))

    def reset_captures(self) -> None:
        """Forget every compiled / recorded flow loop and the compiled prefix (made again on next use)."""
        self._captured_flows.clear()
        self._compiled_prefix = None
        self.set_execution(self.execution)

    @property
    def attention_backend(self) -> str:
        return self.execution.attention

    # -- prefix ---------------------------------------------------------------------------------------------
    def embed_prefix(self, inputs: ModelInputs) -> tuple[Tensor, Tensor]:
        """Image tokens of every slot, then prompt tokens scaled by sqrt(width). Returns (embs, pad mask)."""
        pw = self.paligemma_with_expert
        embs, pads = [], []
        for img, mask in zip(inputs.images, inputs.image_masks, strict=True):
            feats = image_features(pw.vision_tower, pw.projector, img)
            embs.append(feats)
            pads.append(mask[:, None].expand(feats.shape[0], feats.shape[1]))
        embed = pw.llm.embed_tokens
        assert embed is not None
        lang = embed(inputs.tokens)
        lang = lang * math.sqrt(lang.shape[-1])
        embs.append(lang)
        pads.append(inputs.token_masks)
        dtype = pw.llm.compute_dtype
        return torch.cat([e.to(dtype) for e in embs], dim=1), torch.cat(pads, dim=1)

    def build_prefix_cache(self, inputs: ModelInputs) -> PrefixCache:
        embs, pad = self.embed_prefix(inputs)
        llm = self.paligemma_with_expert.llm
        positions = torch.cumsum(pad.long(), dim=1) - 1
        cos, sin = rope_cos_sin(positions, llm.cfg.head_dim, llm.cfg.rope_max_wavelength, embs.dtype)
        backend = self.attention_backend
        mask = attention_mask(block_attention_mask(pad, torch.zeros_like(pad, dtype=torch.long)), backend)
        hidden = embs
        kv = []
        for layer in llm.layers:
            (hidden,), layer_kv = shared_attention_layer([Stream(layer, hidden)], cos, sin, mask,  # type: ignore[arg-type]
                                                         backend=backend)
            kv.append(layer_kv)
        return PrefixCache(kv=kv, pad=pad)

    def prefix_cache(self, inputs: ModelInputs) -> PrefixCache:
        """`build_prefix_cache`, through torch.compile when the ExecutionConfig says `compile_prefix` (for
        sampling: call it under torch.inference_mode(); gradients go through `build_prefix_cache`)."""
        if not self.execution.compile_prefix:
            return self.build_prefix_cache(inputs)
        if self._compiled_prefix is None:
            self._compiled_prefix = torch.compile(self.build_prefix_cache, dynamic=False, fullgraph=True)
        return self._compiled_prefix(inputs)

    # -- suffix ---------------------------------------------------------------------------------------------
    def time_condition(self, t: Tensor) -> Tensor:
        """c = swish(time_mlp_out(swish(time_mlp_in(sincos(t))))), [B, expert width], float32."""
        emb = sinusoidal_time_embedding(t, self.cfg.expert.width, self.cfg.time_min_period, self.cfg.time_max_period)
        return F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(emb))))

    def _suffix_out(self, hidden: Tensor, cond: Tensor) -> Tensor:
        normed, _ = self.paligemma_with_expert.expert.norm(hidden, cond)
        out: Tensor = self.action_out_proj(normed.to(torch.float32))
        return out

    def suffix_context(self, cache: PrefixCache, batch: int) -> SuffixContext:
        """The RoPE tables and mask of the H action tokens after the cached prefix (the same for every step)."""
        expert = self.paligemma_with_expert.expert
        b, h, device = batch, self.cfg.action_horizon, cache.pad.device
        suffix_pad = torch.ones(b, h, dtype=torch.bool, device=device)
        prefix_len = cache.pad.shape[1]
        offsets = cache.pad.long().sum(dim=1, keepdim=True)
        positions = offsets + torch.cumsum(suffix_pad.long(), dim=1) - 1
        cos, sin = rope_cos_sin(positions, expert.cfg.head_dim, expert.cfg.rope_max_wavelength, expert.compute_dtype)
        ar = torch.zeros(b, h, dtype=torch.long, device=device)
        ar[:, 0] = 1
        allowed = torch.cat([cache.pad[:, None, :].expand(b, h, prefix_len), block_attention_mask(suffix_pad, ar)],
                            dim=2)
        return SuffixContext(cos=cos, sin=sin, mask=attention_mask(allowed, self.attention_backend))

    def expert_velocity(self, kv: list[tuple[Tensor, Tensor]], ctx: SuffixContext, x_t: Tensor, t: Tensor) -> Tensor:
        """v_theta(x_t, t) [B, H, A] from the prefix keys/values and the step-independent suffix context."""
        expert = self.paligemma_with_expert.expert
        cond = self.time_condition(t)
        hidden = self.action_in_proj(x_t).to(expert.compute_dtype)
        backend = self.attention_backend
        for layer, layer_kv in zip(expert.layers, kv, strict=True):
            (hidden,), _ = shared_attention_layer([Stream(layer, hidden, cond)], ctx.cos, ctx.sin,  # type: ignore[arg-type]
                                                  ctx.mask, cached_kv=layer_kv, backend=backend)
        return self._suffix_out(hidden, cond)

    def velocity(self, cache: PrefixCache, x_t: Tensor, t: Tensor) -> Tensor:
        """v_theta(x_t, t) [B, H, A] from the cached prefix (expert only)."""
        if x_t.shape[1] != self.cfg.action_horizon:
            raise ModelInputError(f"x_t: expected {self.cfg.action_horizon} action steps, got {list(x_t.shape)}")
        return self.expert_velocity(cache.kv, self.suffix_context(cache, x_t.shape[0]), x_t, t)

    def velocity_uncached(self, inputs: ModelInputs, x_t: Tensor, t: Tensor) -> Tensor:
        """v_theta(x_t, t) with prefix and suffix run jointly through both stacks (no cache)."""
        pw = self.paligemma_with_expert
        prefix, prefix_pad = self.embed_prefix(inputs)
        b, h = x_t.shape[0], x_t.shape[1]
        cond = self.time_condition(t)
        suffix = self.action_in_proj(x_t).to(pw.expert.compute_dtype)
        pad = torch.cat([prefix_pad, torch.ones(b, h, dtype=torch.bool, device=x_t.device)], dim=1)
        ar = torch.zeros_like(pad, dtype=torch.long)
        ar[:, prefix.shape[1]] = 1
        positions = torch.cumsum(pad.long(), dim=1) - 1
        cos, sin = rope_cos_sin(positions, pw.llm.cfg.head_dim, pw.llm.cfg.rope_max_wavelength, prefix.dtype)
        backend = self.attention_backend
        mask = attention_mask(block_attention_mask(pad, ar), backend)
        for llm_layer, expert_layer in zip(pw.llm.layers, pw.expert.layers, strict=True):
            (prefix, suffix), _ = shared_attention_layer(
                [Stream(llm_layer, prefix), Stream(expert_layer, suffix, cond)], cos, sin, mask,  # type: ignore[arg-type]
                backend=backend,
            )
        return self._suffix_out(suffix, cond)

    # -- training -------------------------------------------------------------------------------------------
    @staticmethod
    def sample_time(batch: int, generator: torch.Generator | None = None,
                    device: torch.device | None = None) -> Tensor:
        """openpi's training times t = 0.999 * Beta(1.5, 1) + 0.001, float32 [B].

        Beta(a, 1) has CDF x^a, so it is drawn as U^(1/a) from a uniform U (exact, and seedable with a
        torch.Generator, which torch.distributions.Beta is not)."""
        u = torch.rand(batch, generator=generator, dtype=torch.float32)
        return (u.pow(1.0 / 1.5) * 0.999 + 0.001).to(device or torch.device("cpu"))

    def compute_loss(self, inputs: ModelInputs, actions: Tensor, noise: Tensor | None = None,
                     time: Tensor | None = None, *, use_cache: bool = True) -> Tensor:
        """Flow-matching loss of normalized action chunks, per element [B, H, A] (reduce it yourself).

        x_t = t * noise + (1 - t) * actions, target u = noise - actions, loss (v_theta(x_t, t) - u)^2 with
        padded dims included (openpi). `noise` defaults to N(0, I), `time` to `sample_time`. With
        use_cache=True the prefix runs once and the expert attends to its keys/values (the inference path,
        here with gradients); that equals the joint forward (`velocity_uncached`, use_cache=False) because
        prefix tokens never attend to the suffix."""
        cfg = self.cfg
        assert_dtype_policy(self)
        inputs.validate(cfg)
        b = inputs.batch_size
        expected = (b, cfg.action_horizon, cfg.action_dim)
        if tuple(actions.shape) != expected or actions.dtype != torch.float32:
            raise ModelInputError(f"actions: expected float32 {list(expected)}, got {actions.dtype} "
                                  f"{list(actions.shape)}")
        device = actions.device
        if noise is None:
            noise = torch.randn(expected, dtype=torch.float32, device=device)
        if time is None:
            time = self.sample_time(b, device=device)
        if tuple(noise.shape) != expected or tuple(time.shape) != (b,):
            raise ModelInputError(f"noise must be {list(expected)} and time [{b}], got {list(noise.shape)} and "
                                  f"{list(time.shape)}")
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        target = noise - actions
        if use_cache:
            v_t = self.velocity(self.build_prefix_cache(inputs), x_t, time)
        else:
            v_t = self.velocity_uncached(inputs, x_t, time)
        return (v_t - target) ** 2

    # -- sampling -------------------------------------------------------------------------------------------
    def sample_noise(self, batch: int, seed: int | None, device: torch.device) -> Tensor:
        """Standard normal noise [B, H, A]; with a seed it is drawn on the CPU so every device sees the same."""
        shape = (batch, self.cfg.action_horizon, self.cfg.action_dim)
        if seed is None:
            return torch.randn(shape, dtype=torch.float32, device=device)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        return torch.randn(shape, dtype=torch.float32, generator=gen).to(device)

    def sample_actions(
        self,
        inputs: ModelInputs,
        noise: Tensor | None = None,
        *,
        seed: int | None = None,
        num_steps: int | None = None,
        rtc: RtcGuidance | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Integrate the flow from t = 1 to 0 with N Euler steps; returns normalized actions [B, H, A] float32.

        Time follows openpi exactly (float32 t and dt, `while t >= -dt / 2`), so the evaluated times are
        1.0, 0.9, ..., 0.1 with float32 rounding. With `rtc`, each step adds the guidance term (one VJP).
        With a flow capture set (`set_execution`), the unguided cached loop runs compiled or as a CUDA graph
        (`flow_capture.py`); guided and uncached sampling always run the plain loop (`_plain_flow`).
        """
        cfg = self.cfg
        assert_dtype_policy(self)
        inputs.validate(cfg)
        device = inputs.tokens.device
        b = inputs.batch_size
        if noise is None:
            noise = self.sample_noise(b, seed, device)
        expected = (b, cfg.action_horizon, cfg.action_dim)
        if tuple(noise.shape) != expected or noise.dtype != torch.float32:
            raise ModelInputError(f"noise: expected float32 {list(expected)}, got {noise.dtype} {list(noise.shape)}")
        guided = rtc is not None and rtc.max_guidance > 0 and bool(rtc.weights.any())
        if rtc is not None:
            rtc.validate(b, cfg.action_horizon, cfg.action_dim)
        steps = num_steps or cfg.num_steps
        # Guidance needs autograd through the expert, so the prefix must not be an inference tensor.
        context = torch.no_grad() if guided else torch.inference_mode()
        with context:
            cache = None if not use_cache else self.build_prefix_cache(inputs) if guided else self.prefix_cache(inputs)
            if cache is not None and not guided:
                x_t = self.denoise(cache, noise, steps)
            else:
                x_t = self._plain_flow(inputs, cache, noise, steps, rtc if guided else None)
        return x_t.clone() if x_t.is_inference() else x_t.detach()

    def denoise(self, cache: PrefixCache, noise: Tensor, steps: int) -> Tensor:
        """The unguided flow from `noise` over the cached prefix, captured when the ExecutionConfig says so.

        The second half of `sample_actions` (which validates and sets the grad mode); public so benchmarks can
        time the prefix pass and the flow loop apart. Call it under torch.inference_mode()."""
        if self._captured_flow is None:
            return self._plain_flow(None, cache, noise, steps, None)
        times = flow_times(steps, noise.device)
        x_t, finite = self._captured_flow.run(cache, noise, times)
        _raise_on_non_finite(finite, times)
        return x_t

    def _plain_flow(self, inputs: ModelInputs | None, cache: PrefixCache | None, noise: Tensor, steps: int,
                    rtc: RtcGuidance | None) -> Tensor:
        """The reference Euler loop: one velocity per step, each step checked for non-finite values. The suffix's
        positions, RoPE tables and mask depend on the prefix alone: built once, not per step."""
        device, b = noise.device, noise.shape[0]
        if noise.shape[1] != self.cfg.action_horizon:
            raise ModelInputError(f"x_t: expected {self.cfg.action_horizon} action steps, got {list(noise.shape)}")
        ctx = self.suffix_context(cache, b) if cache is not None else None
        dt = torch.tensor(-1.0 / steps, dtype=torch.float32, device=device)
        time = torch.tensor(1.0, dtype=torch.float32, device=device)
        x_t = noise
        step = 0
        while time >= -dt / 2:
            t_batch = time.expand(b)

            def v_fn(x: Tensor, t_batch: Tensor = t_batch) -> Tensor:
                if cache is not None:
                    assert ctx is not None
                    return self.expert_velocity(cache.kv, ctx, x, t_batch)
                assert inputs is not None, "the uncached flow needs the inputs"
                return self.velocity_uncached(inputs, x, t_batch)

            if rtc is not None:
                v_t, grad = _guided_velocity(v_fn, x_t, time, rtc)
                w = guidance_weight(float(time), rtc.max_guidance)
                x_t = x_t + dt * (v_t - w * grad)
            else:
                v_t = v_fn(x_t)
                x_t = x_t + dt * v_t
            if not bool(torch.isfinite(x_t).all()):
                raise ModelOutputError(_non_finite_message(step, float(time)))
            time = time + dt
            step += 1
        return x_t

    def flow_step(self, kv: list[tuple[Tensor, Tensor]], ctx: SuffixContext, x_t: Tensor, t: Tensor,
                  dt: Tensor) -> tuple[Tensor, Tensor]:
        """One unguided Euler step with static shapes and no host sync: (x_t + dt * v(x_t, t), all finite?).

        The unit the captured loops are made of (`flow_capture.py`): t is a 0-dim float32 tensor, the finite
        flag a 0-dim bool tensor checked once after the loop instead of after every step."""
        x_next = x_t + dt * self.expert_velocity(kv, ctx, x_t, t.expand(x_t.shape[0]))
        return x_next, torch.isfinite(x_next).all()


def _non_finite_message(step: int, time: float) -> str:
    return f"non-finite actions after flow step {step} (t = {time:.3f}); check the weights' dtype and the inputs"


def _raise_on_non_finite(finite: Tensor, times: Tensor) -> None:
    """finite: bool [steps] from a captured loop; raise ModelOutputError naming the first bad step."""
    if not bool(finite.all()):
        step = int(torch.nonzero(~finite)[0])
        raise ModelOutputError(_non_finite_message(step, float(times[step])))


def flow_times(steps: int, device: torch.device) -> Tensor:
    """The float32 times the Euler loop evaluates, [steps], by the loop's own recurrence (t += dt, float32)."""
    dt = torch.tensor(-1.0 / steps, dtype=torch.float32)
    time = torch.tensor(1.0, dtype=torch.float32)
    times = []
    while time >= -dt / 2:
        times.append(time)
        time = time + dt
    return torch.stack(times).to(device)


def _guided_velocity(v_fn, x_t: Tensor, time: Tensor, rtc: RtcGuidance) -> tuple[Tensor, Tensor]:  # type: ignore[no-untyped-def]
    """v and g = (W * (Y - a_hat))^T d a_hat/d x for a_hat = x - t v: one vector-Jacobian product."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        v = v_fn(x)
        a_hat = x - time * v
        error = rtc.weights.to(x.device)[None, :, None] * (rtc.previous.to(x.device) - a_hat)
        (grad,) = torch.autograd.grad(a_hat, x, grad_outputs=error.detach())
    return v.detach(), grad
