"""Audio over HTTP, shared by the cloud STT and TTS providers: a WAV of an utterance to upload,
and a reply body of raw PCM16 turned into sample chunks as it streams in.

Raw PCM has no framing: a network read can end inside a sample, so an odd byte waits for the next
read, and a body that ends on an odd byte was cut off.
"""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import httpx
import numpy as np

from voxgate.core.audio import float_to_int16
from voxgate.core.capabilities import Float32Array, Int16Array
from voxgate.core.errors import ProviderError
from voxgate.providers.http_api import HttpApi

MIN_CHUNK_MS = 50
"""Audio is passed on in pieces at least this long (but the last): network reads can be tiny."""


def wav_bytes(audio: Float32Array, sample_rate_hz: int) -> bytes:
    """A mono PCM16 WAV file of ``audio``, built in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(float_to_int16(audio).astype("<i2").tobytes())
    return buffer.getvalue()


def samples(data: bytes | bytearray) -> Int16Array:
    """PCM16 little-endian bytes (an even number) as samples."""
    return np.frombuffer(bytes(data), dtype="<i2").astype(np.int16)


async def no_audio() -> AsyncGenerator[Int16Array, None]:
    """The audio of blank text: none, and no request."""
    return
    yield


async def stream_pcm(
    api: HttpApi,
    url: str,
    *,
    sample_rate_hz: int,
    json: Any = None,
    params: Mapping[str, str] | None = None,
) -> AsyncGenerator[Int16Array, None]:
    """``POST`` ``json`` to ``url`` and yield the reply's raw PCM16 (mono, little-endian) as it
    arrives, in chunks of at least :data:`MIN_CHUNK_MS`. Every failure is a ProviderError."""
    try:
        # Closing this generator early (a barge-in) exits the ``async with``, which drops the
        # half-read connection instead of downloading audio nobody will hear.
        async with api.client.stream("POST", url, json=json, params=params) as response:
            await check_audio_response(api, response)
            async for chunk in pcm_chunks(api, response, sample_rate_hz):
                yield chunk
    except httpx.HTTPError as exc:
        # The caller may have played what came before a connection lost mid-reply.
        raise api.transport_failure(exc) from exc


async def check_audio_response(api: HttpApi, response: httpx.Response) -> None:
    """Raise the error an HTTP error status or a non-audio answer means."""
    if response.status_code >= 400:
        await response.aread()
        raise api.http_error(response)
    # A server that does not know the format asked for may answer 200 with JSON or text: played
    # as PCM, that would be loud noise.
    content_type = response.headers.get("Content-Type", "").lower()
    if content_type.startswith(("application/json", "text/")):
        raise ProviderError(
            f"{api.server} answered {content_type.split(';')[0]} instead of PCM audio",
            code=api.code,
        )


async def pcm_chunks(
    api: HttpApi, response: httpx.Response, sample_rate_hz: int
) -> AsyncIterator[Int16Array]:
    """The body of ``response`` (raw PCM16) as sample chunks of at least :data:`MIN_CHUNK_MS`."""
    min_bytes = sample_rate_hz * MIN_CHUNK_MS // 1000 * 2
    pending = bytearray()
    async for data in response.aiter_bytes():
        pending += data
        if len(pending) >= min_bytes:
            whole = len(pending) - len(pending) % 2
            yield samples(pending[:whole])
            del pending[:whole]
    if len(pending) % 2:
        raise ProviderError(
            f"{api.server} ended its audio in the middle of a sample", code=api.code, retryable=True
        )
    if pending:
        yield samples(pending)
