"""What every Wyoming connection shares: the engines, the device it bills, its limits, its info."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from voxgate.core.config import WyomingSettings
from voxgate.core.errors import ErrorCode
from voxgate.core.usage import UsageMeter, metering
from voxgate.protocols import wyoming
from voxgate.protocols.wyoming import Artifact, Program, WyomingLimits
from voxgate.protocols.wyoming_requests import RequestLimits
from voxgate.server.context import ServerContext
from voxgate.server.ratelimit import RateLimiter
from voxgate.store.records import Device
from voxgate.store.writer import ErrorRecord, UsageRecord

PROTOCOL = "wyoming"
"""How metrics and logs name it."""


@dataclass(frozen=True, slots=True)
class Offer:
    """What one port serves (Home Assistant makes an entity for each kind ``info`` lists)."""

    stt: bool
    tts: bool


class WyomingService:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.settings: WyomingSettings = ctx.settings.wyoming
        self.limits = WyomingLimits(max_payload_bytes=self.settings.max_payload_bytes)
        self.request_limits = RequestLimits(
            max_audio_s=self.settings.max_audio_s, max_text_chars=self.settings.max_text_chars
        )
        self._networks = [
            ipaddress.ip_network(network, strict=False)
            for network in self.settings.allowed_networks
        ]
        self._requests = RateLimiter(self.settings.requests_per_minute)
        self.open_connections = 0

    # -- who may connect ----------------------------------------------------------------------

    def allowed(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    async def device(self) -> Device:
        """The configured device (made on first use); raises UnavailableError while the
        database cannot say."""
        return await self.ctx.pseudo_device(self.settings.device)

    def allow_request(self, device: Device) -> float | None:
        """None if ``device`` may make one more request now; else seconds to wait."""
        key = f"device:{device.id}"
        if self._requests.allow(key):
            return None
        return self._requests.retry_after_s(key)

    # -- what it offers -----------------------------------------------------------------------

    def info(self, offer: Offer) -> bytes:
        settings = self.ctx.settings
        languages = self.settings.languages
        asr: list[Program] = []
        tts: list[Program] = []
        if offer.stt:
            chain = [settings.stt, *settings.stt.fallbacks]
            models = [
                Artifact(
                    f"{s.provider}/{s.priced_model}", languages, f"{s.provider} {s.priced_model}"
                )
                for s in chain
            ]
            # Streaming transcripts: transcript-start, -chunk, transcript, -stop (batch engines
            # send their whole text as the one chunk).
            asr.append(Program("voxgate-stt", "voxgate speech to text", models, streaming=True))
        if offer.tts:
            voices = _voices(self.ctx.engines.tts.model, settings.character.voice, languages)
            tts.append(Program("voxgate-tts", "voxgate text to speech", voices, streaming=True))
        wake: list[Program] = []
        engine = self.ctx.engines.wake_word
        if offer.stt and engine is not None:  # the audio-taking port: detect like transcribe
            words = [
                Artifact(word, languages, word.replace("_", " ")) for word in engine.wake_words
            ]
            wake.append(Program("voxgate-wake", "voxgate wake word", words))
        return wyoming.info(asr=asr, tts=tts, wake=wake)

    # -- what it did --------------------------------------------------------------------------

    @asynccontextmanager
    async def metered(self, device: Device) -> AsyncIterator[UsageMeter]:
        """Engine calls in the block are billed to ``device`` (as one turn of its usage)."""
        with metering(UsageMeter()) as meter:
            try:
                yield meter
            finally:
                self.bill(device, meter)

    def bill(self, device: Device, meter: UsageMeter) -> None:
        """What ``meter`` counted, as one turn of ``device``'s usage."""
        if meter.records:
            record = UsageRecord(None, device.id, device.user_id, tuple(meter.records), time.time())
            self.ctx.store.writer.submit(record)
            self.ctx.metrics.cost_usd.inc(meter.cost_usd)

    def failed(self, device: Device | None, code: str, message: str) -> None:
        self.ctx.metrics.errors.labels(PROTOCOL, code).inc()
        if device is not None and code not in _NOT_LOGGED:
            self.ctx.store.writer.submit(ErrorRecord(device.id, None, code, message))


_NOT_LOGGED = frozenset({ErrorCode.RATE_LIMITED.value})


def _voices(default: str, character_voice: str | None, languages: Sequence[str]) -> list[Artifact]:
    names = [default] + (
        [character_voice] if character_voice and character_voice != default else []
    )
    return [Artifact(name, languages, name) for name in names]
