"""Optional bearer-token authentication for the gRPC server.

Clients send `authorization: Bearer <token>` metadata. The token is compared in constant time. Health checks
stay open so load balancers and orchestrators can probe without the secret. Tokens are read from a file or the
environment, never from the command line (where `ps` would show them), and registered with
`policy_server.log_redaction` so no log line shows them either.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from policy_server.log_redaction import register_secret

TOKEN_ENV = "POLICY_SERVER_TOKEN"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
DENIED = "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'"


def load_token(token_file: Path | None) -> str | None:
    """Token from `token_file` if given, else from $POLICY_SERVER_TOKEN, else None (auth off)."""
    if token_file is not None:
        token = token_file.read_text().strip()
        if not token:
            raise ValueError(f"token file {token_file} is empty")
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    register_secret(token)
    return token


def token_matches(header_value: str | None, token: str) -> bool:
    """True if an authorization header value carries `token` ("Bearer <t>" or openpi's "Api-Key <t>")."""
    if not header_value:
        return False
    scheme, _, value = header_value.partition(" ")
    if scheme.lower() not in ("bearer", "api-key"):
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


async def _deny_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)


async def _deny_stream(request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The `authorization` header value of a call's metadata, if it sent one as text."""
    header = dict(metadata or ()).get("authorization")
    return header if isinstance(header, str) else None


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call but health checks unless it carries the token (asyncio server).

    The check runs on the event loop before the call reaches a servicer, so an unauthenticated client never
    holds a stream slot or queues work for the model."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        if token_matches(bearer_token(handler_call_details.invocation_metadata), self._token):
            return handler
        # The denying handler must have the same streaming shape as the real one.
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny_stream)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny_stream)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny_unary)
        return grpc.unary_unary_rpc_method_handler(_deny_unary)
