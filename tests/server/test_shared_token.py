"""Issue 13 item 4: the shared firmware token does not mix devices. Each device on it (by client
address) has its own ``session_id`` namespace and its own limits, and the token opens only the
voice-assistant-proxy routes it exists for."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes import FakeLLM, Fakes, FakeSTT, FakeTTS, pcm_bytes, silence
from tests.server.test_assistant_proxy_session import (
    CHUNK_BYTES,
    FIRMWARE_TOKEN,
    REPLY,
    WORD_BYTES,
    _speech,
    http_turn,
    post_chunk,
    serve,
)


def _device_at(address: str, base: str) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any 127.x.y.z is loopback)."""
    return httpx.AsyncClient(
        base_url=base, transport=httpx.AsyncHTTPTransport(local_address=address)
    )


async def test_two_devices_on_the_shared_token_with_one_session_id_stay_apart(
    tmp_path: Path,
) -> None:
    async with (
        serve(tmp_path, shared_token=FIRMWARE_TOKEN) as server,
        _device_at("127.0.0.1", server.http) as talker,
        _device_at("127.0.0.2", server.http) as quiet,
    ):
        speech, hush = _speech(), pcm_bytes(silence(900))
        pieces = range(0, len(speech), CHUNK_BYTES)
        for index, offset in enumerate(pieces):
            said = await post_chunk(
                talker, FIRMWARE_TOKEN, "esp32-1", index, speech[offset : offset + CHUNK_BYTES]
            )
            heard = await post_chunk(
                quiet, FIRMWARE_TOKEN, "esp32-1", index, hush[offset : offset + CHUNK_BYTES]
            )
            assert said.json() == heard.json() == {"status": "partial"}
        quiet_reply = await post_chunk(quiet, FIRMWARE_TOKEN, "esp32-1", len(pieces), final=True)
        talker_reply = await post_chunk(talker, FIRMWARE_TOKEN, "esp32-1", len(pieces), final=True)
    assert quiet_reply.content == b"" and quiet_reply.headers["x-voxgate-error"] == "no_speech"
    assert len(talker_reply.content) == len(REPLY.split()) * WORD_BYTES


async def test_each_device_on_the_shared_token_has_its_own_limits(tmp_path: Path) -> None:
    async with serve(tmp_path, shared_token=FIRMWARE_TOKEN, connections_per_minute=2) as server:
        statuses: dict[str, list[int]] = {}
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            async with _device_at(address, server.http) as device:
                statuses[address] = [
                    (await post_chunk(device, FIRMWARE_TOKEN, f"{address}-{n}", 0)).status_code
                    for n in range(3)
                ]
    assert statuses == {address: [200, 200, 429] for address in statuses}


async def test_the_shared_token_opens_only_the_proxy_routes(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, shared_token=FIRMWARE_TOKEN) as server,
        httpx.AsyncClient(base_url=server.http) as client,
    ):
        characters = await client.get(
            "/api/characters", headers={"Authorization": f"Bearer {FIRMWARE_TOKEN}"}
        )
        own = await client.get(
            "/api/characters", headers={"Authorization": f"Bearer {server.token}"}
        )
    assert characters.status_code == 401 and "shared token" in characters.json()["error"]["message"]
    assert own.status_code == 200


async def test_devices_on_the_shared_token_never_see_each_others_conversation(
    tmp_path: Path,
) -> None:
    """(Moved from the relay, which the shared token no longer opens.)"""
    fakes = Fakes(
        stt=FakeSTT(["My PIN is 1234.", "What is my PIN?"]),
        llm=FakeLLM(["Noted."], ["Hello."]),
        tts=FakeTTS(sample_rate_hz=24_000, ms_per_word=100),
    )
    async with serve(tmp_path, fakes, shared_token=FIRMWARE_TOKEN) as server:
        for address, session_id in (("127.0.0.1", "esp32-a"), ("127.0.0.2", "esp32-b")):
            async with _device_at(address, server.http) as device:
                reply = await http_turn(device, FIRMWARE_TOKEN, session_id, _speech())
                assert reply.content, reply.headers
    assert [m.content for m in fakes.llm.calls[1][1:]] == ["What is my PIN?"]
