"""Transport-independent request handling: validate -> policy (alone or in a batch) -> checked response.

The gRPC servicer and the openpi-compatible websocket endpoint both call `InferenceCore.infer`, so a request
is validated, timed and checked the same way whichever wire it came over. With batching on, validated requests
go through a `Batcher` that runs several in one `policy.infer_batch` call; each still gets its own response.

Every response (and the metadata) carries the model's identity (`pb.ModelIdentity`: weights, serving config and
stats digests from the policy, plus a random id of this server instance), so a client notices a server restarted
with another model between two chunks.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np

from policy_norm.finite import first_non_finite
from policy_server import __version__
from policy_server.batching import Batcher, BatchingConfig
from policy_server.policy import BatchItem, Policy, PolicyError, PolicyOutput
from policy_server.validate import validate_request
from protos import policy_pb2 as pb
from protos.codec import numpy_to_tensor

log = logging.getLogger(__name__)


@dataclass
class CoreCounters:
    requests: int = 0
    invalid: int = 0
    failed: int = 0


class InferenceCore:
    def __init__(self, policy: Policy, *, max_request_bytes: int, batching: BatchingConfig | None = None) -> None:
        self.policy = policy
        self.spec = policy.spec
        self.max_request_bytes = max_request_bytes
        self.metadata = self.spec.to_proto(server_version=__version__, max_request_bytes=max_request_bytes)
        facts = policy.identity()
        # Drawn once per server: a restart with the same model changes only this.
        self.identity = pb.ModelIdentity(
            weight_hash=facts.weight_hash,
            policy_config_digest=facts.policy_config_digest,
            norm_stats_digest=facts.norm_stats_digest,
            server_instance_id=secrets.token_hex(8),
        )
        self.metadata.identity.CopyFrom(self.identity)
        self.counters = CoreCounters()
        # Name of this server replica, stamped on every response (set by the server once it has bound).
        self.replica = ""
        self._counter_lock = threading.Lock()
        self._policy_lock: AbstractContextManager[object] = (
            nullcontext() if policy.concurrent_safe else threading.Lock()
        )
        self.batcher: Batcher | None = None
        if batching is not None:
            if not policy.supports_batching:
                log.warning("policy '%s' has no batched path: batching only queues its requests one by one",
                            self.spec.policy_type)
            self.batcher = Batcher(self._run_batch, batching)

    def _count(self, name: str) -> None:
        with self._counter_lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)

    def infer(self, request: pb.InferRequest) -> pb.InferResponse:
        """Answer one request. Raises protos.codec.WireError (bad input) or PolicyError (policy failure)."""
        self._count("requests")
        receive_unix = time.time()
        t0 = time.perf_counter()
        try:
            obs = validate_request(request, self.spec)
            self.policy.check(obs)
        except Exception:
            self._count("invalid")
            raise
        t_valid = time.perf_counter()
        noise_seed = request.noise_seed if request.HasField("noise_seed") else None
        try:
            if self.batcher is not None and self.policy.batchable(obs):
                out = self.batcher.submit(obs, noise_seed)
            else:
                with self._policy_lock:
                    out = self.policy.infer(obs, noise_seed=noise_seed)
            self._check_actions(out.actions)
        except Exception:
            self._count("failed")
            raise
        t_done = time.perf_counter()
        timing = pb.ServerTiming(
            validate_ms=(t_valid - t0) * 1e3,
            preprocess_ms=out.preprocess_ms,
            model_ms=out.model_ms,
            postprocess_ms=out.postprocess_ms,
            total_ms=(t_done - t0) * 1e3,
            server_receive_unix=receive_unix,
        )
        return pb.InferResponse(
            actions=numpy_to_tensor(out.actions),
            observation_timestamp=obs.timestamp,
            episode_index=obs.episode_index,
            step_index=obs.step_index,
            request_id=request.request_id,
            timing=timing,
            norm_report=out.norm_report,
            warnings=[pb.Warning(code=w.code, field=w.field, message=w.message) for w in out.warnings],
            replica=self.replica,
            identity=self.identity,
        )

    def _check_actions(self, actions: np.ndarray) -> None:
        """Never let a malformed chunk leave the server: shape, dtype and finiteness are asserted here."""
        expected = (self.spec.action_horizon, self.spec.action_dim)
        if actions.shape != expected or actions.dtype != np.float32:
            raise PolicyError(
                f"policy '{self.spec.policy_type}' returned actions {actions.dtype} {list(actions.shape)}, "
                f"expected float32 {list(expected)}"
            )
        bad = first_non_finite(actions)
        if bad is not None:
            raise PolicyError(
                f"policy '{self.spec.policy_type}' produced a non-finite action at step {bad.row}, "
                f"dim {bad.dim} ({self.spec.action_names[bad.dim]}); {bad.count} non-finite values in the chunk"
            )

    def _run_batch(self, items: Sequence[BatchItem]) -> list[PolicyOutput | Exception]:
        # Same lock as the lone path: requests the policy keeps out of batches (RTC) and resets interleave safely.
        with self._policy_lock:
            return self.policy.infer_batch(items)

    def reset(self, episode_index: int) -> None:
        with self._policy_lock:
            self.policy.reset(episode_index)

    def close(self, drain_s: float = 0.0) -> None:
        """Stop batching: queued requests run for up to `drain_s`, the rest fail with a shutdown error."""
        if self.batcher is not None:
            self.batcher.close(drain_s)
