"""Optional bearer-token authentication for the gRPC server.

Clients send `authorization: Bearer <token>` metadata. The token is compared in constant time. Health checks
stay open so load balancers and orchestrators can probe without the secret. Tokens are read from a file or the
environment, never from the command line (where `ps` would show them).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

TOKEN_ENV = "POLICY_SERVER_TOKEN"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
DENIED = "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'"


def load_token(token_file: Path | None) -> str | None:
    """Token from `token_file` if given, else from $POLICY_SERVER_TOKEN, else None (auth off)."""
    if token_file is not None:
        token = token_file.read_text().strip()
        if not token:
            raise ValueError(f"token file {token_file} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def token_matches(header_value: str | None, token: str) -> bool:
    """True if an authorization header value carries `token` ("Bearer <t>" or openpi's "Api-Key <t>")."""
    if not header_value:
        return False
    scheme, _, value = header_value.partition(" ")
    if scheme.lower() not in ("bearer", "api-key"):
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def _deny_unary(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)


def _deny_stream(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = metadata.get("authorization")
        if token_matches(header if isinstance(header, str) else None, self._token):
            return handler
        # The denying handler must have the same streaming shape as the real one.
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny_stream)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny_stream)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny_unary)
        return grpc.unary_unary_rpc_method_handler(_deny_unary)
