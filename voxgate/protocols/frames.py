"""What every protocol's downlink codec produces: frames for the device, and the encoder seam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voxgate.core.audio import resample
from voxgate.core.events import Event, ReplyAudio


@dataclass(frozen=True, slots=True)
class Outbound:
    """One frame for the device: text or binary, how much audio it carries, which reply it is of."""

    data: str | bytes
    audio_ms: float = 0.0
    turn_id: int | None = None


class EventEncoder(Protocol):
    """A protocol's sans-I/O downlink: turn-engine events to the frames it sends."""

    def encode(self, event: Event) -> list[Outbound]: ...


def pcm_at(event: ReplyAudio, rate_hz: int) -> bytes:
    """The event's PCM16 at ``rate_hz`` (transports ask sessions for their device's rate; this
    is for safety, when a reply comes at another)."""
    if event.sample_rate_hz == rate_hz:
        return event.pcm
    samples = np.frombuffer(event.pcm, dtype="<i2").astype(np.int16)
    return resample(samples, event.sample_rate_hz, rate_hz).astype("<i2").tobytes()
