"""Transport for the voice-assistant-proxy firmware: ``POST /v1/audio`` and WebSocket ``/ws``.

The wire format is :mod:`voxgate.protocols.assistant_proxy`; this module moves the bytes.

Differences from the original proxy, on purpose:

- ``/ws`` requires a token (the original had none): the ``X-Assistant-Token`` header, or
  ``?token=`` in the URL for clients that cannot set headers. A bad one closes with 1008.
- Tokens are per-device tokens from ``voxgate devices``, or ``server.shared_token`` (the firmware
  ships with a hard-coded one).
- A final chunk that gets no reply is answered ``200`` with an empty body and an
  ``X-Voxgate-Error`` header: ``no_speech`` (nothing was heard) or ``rate_limited``. A failure
  of the server before any audio is ``500 {"detail": "proxy_ingest_failed"}`` with the code in the
  same header; the session stays usable.
- Each device's ``session_id`` keeps its own conversation across requests and turns; sessions
  idle for ``IDLE_EXPIRY_S`` are closed, and a device has at most ``MAX_SESSIONS_PER_DEVICE``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from voxgate.core.config import Settings
from voxgate.server.transports.assistant_proxy_http import post_audio
from voxgate.server.transports.assistant_proxy_sessions import HttpSessions, Refused
from voxgate.server.transports.assistant_proxy_ws import proxy_websocket

__all__ = ["HttpSessions", "Refused", "routes"]


def routes(settings: Settings) -> list[BaseRoute]:
    return [
        Route("/v1/audio", post_audio, methods=["POST"]),
        WebSocketRoute("/ws", proxy_websocket),
    ]
