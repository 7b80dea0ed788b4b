"""How a connection ends, in every protocol's terms: one close-code enum, why a connection ends
(:class:`Ending`), and what goes out before the close frame (:class:`Close`).

Each protocol maps an :class:`Ending` to its :class:`Close` (``close_for`` in its codec module),
so the WebSocket session loop (:mod:`voxgate.server.transports.connection`) never names a code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from voxgate.core.errors import ErrorCode


class CloseCode(IntEnum):
    """The WebSocket close codes voxgate sends (RFC 6455 §7.4; 4000-4999 are the relay's own,
    an HTTP status plus 4000)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    PROTOCOL_VIOLATION = 4400
    UNAUTHORIZED = 4401
    TIMEOUT = 4408
    RATE_LIMITED = 4429


class Ending(Enum):
    """Why a connection ends; the protocol says with which close code and last message."""

    CLIENT_ENDED = "client_ended"
    """The client said it is done."""
    ASSISTANT_ENDED = "assistant_ended"
    """The assistant ended the session (its goodbye is already out)."""
    SERVER_SHUTDOWN = "server_shutdown"
    """The server closed a running session: it is shutting down."""
    SHUTTING_DOWN = "shutting_down"
    """A new connection while the server is shutting down."""
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    """The credentials cannot be checked now (the database is busy or away): try again."""
    BAD_REQUEST = "bad_request"
    """The client broke the protocol in a way it cannot go on from."""
    TIMEOUT = "timeout"
    """The client did not do what it must in time (the relay's ``session.start``)."""
    TOO_LARGE = "too_large"
    SLOW_CLIENT = "slow_client"
    """The client stopped reading."""
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Close:
    """How to end one connection."""

    code: CloseCode
    reason: str = ""
    """The close frame's reason (cut to the 123 bytes a close frame can hold)."""
    last: str | bytes | None = field(default=None, repr=False)
    """A message sent just before the close frame (the relay's ``error``, Elato's SESSION.END)."""
    linger_s: float = 0.0
    """Seconds to wait between ``last`` and the close frame (let a beep play)."""
    http_status: int | None = None
    """Before the WebSocket is accepted: refuse the upgrade with this status, where the server
    can (else the close code, which clients see as 403)."""
    error: ErrorCode | None = None
    """Counted in the error metrics, when the protocol reports the ending as an error."""

    @property
    def reason_on_wire(self) -> str:
        return self.reason.encode()[:123].decode(errors="ignore")
