"""Keeping bearer tokens out of every log line, at every level.

At DEBUG the websockets library logs each handshake header, `Authorization: Bearer <token>` included, and
gRPC metadata or an exception can carry the header too. Log files are copied, attached to bug reports and read
by people who must not hold the secret, so redaction happens in the logging machinery itself, not at each call
site: a filter on the root logger's handlers rewrites every record that reaches them (records from any
library's logger propagate there) before it is formatted.

Two things are redacted: the value of any `authorization` header (whatever token it carries, right or wrong),
and every registered secret (the server's token, wherever it appears).
"""

from __future__ import annotations

import logging
import re
import threading

REDACTED = "<redacted>"

# "authorization: Bearer abc", "Authorization: Api-Key abc", "('authorization', 'Bearer abc')", "authorization=abc".
# The value runs to the next quote, whitespace, comma or bracket; "<...>" placeholders in help texts stay.
_AUTH_HEADER = re.compile(
    r"(?i)(\bauthorization['\"]?\s*[:=,]\s*['\"]?)((?:bearer|api-key|basic|token)\s+)?+(?!<)([^\s'\",;)\]}]+)"
)

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Redact `value` from every later log line (the server's token, once loaded)."""
    if value:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with authorization header values and registered secrets replaced by REDACTED."""
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}{REDACTED}", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and formatted traceback) with `redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: the handler would print msg and args raw, so flatten them here
            message = f"{record.msg} {record.args}"
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Put one RedactingFilter on every handler of `logger` (default: the root logger). Idempotent; call it after
    the handlers are configured (a handler added later needs another call)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
