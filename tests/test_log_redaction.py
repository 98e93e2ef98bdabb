"""No log line shows a bearer token, at any level; binding beyond loopback warns about what it exposes."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from policy_server.auth import load_token
from policy_server.cli import bind_warnings
from policy_server.log_redaction import REDACTED, RedactingFilter, install_redaction, redact
from tests.wire_helpers import running_server

SECRET = "s3cr3t-Tok3n-9f2c41"
WRONG = "wrong-guess-77aa19"


@pytest.fixture()
def debug_log() -> Iterator[io.StringIO]:
    """Every record at DEBUG, from every logger, into a buffer through a root handler (as `serve` logs)."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for h in root.handlers:  # leave pytest's own handlers as they were
            for f in [f for f in h.filters if isinstance(f, RedactingFilter)]:
                h.removeFilter(f)


def test_websocket_handshake_at_debug_never_logs_the_token(tmp_path: Path, debug_log: io.StringIO,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    token = load_token(token_file)
    assert token == SECRET
    install_redaction()
    caplog.set_level(logging.DEBUG)
    with running_server(websocket_port=0, token=token) as srv:
        assert srv.websocket is not None
        url = f"ws://127.0.0.1:{srv.websocket.port}"
        with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            assert isinstance(ws.recv(), bytes)  # the metadata frame: the token was accepted
        with pytest.raises(InvalidStatus, match="401"), \
                connect(url, additional_headers={"Authorization": f"Api-Key {WRONG}"}):
            pass
        logging.getLogger("policy_server.test").debug("metadata %s", [("authorization", f"Bearer {token}")])
    text = debug_log.getvalue()
    assert "Authorization: Bearer " + REDACTED in text  # the handshake header was logged, its value was not
    assert SECRET not in text and WRONG not in text
    assert SECRET not in caplog.text and WRONG not in caplog.text


def test_redact_covers_header_forms_and_registered_secrets() -> None:
    assert redact("< Authorization: Bearer abc.def-ghi") == f"< Authorization: Bearer {REDACTED}"
    assert redact("[('authorization', 'Bearer xyz')]") == f"[('authorization', 'Bearer {REDACTED}')]"
    assert redact("authorization=plain") == f"authorization={REDACTED}"
    # Help texts keep their placeholders.
    hint = "send metadata 'authorization: Bearer <token>'"
    assert redact(hint) == hint


def test_a_record_that_cannot_be_formatted_is_still_redacted(debug_log: io.StringIO) -> None:
    install_redaction()
    logging.getLogger("policy_server.test").warning("bad format %d", f"Bearer {SECRET}")
    assert SECRET not in debug_log.getvalue()


@pytest.mark.parametrize(
    ("host", "tls", "token", "expected"),
    [
        ("127.0.0.1", False, False, []),
        ("127.0.1.1", False, False, []),
        ("::1", False, False, []),
        ("localhost", False, False, []),
        ("0.0.0.0", False, False, ["without TLS", "without a token"]),
        ("0.0.0.0", True, False, ["without a token"]),
        ("192.168.1.5", False, True, ["without TLS"]),
        ("::", True, True, []),
    ],
)
def test_bind_warnings_name_each_missing_protection(host: str, tls: bool, token: bool,
                                                    expected: list[str]) -> None:
    warnings = bind_warnings(host, tls=tls, token=token)
    assert len(warnings) == len(expected)
    for warning, phrase in zip(warnings, expected, strict=True):
        assert phrase in warning and host in warning
    assert all("clear text" in w for w in warnings if "TLS" in w)
    assert all("no authentication" in w for w in warnings if "without a token" in w)
