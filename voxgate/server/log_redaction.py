"""No credential in a log line: query tokens (``?token=``, the relay's and ``/ws``'s way of
authenticating), URL fragments (``#token=``, the page links) and ``Bearer`` headers are replaced
by ``[redacted]`` in every record, uvicorn's access log included.

uvicorn's access formatter reads the record's arguments (the path is one of them), so the filter
rewrites the arguments as well as the message, keeping their shape.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"

_SECRETS = re.compile(
    r"(?P<key>(?:[?&#;]|%3F|%26)(?:token|access_token|auth_token|jwt|api_key|key)=)[^&#\s\"'<>]*"
    r"|(?P<scheme>\bBearer(?:\s+|%20|\+))[A-Za-z0-9._~+/=-]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _SECRETS.sub(
        lambda m: (m.group("key") or m.group("scheme")) + REDACTED,
        text,
    )


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_value(arg) for key, arg in record.args.items()}
        return True


LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "voxgate")
"""Loggers whose handlers get the filter: the root (voxgate's own) and uvicorn's, which has
handlers of its own that records of its children reach without passing the root's."""


def install(loggers: tuple[str, ...] = LOGGERS) -> None:
    """Put the filter on every handler of ``loggers`` (a filter on a logger would miss records
    its children propagate to its handlers). Call after logging is configured."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactTokens) for f in handler.filters):
                handler.addFilter(RedactTokens())
