"""The Pi0.5 policy behind the server: checkpoint + tokenizer + normalization pipeline + model.

One request: the Pi0.5 input transform (`policy_server.pi05_inputs`: robot state -> named normalization
steps (report) -> prompt with discretized state -> tokens (asserted inside the vocabulary); camera images fitted
as the checkpoint's trainer fitted them (policy_config.json "image_resize", else the layout's convention) into the
model's slots) -> flow sampling on the prefix KV cache (optionally RTC-guided) -> named output steps (unpad,
denormalize, delta->absolute, gripper, limits) -> actions in robot units, with the normalization report and
timings. Training and the local-model tools build their inputs with the same transform.

Startup refuses early and by name: memory preflight before reading weights, strict key-checked load, stats
validated against the policy config, tokenizer vocabulary checked against the model, then one warm-up inference.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from policy_norm.checkpoint import build_pipeline
from policy_norm.errors import NormalizationError, SelfTestError
from policy_norm.pipeline import NormalizationPipeline
from policy_norm.report import NormReport
from policy_norm.selftest import round_trip_selftest
from policy_norm.spec import CameraSpec, PolicySpec, PreprocessingSpec
from policy_server.checkpoint.layouts import inspect_checkpoint
from policy_server.checkpoint.loader import LoadReport, load_checkpoint
from policy_server.model.dtype_policy import DtypePolicy
from policy_server.model.execution import ExecutionConfig, ExecutionConfigError
from policy_server.model.pi05 import ModelInputs, Pi05Model
from policy_server.model.rtc import RtcError, RtcGuidance, soft_mask
from policy_server.pi05_inputs import Pi05InputTransform
from policy_server.policy import (
    BatchItem,
    Policy,
    PolicyError,
    PolicyIdentity,
    PolicyOutput,
    PolicyWarning,
    canonical_digest,
)
from policy_server.policy_config import FILE_NAME, Pi05PolicyConfig, PolicyConfigError
from policy_server.preflight import MemoryEstimate, preflight
from policy_server.tokenizer import PromptTokenizer, find_tokenizer_model
from policy_server.validate import ObservationInput, RtcInput
from protos.codec import WireError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pi05ServeOptions:
    checkpoint: Path
    policy_config: Path | None = None
    tokenizer: Path | None = None
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16"
    asset_id: str | None = None
    warmup: bool = True
    memory_headroom: float = 1.1
    # Execution (policy_server.model.execution): the attention kernel and the flow-loop capture; with a capture,
    # warm-up makes the captured loop for every batch size 1..warmup_max_batch, so no request pays for it.
    attention: str = "sdpa"
    flow_capture: str = "auto"
    compile_prefix: bool = False
    warmup_max_batch: int = 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PolicyConfigError(f"--device {name}: CUDA is not available on this machine (torch "
                                f"{torch.__version__}); use --device cpu")
    return device


@dataclass
class _Prepared:
    """One request ready for the model: its inputs (batch of 1) and what the output steps need."""

    inputs: ModelInputs
    robot_state: np.ndarray
    in_report: NormReport
    warnings: list[PolicyWarning]
    guidance: RtcGuidance | None
    preprocess_ms: float


class Pi05Policy(Policy):
    concurrent_safe = False  # one model, one stream of work: the server serializes calls
    supports_batching = True  # infer_batch shares one sample_actions call

    def __init__(self, options: Pi05ServeOptions) -> None:
        t0 = time.perf_counter()
        self.options = options
        directory = options.checkpoint
        self.device = resolve_device(options.device)
        self.dtype_policy = DtypePolicy.parse(options.dtype, self.device)
        try:
            self.execution = ExecutionConfig(options.attention, options.flow_capture,
                                             options.compile_prefix).resolve(self.device)
        except ExecutionConfigError as exc:
            raise PolicyConfigError(str(exc)) from None
        if options.warmup_max_batch < 1:
            raise PolicyConfigError(f"warmup_max_batch must be >= 1, got {options.warmup_max_batch}")
        info = inspect_checkpoint(directory)
        cfg = info.config
        self.memory: MemoryEstimate = preflight(cfg, self.dtype_policy, self.device, options.memory_headroom)
        self.config = Pi05PolicyConfig.load(options.policy_config or directory / FILE_NAME)
        self.config.check_slots(cfg.image_keys)
        norm = self.config.normalization
        if norm.model_action_dim != cfg.action_dim:
            raise PolicyConfigError(f"normalization.model_action_dim is {norm.model_action_dim} but the model's "
                                    f"action_dim is {cfg.action_dim}")
        if norm.state_bins != 256:
            raise PolicyConfigError(f"normalization.state_bins is {norm.state_bins}; Pi0.5 prompts use 256 bins")
        if norm.action_horizon is not None and norm.action_horizon != cfg.action_horizon:
            raise PolicyConfigError(f"normalization.action_horizon is {norm.action_horizon} but the model's "
                                    f"action_horizon is {cfg.action_horizon}")
        self.pipeline: NormalizationPipeline = build_pipeline(directory, norm, options.asset_id)
        self.round_trip = round_trip_selftest(self.pipeline)
        if not self.round_trip.ok:
            raise SelfTestError(f"normalization self-test failed: {self.round_trip.summary()}")
        explicit = options.tokenizer or (directory / self.config.tokenizer if self.config.tokenizer else None)
        self.tokenizer = PromptTokenizer.from_file(find_tokenizer_model(directory, explicit),
                                                   model_vocab_size=cfg.vocab_size)
        loaded = load_checkpoint(directory, dtype_policy=self.dtype_policy, device=self.device)
        self.model: Pi05Model = loaded.model
        self.model.set_execution(self.execution)
        self.load_report: LoadReport = loaded.report
        self.transform = Pi05InputTransform.from_policy_config(cfg, self.config, self.tokenizer, self.pipeline,
                                                               device=self.device, layout=info.layout)
        image_resize, why = self.config.resolve_image_resize(info.layout)
        log.info("camera frames are fitted to %dx%d with %s: %s; the server fits frames that arrive at another size",
                 cfg.vision.image_size, cfg.vision.image_size, image_resize, why)
        size = cfg.vision.image_size
        self.spec = PolicySpec(
            policy_type="pi05",
            model_id=f"{directory.resolve().name} ({info.layout}, {cfg.paligemma_variant}/{cfg.action_expert_variant})",
            weight_hash=loaded.report.weight_hash,
            action_horizon=cfg.action_horizon,
            state_names=norm.state_names,
            action_names=norm.action_names,
            cameras=tuple(CameraSpec(name, size, size, required=True) for name in self.config.cameras),
            control_fps=self.config.control_fps,
            action_delta_mask=norm.action_delta_mask,
            action_gripper_mask=tuple(i in norm.gripper_dims() for i in range(norm.action_dim)),
            norm_stats=self.pipeline.to_spec(),
            preprocessing=PreprocessingSpec(image_resize=self.transform.image_resize, image_height=size,
                                            image_width=size, state_bins=norm.state_bins),
            supports_rtc=True,
            require_prompt=self.config.default_prompt is None,
            max_prompt_chars=2000,
            joint_limits=tuple((name, lo, hi) for name, (lo, hi) in (norm.joint_limits or {}).items()),
        )
        self.load_seconds = time.perf_counter() - t0
        self.warmup_ms: float | None = self._warmup() if options.warmup else None
        log.info("Pi0.5 ready in %.1f s on %s (%s, attention %s, flow capture %s%s): %s; warm-up %s ms\n%s",
                 self.load_seconds, self.device, self.dtype_policy.value, self.execution.attention,
                 self.execution.flow_capture, ", compiled prefix" if self.execution.compile_prefix else "",
                 self.spec.model_id,
                 f"{self.warmup_ms:.0f}" if self.warmup_ms is not None else "skipped", self.pipeline.describe())

    def identity(self) -> PolicyIdentity:
        """The weights file's sha256, the digest of policy_config.json as loaded and that of the stats the
        pipeline normalizes with: a change of any of them is another model for the client."""
        return PolicyIdentity(weight_hash=self.load_report.weight_hash,
                              policy_config_digest=canonical_digest(self.config.to_dict()),
                              norm_stats_digest=self.pipeline.digest())

    # -- request path ---------------------------------------------------------------------------------------
    def _rtc(self, rtc: RtcInput, state: np.ndarray) -> RtcGuidance:
        horizon = self.model.cfg.action_horizon
        rows = rtc.previous_chunk_remainder.shape[0]
        execution = rtc.execution_horizon or horizon - rows
        if horizon - execution > rows:
            raise WireError("observation.rtc.execution_horizon",
                            f"with a remainder of {rows} rows the execution horizon must be >= {horizon - rows} "
                            f"(H - h), got {execution}")
        try:
            weights = soft_mask(horizon, rtc.inference_delay_steps, execution, self.config.rtc.schedule)
        except RtcError as exc:
            raise WireError("observation.rtc", str(exc)) from None
        encoded = self.pipeline.encode_actions(rtc.previous_chunk_remainder, state)
        previous = np.zeros((horizon, self.model.cfg.action_dim), dtype=np.float32)
        previous[: encoded.shape[0]] = encoded
        return RtcGuidance(previous=torch.from_numpy(previous)[None].to(self.device), weights=weights.to(self.device),
                           max_guidance=self.config.rtc.max_guidance)

    def _prepare(self, obs: ObservationInput) -> _Prepared:
        """The input transform, RTC guidance and warnings of one request. Raises WireError naming the field."""
        t0 = time.perf_counter()
        try:
            sample = self.transform(obs)
        except NormalizationError as exc:
            raise WireError("observation.state", str(exc)) from None
        encoded = sample.prompt
        warnings: list[PolicyWarning] = []
        if encoded.truncated_tokens:
            max_len = self.model.cfg.max_token_len
            warnings.append(PolicyWarning("prompt_truncated", "observation.prompt",
                                          f"prompt + state need {encoded.num_tokens + encoded.truncated_tokens} "
                                          f"tokens; the model takes {max_len}, {encoded.truncated_tokens} dropped"))
        guidance = self._rtc(obs.rtc, encoded.robot_state) if obs.rtc is not None else None
        return _Prepared(inputs=sample.inputs, robot_state=encoded.robot_state, in_report=encoded.report,
                         warnings=warnings, guidance=guidance, preprocess_ms=(time.perf_counter() - t0) * 1e3)

    def _sample(
        self, inputs: ModelInputs, noise: torch.Tensor, guidance: RtcGuidance | None
    ) -> tuple[torch.Tensor, float]:
        """One model call on a batch; returns normalized actions [B, H, A] and the call's time in ms."""
        t0 = time.perf_counter()
        normalized = self.model.sample_actions(inputs, noise, rtc=guidance)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return normalized, (time.perf_counter() - t0) * 1e3

    def _noise(self, noise_seed: int | None) -> torch.Tensor:
        """[1, H, A] noise of one request: the same draw whether the request runs alone or in a batch."""
        return self.model.sample_noise(1, noise_seed, self.device)

    def _finish(self, item: _Prepared, normalized: torch.Tensor, model_ms: float) -> PolicyOutput:
        """Output steps of one request's normalized chunk [H, A]. Raises PolicyError when the pipeline refuses."""
        t0 = time.perf_counter()
        try:
            actions, out_report = self.pipeline.finish(normalized.float().cpu().numpy(), item.robot_state)
        except NormalizationError as exc:
            raise PolicyError(f"output normalization refused the chunk: {exc}") from None
        report = item.in_report.merged(out_report)
        warnings = item.warnings + [PolicyWarning(w.code, w.field, w.message) for w in report.warnings]
        return PolicyOutput(
            actions=actions.astype(np.float32, copy=False),
            norm_report=report.to_proto(),
            warnings=warnings,
            preprocess_ms=item.preprocess_ms,
            model_ms=model_ms,
            postprocess_ms=(time.perf_counter() - t0) * 1e3,
        )

    def _infer_prepared(self, item: _Prepared, noise_seed: int | None) -> PolicyOutput:
        normalized, model_ms = self._sample(item.inputs, self._noise(noise_seed), item.guidance)
        return self._finish(item, normalized[0], model_ms)

    def infer(self, obs: ObservationInput, noise_seed: int | None = None) -> PolicyOutput:
        return self._infer_prepared(self._prepare(obs), noise_seed)

    def batchable(self, obs: ObservationInput) -> bool:
        return obs.rtc is None  # see infer_batch: guided requests run alone

    def infer_batch(self, items: Sequence[BatchItem]) -> list[PolicyOutput | Exception]:
        """Several requests in one `sample_actions` call; each answer equals the one it would get alone.

        Per item: preprocessing, its own noise (drawn as a lone request with that seed draws it) and the output
        steps; only the model call is shared. Errors stay with their item. Requests with RTC guidance run alone:
        guidance has one soft mask and one clip for the whole batch (each request has its own delay and
        horizon), and its per-step VJP would make every unguided neighbour pay for autograd.
        """
        results: list[PolicyOutput | Exception | None] = [None] * len(items)
        batch: list[tuple[int, _Prepared, int | None]] = []
        for i, (obs, noise_seed) in enumerate(items):
            try:
                prepared = self._prepare(obs)
                if prepared.guidance is not None:
                    results[i] = self._infer_prepared(prepared, noise_seed)
                else:
                    batch.append((i, prepared, noise_seed))
            except Exception as exc:  # this request's own error; the others go on
                results[i] = exc
        if len(batch) == 1:
            i, prepared, noise_seed = batch[0]
            results[i] = self._run_alone(prepared, noise_seed)
        elif batch:
            self._run_together(batch, results)
        return [r if r is not None else PolicyError("request was not answered") for r in results]

    def _run_alone(self, item: _Prepared, noise_seed: int | None) -> PolicyOutput | Exception:
        try:
            return self._infer_prepared(item, noise_seed)
        except Exception as exc:
            return exc

    def _run_together(self, batch: list[tuple[int, _Prepared, int | None]],
                      results: list[PolicyOutput | Exception | None]) -> None:
        inputs = self.transform.collate([p.inputs for _, p, _ in batch])
        noise = torch.cat([self._noise(seed) for _, _, seed in batch])
        try:
            normalized, model_ms = self._sample(inputs, noise, None)
        except Exception as exc:
            # A model failure on the batch (non-finite output, out of memory) is retried item by item, so one
            # request cannot fail its neighbours.
            log.warning("batched model call of %d requests failed (%s); running them one by one", len(batch), exc)
            for i, prepared, seed in batch:
                results[i] = self._run_alone(prepared, seed)
            return
        for k, (i, prepared, _) in enumerate(batch):
            try:
                results[i] = self._finish(prepared, normalized[k], model_ms)
            except Exception as exc:
                results[i] = exc

    def _warmup(self) -> float:
        """One inference on a synthetic observation at the stats' centre, so the first real request is not slow."""
        norm = self.config.normalization
        spec = self.pipeline.to_spec().state
        center = (np.asarray(spec.q01) + np.asarray(spec.q99)) / 2 if spec.q01 and spec.q99 else \
            np.asarray(spec.mean if spec.mean else np.zeros(norm.state_dim))
        size = self.model.cfg.vision.image_size
        obs = ObservationInput(
            images={cam: np.zeros((size, size, 3), np.uint8) for cam in self.config.cameras},
            image_timestamps={}, state=center.astype(np.float32), prompt="warm up", timestamp=0.0,
            episode_index=0, step_index=0,
        )
        t0 = time.perf_counter()
        self.infer(obs, noise_seed=0)
        if self.execution.flow_capture != "none" or self.execution.compile_prefix:
            # Captured loops are made per batch size: make the batched ones now, not on a request.
            inputs = self._prepare(obs).inputs
            for batch in range(2, self.options.warmup_max_batch + 1):
                self._sample(self.transform.collate([inputs] * batch), torch.cat([self._noise(0)] * batch), None)
        return (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        """Free the model; safe to call again (the server closes its policy on stop, and so may its owner)."""
        if not hasattr(self, "model"):
            return
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
