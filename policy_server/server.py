"""Server bootstrap: gRPC (health, reflection, size limits, TLS, token auth) plus the optional websocket endpoint.

`PolicyServer` is used by the CLI and, unchanged, by the tests (which bind port 0 on loopback), so what is tested
is what runs.
"""

from __future__ import annotations

import logging
import socket
import ssl
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from policy_server.auth import BearerTokenInterceptor
from policy_server.batching import BatchingConfig
from policy_server.core import InferenceCore
from policy_server.grpc_service import PolicyServicer, add_policy_service
from policy_server.policy import Policy
from policy_server.websocket_server import OpenpiWebsocketEndpoint
from protos import policy_pb2 as pb
from protos.malloc_tuning import tune_malloc_for_large_messages

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    # When set, clients must present a certificate signed by this CA (mutual TLS).
    client_ca: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    websocket_port: int | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_response_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_workers: int = 16
    # Requests beyond this many in flight get RESOURCE_EXHAUSTED instead of queueing without bound.
    max_concurrent_rpcs: int = 64
    tls: TlsConfig | None = None
    token: str | None = None
    grace_s: float = 3.0
    # Name stamped on every response (which replica answered); default "<hostname>:<port>".
    replica_name: str | None = None
    # Dynamic batching of concurrent requests (None: each request runs alone, in arrival order).
    batching: BatchingConfig | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must be given explicitly (e.g. 127.0.0.1 for loopback only)")
        if self.max_request_bytes <= 0:
            raise ValueError("max_request_bytes must be > 0")


def grpc_channel_options(max_send_bytes: int, max_receive_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_send_bytes),
        ("grpc.max_receive_message_length", max_receive_bytes),
    ]


class PolicyServer:
    """Serve one policy. `start()` binds (port 0 picks a free port, see `.port`), `stop()` drains gracefully."""

    def __init__(self, policy: Policy, config: ServerConfig) -> None:
        self.config = config
        tune_malloc_for_large_messages()
        self.core = InferenceCore(policy, max_request_bytes=config.max_request_bytes, batching=config.batching)
        self.health = health.HealthServicer()
        self.port = 0
        self.websocket: OpenpiWebsocketEndpoint | None = None
        interceptors: list[grpc.ServerInterceptor] = [BearerTokenInterceptor(config.token)] if config.token else []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="grpc-infer"),
            interceptors=interceptors,
            options=grpc_channel_options(config.max_response_bytes, config.max_request_bytes),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        add_policy_service(PolicyServicer(self.core), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self._started = False

    def _bind(self) -> int:
        address = f"{self.config.host}:{self.config.port}"
        tls = self.config.tls
        try:
            if tls is None:
                port = self._server.add_insecure_port(address)
            else:
                creds = grpc.ssl_server_credentials(
                    [(tls.key.read_bytes(), tls.cert.read_bytes())],
                    root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                    require_client_auth=tls.client_ca is not None,
                )
                port = self._server.add_secure_port(address, creds)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot listen on {address}: {exc} (port in use? try --port)") from exc
        if port == 0:
            raise RuntimeError(f"cannot listen on {address} (port in use? try --port)")
        return port

    def _websocket_ssl(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.client_ca is not None:
            ctx.load_verify_locations(str(tls.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def start(self) -> PolicyServer:
        self.port = self._bind()
        self.core.replica = self.config.replica_name or f"{socket.gethostname()}:{self.port}"
        self._server.start()
        self._started = True
        if self.config.websocket_port is not None:
            self.websocket = OpenpiWebsocketEndpoint(
                self.core,
                self.config.host,
                self.config.websocket_port,
                token=self.config.token,
                ssl_context=self._websocket_ssl(),
            )
            self.websocket.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        spec = self.core.spec
        log.info(
            "serving %s policy '%s' on %s:%d (gRPC%s%s), horizon %d, %d state / %d action dims, cameras %s",
            spec.policy_type, spec.model_id, self.config.host, self.port,
            ", TLS" if self.config.tls else "", ", token auth" if self.config.token else "",
            spec.action_horizon, spec.state_dim, spec.action_dim, [c.name for c in spec.cameras],
        )
        if self.websocket is not None:
            log.info("openpi websocket endpoint on ws://%s:%d", self.config.host, self.websocket.port)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (True) or `timeout` passes (False)."""
        return bool(self._server.wait_for_termination(timeout))

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight requests finish for `grace` seconds, then close.

        Requests still queued for a batch shortly before the grace ends fail with UNAVAILABLE "server shut down
        before this request ran", early enough for that answer to reach the client before gRPC cancels the call.
        """
        grace = self.config.grace_s if grace is None else grace
        if not self._started:
            self.core.close()
            return
        self._started = False
        self.health.enter_graceful_shutdown()
        if self.websocket is not None:
            self.websocket.stop()
        stopped = self._server.stop(grace)  # no new calls from now on; in-flight ones get `grace` seconds
        self.core.close(drain_s=max(0.0, grace - min(0.25, grace / 2)))
        stopped.wait()
        if self.core.batcher is not None:
            stats = self.core.batcher.stats()
            log.info("batching: %d requests in %d batches (mean size %.2f), sizes %s, %d failed batches",
                     stats.items, stats.batches, stats.mean_batch, dict(sorted(stats.sizes.items())),
                     stats.failed_batches)
        self.core.policy.close()
        log.info("server stopped")

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(grace=0.5)
