"""Server bootstrap: gRPC (health, reflection, size limits, TLS, token auth) plus the optional websocket endpoint.

`PolicyServer` is used by the CLI and, unchanged, by the tests (which bind port 0 on loopback), so what is tested
is what runs. The gRPC server is grpc's asyncio server, run on an event loop in a background thread: each robot
holds one stream for its whole session, and with a thread per call a few dozen idle streams used to take every
thread while health checks and new clients waited. Now an idle stream costs no thread; the model runs on its own
small executor, and admission limits (`policy_server.admission`) refuse what the server should not take on.
`PolicyServer` itself stays synchronous (start / stop / context manager), so its callers need no event loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Coroutine
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from policy_server.admission import Admission, AdmissionLimits
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
T = TypeVar("T")


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
    # Threads that run the model (validation, inference, reset); not a bound on connections or streams, which
    # hold no thread. With batching on, at least `batching.max_batch` are used, so a full batch can gather.
    max_workers: int = 8
    # Beyond these the new stream / unary call gets RESOURCE_EXHAUSTED naming the limit (see admission.py).
    max_streams: int = AdmissionLimits.max_streams
    max_streams_per_client: int = AdmissionLimits.max_streams_per_client
    max_queued_infers: int = AdmissionLimits.max_queued_infers
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
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers}")
        self.limits()  # validates the admission limits

    def limits(self) -> AdmissionLimits:
        return AdmissionLimits(max_streams=self.max_streams, max_streams_per_client=self.max_streams_per_client,
                               max_queued_infers=self.max_queued_infers)

    def model_workers(self) -> int:
        return max(self.max_workers, self.batching.max_batch if self.batching is not None else 1)


def grpc_channel_options(max_send_bytes: int, max_receive_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_send_bytes),
        ("grpc.max_receive_message_length", max_receive_bytes),
    ]


class EventLoopThread:
    """An asyncio event loop running on its own daemon thread, driven from synchronous code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result (never call this from the loop thread itself)."""
        return self.submit(coro).result(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running()

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


class HealthStatus:
    """Synchronous handle on the asyncio health servicer: its `set` and `enter_graceful_shutdown` are
    coroutines that must run on the server's loop (watchers wait on loop-bound conditions)."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self._loop: EventLoopThread | None = None

    def attach(self, loop: EventLoopThread | None) -> None:
        self._loop = loop

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._loop
        if loop is not None and loop.alive():
            loop.run(coro, timeout=10.0)
        else:  # no loop (not started or stopped): no watcher can be waiting, the status is plain data
            asyncio.run(coro)

    def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        self._call(self.servicer.set(service, status))

    def enter_graceful_shutdown(self) -> None:
        self._call(self.servicer.enter_graceful_shutdown())


class PolicyServer:
    """Serve one policy. `start()` binds (port 0 picks a free port, see `.port`), `stop()` drains gracefully."""

    def __init__(self, policy: Policy, config: ServerConfig) -> None:
        self.config = config
        tune_malloc_for_large_messages()
        self.core = InferenceCore(policy, max_request_bytes=config.max_request_bytes, batching=config.batching)
        self.health = HealthStatus()
        self.admission = Admission(config.limits())
        self.port = 0
        self.websocket: OpenpiWebsocketEndpoint | None = None
        self._executor = futures.ThreadPoolExecutor(max_workers=config.model_workers(), thread_name_prefix="model")
        self._loop: EventLoopThread | None = None
        self._server: grpc.aio.Server | None = None
        self._stopped = threading.Event()
        self._started = False

    async def _build_and_bind(self) -> int:
        """Create the asyncio server on the loop (it binds to the running loop) and bind its port."""
        config = self.config
        interceptors = [BearerTokenInterceptor(config.token)] if config.token else []
        server = grpc.aio.server(
            interceptors=interceptors,
            options=grpc_channel_options(config.max_response_bytes, config.max_request_bytes),
        )
        self._server = server
        servicer = PolicyServicer(self.core, self._executor, self.admission, token_auth=config.token is not None)
        add_policy_service(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        port = self._bind(server)
        await server.start()
        return port

    def _bind(self, server: grpc.aio.Server) -> int:
        address = f"{self.config.host}:{self.config.port}"
        tls = self.config.tls
        try:
            if tls is None:
                port = server.add_insecure_port(address)
            else:
                creds = grpc.ssl_server_credentials(
                    [(tls.key.read_bytes(), tls.cert.read_bytes())],
                    root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                    require_client_auth=tls.client_ca is not None,
                )
                port = server.add_secure_port(address, creds)
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
        loop = EventLoopThread("grpc-asyncio")
        try:
            self.port = loop.run(self._build_and_bind(), timeout=30.0)
        except BaseException:
            loop.close()
            raise
        self._loop = loop
        self.health.attach(loop)
        self.core.replica = self.config.replica_name or f"{socket.gethostname()}:{self.port}"
        self._started = True
        self._stopped.clear()
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
        return self._stopped.wait(timeout)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight requests finish for `grace` seconds, then close.

        Requests still queued for a batch shortly before the grace ends fail with UNAVAILABLE "server shut down
        before this request ran", early enough for that answer to reach the client before gRPC cancels the call.
        """
        grace = self.config.grace_s if grace is None else grace
        if not self._started:
            self.core.close()
            self._executor.shutdown(wait=False, cancel_futures=True)
            return
        self._started = False
        self.health.enter_graceful_shutdown()
        if self.websocket is not None:
            self.websocket.stop()
        loop, server = self._loop, self._server
        assert loop is not None and server is not None
        stopped = loop.submit(server.stop(grace))  # no new calls from now on; in-flight ones get `grace` seconds
        self.core.close(drain_s=max(0.0, grace - min(0.25, grace / 2)))
        stopped.result()
        # Model calls still running past the grace finish on their threads; nothing new is queued.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.health.attach(None)
        loop.close()
        self._stopped.set()
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
