"""What every protocol's downlink codec produces: frames for the device, and the encoder seam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from voxgate.core.events import Event


@dataclass(frozen=True, slots=True)
class Outbound:
    """One frame for the device: text or binary, how much audio it carries, which reply it is of."""

    data: str | bytes
    audio_ms: float = 0.0
    turn_id: int | None = None


class EventEncoder(Protocol):
    """A protocol's sans-I/O downlink: turn-engine events to the frames it sends."""

    def encode(self, event: Event) -> list[Outbound]: ...
