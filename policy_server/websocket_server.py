"""openpi-compatible websocket endpoint, so a stock `openpi_client.WebsocketClientPolicy` works unchanged.

Protocol (openpi's): on connect the server sends the metadata as one msgpack-numpy binary frame; then each
binary frame from the client is an observation dict and is answered with a dict holding `actions` plus
`server_timing` / `policy_timing` (openpi's keys, unchanged) and `model_identity` (the model that produced the
chunk, as gRPC's InferResponse.identity). `GET /healthz` answers 200 "OK".

Where we differ, on purpose:
- Observations go through the same validation as gRPC (`protos.dicts` + `policy_server.validate`).
- A bad observation is answered with a text frame "INVALID_ARGUMENT: <field>: <what was expected>" and the
  connection stays open (openpi sends a traceback and closes with 1011). The stock client raises it as
  RuntimeError("Error in inference server: ...") and can keep using the connection.
- Inference runs on a worker thread, never on the event loop, so pings and other clients are not stalled.
- Optional token check on the `Authorization` header ("Bearer <t>" or openpi's "Api-Key <t>").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import logging
import ssl
import threading
import time
from typing import Any

import msgpack
from openpi_client import msgpack_numpy
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from policy_server.auth import token_matches
from policy_server.core import InferenceCore
from policy_server.grpc_service import classify
from protos import policy_pb2 as pb
from protos.codec import WireError
from protos.dicts import message_to_dict, request_from_dict, response_to_dict

log = logging.getLogger(__name__)
# Response key holding the model identity (weights, config and stats digests, server instance id).
IDENTITY_KEY = "model_identity"


def metadata_dict(core: InferenceCore) -> dict[str, Any]:
    """Metadata frame sent on connect: our PolicyMetadata as plain types (openpi sends a free-form dict)."""
    return message_to_dict(core.metadata)


def decode_frame(frame: bytes) -> Any:
    """msgpack-numpy decode that turns every decoding failure into a WireError (never a crash)."""
    try:
        return msgpack_numpy.unpackb(frame)
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as exc:
        raise WireError("message", f"not a valid msgpack-numpy observation ({type(exc).__name__}: {exc})") from None


def request_from_frame(frame: bytes) -> pb.InferRequest:
    """One binary frame -> InferRequest. Everything here reads the client's bytes, so every failure is invalid
    input: `protos.dicts` names the field for the conversions it checks, and any other conversion error on
    hostile input is still answered INVALID_ARGUMENT (naming the message), never INTERNAL."""
    observation = decode_frame(frame)
    try:
        return request_from_dict(observation)
    except WireError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise WireError("message", f"observation could not be converted ({type(exc).__name__}: {exc})") from None


class OpenpiWebsocketEndpoint:
    """Serves InferenceCore over openpi's websocket protocol on its own thread and event loop."""

    def __init__(
        self,
        core: InferenceCore,
        host: str,
        port: int,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        workers: int = 4,
    ) -> None:
        self.core = core
        self.host = host
        self.requested_port = port
        self.port = 0
        self.token = token
        self.ssl_context = ssl_context
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ws-infer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._metadata_frame = msgpack_numpy.packb(metadata_dict(core))

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="openpi-websocket", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._startup_error is not None:
            raise RuntimeError(
                f"websocket endpoint could not listen on {self.host}:{self.requested_port}: {self._startup_error}"
            ) from self._startup_error
        if not self._ready.is_set():
            raise RuntimeError("websocket endpoint did not start within 30 s")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # report bind errors to start()
            self._startup_error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        async with serve(
            self._handle,
            self.host,
            self.requested_port,
            process_request=self._process_request,
            max_size=self.core.max_request_bytes,
            compression=None,
            ssl=self.ssl_context,
        ) as server:
            self._server = server
            sockets = list(server.sockets)
            self.port = int(sockets[0].getsockname()[1]) if sockets else self.requested_port
            self._ready.set()
            await server.wait_closed()

    def stop(self) -> None:
        if self._loop is not None and self._server is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- protocol -------------------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.token is not None and not token_matches(request.headers.get("Authorization"), self.token):
            return connection.respond(
                http.HTTPStatus.UNAUTHORIZED, "missing or wrong token: send 'Authorization: Bearer <token>'\n"
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        log.info("websocket client connected: %s", peer)
        loop = asyncio.get_running_loop()
        prev_total_ms: float | None = None
        try:
            await ws.send(self._metadata_frame)
            async for frame in ws:
                t0 = time.perf_counter()
                if isinstance(frame, str):
                    await ws.send("INVALID_ARGUMENT: message: expected a binary msgpack-numpy frame, got text")
                    continue
                try:
                    request = request_from_frame(frame)
                    response = await loop.run_in_executor(self._executor, self.core.infer, request)
                except Exception as exc:
                    code, _field, message = classify(exc)
                    if code.name == "INTERNAL":
                        log.error("websocket inference failed: %s", message)
                    await ws.send(f"{code.name}: {message}")
                    continue
                out = response_to_dict(response)
                out[IDENTITY_KEY] = message_to_dict(response.identity)
                infer_ms = (time.perf_counter() - t0) * 1e3
                out["server_timing"]["infer_ms"] = infer_ms
                if prev_total_ms is not None:
                    out["server_timing"]["prev_total_ms"] = prev_total_ms
                await ws.send(msgpack_numpy.packb(out))
                prev_total_ms = (time.perf_counter() - t0) * 1e3
        except ConnectionClosed:
            pass
        finally:
            log.info("websocket client disconnected: %s", peer)

