"""Transport for the relay protocol (placeholder until its module lands)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from voxgate.core.config import Settings


def routes(settings: Settings) -> list[BaseRoute]:
    return []
