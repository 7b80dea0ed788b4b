"""Two replicas in this process share a Redis and one database: the chunks of one ``POST
/v1/audio`` session alternate between them; the replica that takes the final chunk answers the
whole utterance, and the next turn, on the other replica, continues the conversation."""

from __future__ import annotations

import base64
import secrets
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

from tests.fakes import Fakes, concat, pcm_bytes, silence, tone
from tests.server_harness import open_store, running_server
from voxgate.core.config import Settings

CHUNK_MS = 200


def _settings(tmp_path: Path, redis_url: str, prefix: str, replica: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        server={"replica_id": replica, "admin_token": "admin"},  # type: ignore[arg-type]
        redis={"url": redis_url, "key_prefix": prefix},  # type: ignore[arg-type]
    )


def _chunks(session_id: str, audio: bytes) -> list[dict[str, Any]]:
    size = 16 * 2 * CHUNK_MS
    pieces = [audio[i : i + size] for i in range(0, len(audio), size)]
    bodies = [
        {
            "session_id": session_id,
            "chunk_index": index,
            "pcm_base64": base64.b64encode(piece).decode(),
            "is_final": False,
        }
        for index, piece in enumerate(pieces)
    ]
    bodies.append(
        {"session_id": session_id, "chunk_index": len(pieces), "pcm_base64": "", "is_final": True}
    )
    return bodies


async def test_chunks_spread_over_two_replicas_make_one_turn_and_one_conversation(
    tmp_path: Path, redis_url: str
) -> None:
    prefix = f"test-{secrets.token_hex(4)}"
    fakes = [Fakes(), Fakes()]
    async with AsyncExitStack() as stack:
        stores = [await open_store(tmp_path), await open_store(tmp_path)]
        for store in stores:
            stack.push_async_callback(store.close)
        _, token = await stores[0].devices.add("radio")
        addresses = []
        for fake, store, name in zip(fakes, stores, "ab", strict=True):
            engines = fake.engines()
            stack.callback(engines.close)
            settings = _settings(tmp_path, redis_url, prefix, name)
            addresses.append(
                await stack.enter_async_context(running_server(settings, engines, store))
            )
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"http://{address}", headers={"X-Assistant-Token": token}
                )
            )
            for address in addresses
        ]
        utterance = pcm_bytes(concat(silence(200), tone(1600), silence(200)))
        replies = []
        for turn in range(2):
            bodies = _chunks("radio-1", utterance)
            for index, body in enumerate(bodies[:-1]):
                answer = await clients[(index + turn) % 2].post("/v1/audio", json=body)
                assert answer.json() == {"status": "partial"}, answer.text
            # A retried chunk, on the other replica: answered, not taken twice.
            retried = await clients[turn % 2].post("/v1/audio", json=bodies[1])
            assert retried.json() == {"status": "duplicate"}
            final_on = (len(bodies) - 1 + turn) % 2
            reply = await clients[final_on].post("/v1/audio", json=bodies[-1])
            assert reply.status_code == 200 and len(reply.content) > 0, reply.headers
            replies.append(final_on)
        # Each turn's whole utterance reached the replica that answered it.
        first, second = fakes[replies[0]], fakes[replies[1]]
        assert replies[0] != replies[1]
        assert first.stt.call_ms and first.stt.call_ms[0] >= 1600, first.stt.call_ms
        assert second.stt.call_ms and second.stt.call_ms[-1] >= 1600, second.stt.call_ms
        # The second turn's prompt holds the first one, answered by the other replica.
        prompt = " ".join(str(message.content) for message in second.llm.calls[-1])
        assert "I spoke for" in prompt and prompt.count("I spoke for") == 2, prompt
        conversations = await stores[0].conversations.recent(device="radio")
        assert len(conversations) == 1
