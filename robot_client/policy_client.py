"""`GrpcPolicy`: the robot side of the wire, an `openpi_client.base_policy.BasePolicy`.

Drop-in for openpi's `WebsocketClientPolicy` (`infer(obs) -> {"actions": [H, D], ...}`), over typed gRPC, with:
- metadata fetched at connect (camera sizes, joint names, horizon) and used to fit images whose size differs with
  the method it names (`policy_norm.image_fit.fit_image`: resize_with_pad is openpi training's, pixel for pixel;
  resize_with_pad_torch is LeRobot's rounded to uint8, within half a level; with `resize_images=False` a Pi0.5
  server fits full frames itself, exactly);
- per-call deadlines, retries with exponential backoff on UNAVAILABLE (server restarting), and typed errors:
  `PolicyRequestError` (bad observation, names the field), `PolicyServerUnavailable`, `PolicyTimeout`;
- an optional persistent bidirectional stream for lower latency;
- the model checked on every chunk and after every reconnect: each response carries the server's model identity
  (weights, serving config and stats digests, server instance id), compared with the one read at connect; another
  model raises `ModelChangedError` naming both (unless `allow_model_swap`), before any of its actions is used; a
  restart of the same model (only the instance id changes) is logged and accepted;
- raw or JPEG image encoding (JPEG for slow links), optional TLS and bearer token.
It never hides a failure: callers (the chunk scheduler) decide to hold the arm when an exception comes out.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import numpy.typing as npt
from openpi_client import base_policy

from policy_norm.image_fit import fit_image, resize_method_from_metadata
from protos import policy_pb2 as pb
from protos import policy_pb2_grpc as pb_grpc
from protos.codec import WireError
from protos.dicts import message_to_dict, request_from_dict, response_to_dict
from protos.malloc_tuning import tune_malloc_for_large_messages
from robot_client.replicas import (
    ReplicaError,
    check_interchangeable,
    describe_identity,
    model_changes,
    parse_target,
)

log = logging.getLogger(__name__)
ERROR_FIELD_KEY = "x-error-field"
CallMetadata = tuple[tuple[str, str | bytes], ...]


class PolicyClientError(RuntimeError):
    """Base class of the errors GrpcPolicy raises."""


class PolicyRequestError(PolicyClientError, ValueError):
    """The server (or the client-side conversion) refused the observation; `field` names what is wrong."""

    def __init__(self, field: str, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class PolicyServerUnavailable(PolicyClientError):
    """No server answered within the retry budget (down, restarting, or unreachable)."""


class PolicyTimeout(PolicyClientError):
    """The server did not answer within the deadline."""


class PolicyServerError(PolicyClientError):
    """The server failed while answering a valid request (INTERNAL, UNAUTHENTICATED, RESOURCE_EXHAUSTED...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ModelChangedError(PolicyClientError):
    """The server answered with another model than the one the run started with (a server restarted with another
    checkpoint, config or stats). Names the fields that changed and both identities in full."""

    def __init__(self, old: pb.ModelIdentity, new: pb.ModelIdentity, changed: list[str]) -> None:
        super().__init__(
            f"the policy server now serves another model ({', '.join(changed)} changed): weight_hash "
            f"{old.weight_hash or '-'} -> {new.weight_hash or '-'}; was [{describe_identity(old)}], now "
            f"[{describe_identity(new)}]. Its actions are not used; restart the run against the intended model, or "
            "pass --allow-model-swap to accept a swap"
        )
        self.old = old
        self.new = new
        self.changed = tuple(changed)


@dataclass(frozen=True)
class GrpcPolicyConfig:
    target: str = "127.0.0.1:50051"
    # Deadline of one inference call (seconds). A late chunk is a useless chunk; keep this tight.
    timeout_s: float = 2.0
    connect_timeout_s: float = 10.0
    image_encoding: str = "raw"  # "raw" | "jpeg" | "png"
    jpeg_quality: int = 90
    # Resize images whose size differs from the metadata's, with the method the metadata names.
    resize_images: bool = True
    streaming: bool = False
    max_message_bytes: int = 32 * 1024 * 1024
    retries: int = 3
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    token: str | None = None
    tls_root_cert: Path | None = None
    tls_server_name: str | None = None
    # Accept a response from another model than the one at connect (logged, and adopted as the new reference)
    # instead of raising ModelChangedError. The metadata read at connect (cameras, names, horizon) stays in use:
    # a swap is for a model that takes the same observations.
    allow_model_swap: bool = False


def _status_error(exc: grpc.RpcError) -> PolicyClientError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    field = ""
    if hasattr(exc, "trailing_metadata"):
        # Metadata items are (key, value) pairs at runtime; the stubs describe them as objects.
        for key, value in cast(Any, exc.trailing_metadata() or ()):
            if key == ERROR_FIELD_KEY:
                field = str(value)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return PolicyRequestError(field, details or "invalid observation")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PolicyTimeout(details or "deadline exceeded")
    if code == grpc.StatusCode.UNAVAILABLE:
        return PolicyServerUnavailable(details or "server unavailable")
    return PolicyServerError(code.name if code else "UNKNOWN", details or "")


class _Stream:
    """One persistent InferStream call.

    Responses are read on the caller's thread (no extra thread hop on the hot path); a watchdog thread that
    polls every WATCHDOG_PERIOD_S cancels the call when a response is later than its deadline, which turns into
    PolicyTimeout (deadline precision is therefore about 10 ms).
    """

    WATCHDOG_PERIOD_S = 0.01

    def __init__(self, stub: pb_grpc.PolicyServiceStub, metadata: CallMetadata) -> None:
        self._requests: queue.Queue[pb.InferRequest | None] = queue.Queue()
        self._call = stub.InferStream(iter(self._requests.get, None), metadata=metadata)
        self._deadline: float | None = None
        self._timed_out = False
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="policy-stream-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._closed.wait(self.WATCHDOG_PERIOD_S):
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                self._timed_out = True
                self._call.cancel()
                return

    def request(self, request: pb.InferRequest, timeout_s: float) -> pb.StreamInferResponse:
        self._deadline = time.monotonic() + timeout_s
        self._requests.put(request)
        try:
            while True:
                try:
                    item: pb.StreamInferResponse = next(self._call)
                except StopIteration:
                    raise PolicyServerUnavailable("stream closed by the server") from None
                except grpc.RpcError as exc:
                    if self._timed_out:
                        raise PolicyTimeout(f"no stream response within {timeout_s:.3f} s") from None
                    raise _status_error(exc) from None
                if item.request_id == request.request_id:
                    return item
                log.warning("dropping stale stream response %d (waiting for %d)", item.request_id,
                            request.request_id)
        finally:
            self._deadline = None

    def close(self) -> None:
        self._closed.set()
        self._requests.put(None)
        self._call.cancel()


class GrpcPolicy(base_policy.BasePolicy):  # type: ignore[misc]  # openpi_client ships no type information
    """openpi-compatible policy client over gRPC. Thread-safe for one caller at a time (use one per thread)."""

    def __init__(self, config: GrpcPolicyConfig | None = None, **overrides: Any) -> None:
        base = config or GrpcPolicyConfig()
        self.config = GrpcPolicyConfig(**{**base.__dict__, **overrides}) if overrides else base
        if self.config.image_encoding not in ("raw", "jpeg", "png"):
            raise ValueError(f"image_encoding must be raw, jpeg or png, got '{self.config.image_encoding}'")
        tune_malloc_for_large_messages()
        self._ids = itertools.count(1)
        self._call_metadata: CallMetadata = (
            (("authorization", f"Bearer {self.config.token}"),) if self.config.token else ()
        )
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        try:
            self._replicas = parse_target(self.config.target)
        except ReplicaError as exc:
            raise PolicyRequestError("target", str(exc)) from None
        if len(self._replicas.addresses) > 1:
            self._check_replicas()
        self._channel = self._open_channel(self._replicas.channel_target, self._replicas.service_config())
        self._stub = pb_grpc.PolicyServiceStub(self._channel)
        self._metadata = self._fetch_metadata(self.config.connect_timeout_s)
        # The model every response must come from, and the server instances seen serving it.
        self._identity = pb.ModelIdentity()
        self._identity.CopyFrom(self._metadata.identity)
        self._instances = {self._identity.server_instance_id}
        # Set when a call lost the server: the next call first re-reads the metadata and checks the model.
        self._reconnecting = False

    # -- connection -------------------------------------------------------------------------------------------
    def _check_replicas(self) -> None:
        """Ask every listed replica for its metadata (each on its own channel) and refuse a set that would serve
        different policies; a replica that does not answer is left to the balancer's health checks."""
        answers: list[tuple[str, pb.PolicyMetadata]] = []
        for address in self._replicas.addresses:
            channel = self._open_channel(address, None)
            try:
                stub = pb_grpc.PolicyServiceStub(channel)
                md = stub.GetMetadata(pb.GetMetadataRequest(), timeout=self.config.connect_timeout_s,
                                      metadata=self._call_metadata, wait_for_ready=True)
                answers.append((address, md))
            except grpc.RpcError as exc:
                log.warning("replica %s did not answer the metadata check (%s); the balancer skips it while it is "
                            "unhealthy", address, _status_error(exc))
            finally:
                channel.close()
        if not answers:
            raise PolicyServerUnavailable(f"none of the replicas {list(self._replicas.addresses)} answered")
        try:
            check_interchangeable(answers)
        except ReplicaError as exc:
            raise PolicyRequestError("target", str(exc)) from None
        log.info("%d of %d replicas answered with the same policy; calls are spread round robin",
                 len(answers), len(self._replicas.addresses))

    def _open_channel(self, target: str, service_config: str | None) -> grpc.Channel:
        cfg = self.config
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            # Reconnect fast after a server restart: a robot waiting on a policy must not wait for 20 s backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
        ]
        if service_config is not None:
            options.append(("grpc.service_config", service_config))
        if cfg.tls_root_cert is None:
            return grpc.insecure_channel(target, options=options)
        if cfg.tls_server_name:
            options.append(("grpc.ssl_target_name_override", cfg.tls_server_name))
        creds = grpc.ssl_channel_credentials(root_certificates=cfg.tls_root_cert.read_bytes())
        return grpc.secure_channel(target, creds, options=options)

    def _fetch_metadata(self, timeout_s: float) -> pb.PolicyMetadata:
        """Wait (up to timeout_s) for the server to come up, then read its metadata."""
        try:
            metadata: pb.PolicyMetadata = self._stub.GetMetadata(
                pb.GetMetadataRequest(), timeout=timeout_s, metadata=self._call_metadata, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            err = _status_error(exc)
            if isinstance(err, PolicyTimeout | PolicyServerUnavailable):
                raise PolicyServerUnavailable(
                    f"no policy server answered at {self.config.target} within {timeout_s:.1f} s ({err})"
                ) from None
            raise err from None
        return metadata

    def get_server_metadata(self) -> dict[str, Any]:
        """Metadata as a plain dict (openpi's WebsocketClientPolicy API)."""
        return message_to_dict(self._metadata)

    @property
    def metadata(self) -> pb.PolicyMetadata:
        return self._metadata

    @property
    def identity(self) -> pb.ModelIdentity:
        """The model responses are checked against (the one at connect, or the last accepted swap)."""
        return self._identity

    def check_identity(self, identity: pb.ModelIdentity) -> None:
        """Raise ModelChangedError when `identity` names another model than the reference (unless swaps are
        allowed: then it becomes the reference); a new server instance of the same model is logged once."""
        changed = model_changes(self._identity, identity)
        if changed:
            error = ModelChangedError(self._identity, identity, changed)
            if not self.config.allow_model_swap:
                raise error
            log.warning("%s; continuing with the new model (model swaps allowed)", error)
            self._identity = pb.ModelIdentity()
            self._identity.CopyFrom(identity)
            self._instances = {identity.server_instance_id}
            return
        if identity.server_instance_id not in self._instances:
            self._instances.add(identity.server_instance_id)
            log.info("policy server instance %s serves the same model (weight_hash %s); continuing",
                     identity.server_instance_id or "-", identity.weight_hash or "-")

    def _check_reconnected_server(self) -> None:
        """After the server was lost: re-read its metadata and check its model before the next request."""
        try:
            metadata: pb.PolicyMetadata = self._stub.GetMetadata(
                pb.GetMetadataRequest(), timeout=self.config.timeout_s, metadata=self._call_metadata
            )
        except grpc.RpcError as exc:
            raise _status_error(exc) from None
        self.check_identity(metadata.identity)

    # -- inference --------------------------------------------------------------------------------------------
    def prepare_image(self, name: str, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Fit one camera's frame to the size the metadata announces, with the method it names (openpi training
        parity for resize_with_pad, LeRobot's within half a uint8 level for resize_with_pad_torch); a camera the
        metadata does not list is sent as it is."""
        target = next(((c.height, c.width) for c in self._metadata.cameras if c.name == name), None)
        if target is None:
            return rgb
        method = resize_method_from_metadata(self._metadata.preprocessing.image_resize)
        try:
            return fit_image(rgb, target[0], target[1], method)
        except ValueError as exc:
            raise WireError(f"images[{name}]", str(exc)) from None

    def build_request(self, obs: Mapping[str, Any]) -> pb.InferRequest:
        try:
            return request_from_dict(
                obs,
                image_encoding=self.config.image_encoding,
                jpeg_quality=self.config.jpeg_quality,
                request_id=next(self._ids),
                prepare_image=self.prepare_image if self.config.resize_images else None,
            )
        except WireError as exc:
            raise PolicyRequestError(exc.field, str(exc)) from None

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Send one observation; return {"actions": float32 [H, D], timings, norm_report, warnings, model_identity}
        (ModelChangedError when another model answered)."""
        t0 = time.perf_counter()
        request = self.build_request(obs)
        t_built = time.perf_counter()
        response = self.infer_request(request)
        result = response_to_dict(response)
        t_done = time.perf_counter()
        result["client_timing"] = {
            "encode_ms": (t_built - t0) * 1e3,
            "round_trip_ms": (t_done - t_built) * 1e3,
            "total_ms": (t_done - t0) * 1e3,
        }
        result["model_identity"] = message_to_dict(response.identity)
        for warning in result["warnings"]:
            log.warning("server warning %s at %s: %s", warning["code"], warning["field"], warning["message"])
        return result

    def infer_request(self, request: pb.InferRequest) -> pb.InferResponse:
        """Send a prebuilt request with deadline and retries; typed errors on failure. The response's model is
        checked before it is returned (ModelChangedError), and after a lost server also the metadata's."""
        with self._lock:
            delay = self.config.backoff_initial_s
            for attempt in range(self.config.retries + 1):
                try:
                    if self._reconnecting:
                        self._check_reconnected_server()
                        self._reconnecting = False
                    response: pb.InferResponse
                    if self.config.streaming:
                        response = self._infer_stream(request)
                    else:
                        response = self._stub.Infer(request, timeout=self.config.timeout_s,
                                                    metadata=self._call_metadata)
                    self.check_identity(response.identity)
                    return response
                except ModelChangedError:
                    raise
                except grpc.RpcError as exc:
                    err = _status_error(exc)
                except PolicyClientError as exc:
                    err = exc
                if not isinstance(err, PolicyRequestError):  # the server may be another one when it answers again
                    self._reconnecting = True
                if not isinstance(err, PolicyServerUnavailable) or attempt == self.config.retries:
                    raise err
                log.warning("policy server unavailable (%s); retry %d/%d in %.2f s",
                            err, attempt + 1, self.config.retries, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
            raise AssertionError("unreachable")

    def _infer_stream(self, request: pb.InferRequest) -> pb.InferResponse:
        if self._stream is None:
            self._stream = _Stream(self._stub, self._call_metadata)
        try:
            reply = self._stream.request(request, self.config.timeout_s)
        except PolicyClientError:
            self._stream.close()
            self._stream = None
            raise
        if reply.HasField("error"):
            err = reply.error
            if err.code == "INVALID_ARGUMENT":
                raise PolicyRequestError(err.field, err.message)
            raise PolicyServerError(err.code, err.message)
        return reply.response

    def reset(self) -> None:
        self.reset_episode(0)

    def reset_episode(self, episode_index: int) -> None:
        try:
            self._stub.Reset(pb.ResetRequest(episode_index=episode_index),
                             timeout=self.config.timeout_s, metadata=self._call_metadata)
        except grpc.RpcError as exc:
            raise _status_error(exc) from None

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        self._channel.close()

    def __enter__(self) -> GrpcPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
