"""The store, against SQLite and a real PostgreSQL server: migrations, devices, characters,
conversations, usage, and the write queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxgate.core.config import DatabaseSettings, Settings
from voxgate.core.errors import ConfigError, NotFoundError, StoreError
from voxgate.core.usage import EngineUsage
from voxgate.store import Database, Store
from voxgate.store.characters import BUILT_IN
from voxgate.store.database import database_url
from voxgate.store.records import Character
from voxgate.store.writer import (
    ConversationClosed,
    ConversationOpened,
    ErrorRecord,
    HeardUpdate,
    TurnRecord,
)

TABLES = {"users", "characters", "devices", "conversations", "messages", "usage", "errors"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return database_url(None, tmp_path)
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    settings = Settings(data_dir=tmp_path, database=DatabaseSettings(url=db_url))
    opened = await Store.open(settings)
    opened.writer.start()
    try:
        yield opened
    finally:
        await opened.close()


async def _tables(database: Database) -> set[str]:
    from sqlalchemy import inspect

    async with database.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names) - {"alembic_version"}


async def test_migrations_go_up_from_empty_down_again_and_twice_is_harmless(db_url: str) -> None:
    database = Database(db_url)
    try:
        assert await database.revision() is None and await _tables(database) == set()
        await database.upgrade()
        await database.upgrade()  # a second run: already at head, nothing happens
        assert await database.revision() == Database.head_revision()
        assert await _tables(database) == TABLES
        await database.downgrade("base")
        assert await database.revision() is None and await _tables(database) == set()
        await database.upgrade()
        assert await _tables(database) == TABLES
    finally:
        await database.close()


async def test_tokens_authenticate_until_revoked_and_are_stored_hashed(
    store: Store, tmp_path: Path
) -> None:
    device, token = await store.devices.add("kitchen", "aa-bb-cc-dd-ee-ff")
    other, other_token = await store.devices.add("desk")
    assert device.mac == "AA:BB:CC:DD:EE:FF"
    assert (await store.devices.authenticate(token)) is not None
    assert (await store.devices.authenticate(other_token)) is not None
    assert await store.devices.authenticate(token + "x") is None
    assert await store.devices.authenticate("") is None
    found = await store.devices.by_mac("aa:bb:cc:dd:ee:ff")
    assert found is not None and found.id == device.id
    assert (await store.devices.by_name("kitchen")).last_seen_at is not None  # seen at auth
    assert await store.devices.revoke("kitchen") and not await store.devices.revoke("kitchen")
    assert await store.devices.authenticate(token) is None
    still = await store.devices.authenticate(other_token)
    assert still is not None and still.id == other.id
    if store.database.is_sqlite:
        await store.database.close()
        assert token.encode() not in (tmp_path / "voxgate.db").read_bytes()


async def test_clear_errors_for_names_taken_and_things_that_do_not_exist(store: Store) -> None:
    await store.devices.add("kitchen")
    with pytest.raises(StoreError, match="exists"):
        await store.devices.add("kitchen")
    with pytest.raises(NotFoundError, match="no user named 'ann'"):
        await store.devices.add("desk", user="ann")
    with pytest.raises(NotFoundError, match="no character 'pirate'"):
        await store.devices.configure("kitchen", character="pirate")
    with pytest.raises(NotFoundError, match="no device named 'attic'"):
        await store.devices.configure("attic", volume=50)
    with pytest.raises(StoreError, match="volume"):
        await store.devices.configure("kitchen", volume=150)
    with pytest.raises(ConfigError, match="not a MAC"):
        await store.devices.add("toy", mac="12:34")
    with pytest.raises(StoreError, match="no '/'"):
        await store.devices.add("living/room")
    await store.users.add("ann")
    with pytest.raises(StoreError, match="exists"):
        await store.users.add("ann")


async def test_device_owner_and_settings(store: Store) -> None:
    await store.users.add("ann")
    await store.devices.add("toy", user="ann")
    device = await store.devices.configure(
        "toy", character="storyteller", volume=30, pitch=1.2, language="en"
    )
    assert device.user == "ann"
    assert (device.settings.character, device.settings.volume) == ("storyteller", 30)
    assert (device.settings.pitch, device.settings.language) == (1.2, "en")
    cleared = await store.devices.configure("toy", character=None, user=None)
    assert cleared.settings.character is None and cleared.user is None
    assert cleared.settings.volume == 30  # untouched


async def test_built_in_characters_and_edits_that_survive_a_restart(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    slugs = [character.slug for character in await store.characters.all()]
    assert slugs == [character.slug for character in BUILT_IN]
    toy = await store.characters.get("toy")
    assert "child" in toy.system_prompt and toy.first_message
    await store.characters.save(
        Character(slug="toy", name="Pip", system_prompt="Edited.", first_message=None)
    )
    await store.characters.save(Character(slug="pirate", name="Arr", system_prompt="Be a pirate."))
    with pytest.raises(StoreError, match="lowercase"):
        await store.characters.save(Character(slug="Bad Slug", name="x", system_prompt="y"))
    await store.close()
    again = await Store.open(Settings(data_dir=tmp_path, database=DatabaseSettings(url=db_url)))
    try:
        assert (await again.characters.get("toy")).system_prompt == "Edited."
        assert len(await again.characters.all()) == len(BUILT_IN) + 1
    finally:
        await again.close()


def _turn(conversation_id: str, device_id: int, turn_id: int, **fields: object) -> TurnRecord:
    values: dict[str, object] = {
        "conversation_id": conversation_id,
        "device_id": device_id,
        "user_id": None,
        "turn_id": turn_id,
        "user_text": f"question {turn_id}",
        "reply_text": f"answer {turn_id}",
        "heard_text": None,
        "interrupted": False,
        "timings": {"stt_ms": 100.0 + turn_id, "speech_end_to_first_audio_ms": 800.0},
        "usage": (
            EngineUsage("stt", "faster-whisper", "whisper-tiny-en", audio_s=2.0, compute_s=0.1),
            EngineUsage(
                "llm", "openai", "gpt-4o-mini", tokens_in=100, tokens_out=20, cost_usd=1e-4
            ),
            EngineUsage("tts", "piper", "joe", characters=8, audio_s=1.5, compute_s=0.2),
        ),
    }
    values.update(fields)
    return TurnRecord(**values)  # type: ignore[arg-type]


async def test_written_turns_come_back_as_history_messages_and_usage(store: Store) -> None:
    ann = await store.users.add("ann")
    device, _ = await store.devices.add("toy", user="ann")
    character_id = await store.characters.id_of("toy")
    writer = store.writer
    writer.submit(ConversationOpened("c-1", device.id, ann.id, character_id, resumed=False))
    for turn_id in (1, 2, 3):
        writer.submit(_turn("c-1", device.id, turn_id, user_id=ann.id))
    writer.submit(HeardUpdate("c-1", 3, "ans"))
    writer.submit(ErrorRecord(device.id, "c-1", "stt_failed", "decoder crashed"))
    writer.submit(ConversationClosed("c-1"))
    assert await writer.flush(10)
    assert writer.healthy and writer.written == 7

    resumed = await store.conversations.latest(device.id, character_id, max_turns=2)
    assert resumed is not None and resumed.conversation_id == "c-1"
    assert [(m.role, m.text) for m in resumed.messages] == [
        ("user", "question 2"),
        ("assistant", "answer 2"),
        ("user", "question 3"),
        ("assistant", "answer 3"),
    ]
    last = resumed.messages[-1]
    assert last.interrupted and last.heard_text == "ans"
    assert last.timings == {"stt_ms": 103.0, "speech_end_to_first_audio_ms": 800.0}
    assert last.audio_s == 1.5 and resumed.messages[-2].audio_s == 2.0
    assert await store.conversations.latest(device.id, None, 2) is None  # other character

    (conversation,) = await store.conversations.recent(device="toy")
    assert (conversation.user, conversation.character, conversation.turns) == ("ann", "toy", 3)
    assert conversation.ended_at is not None
    assert len(await store.conversations.history("toy", limit=3)) == 3

    (day,) = await store.reports.usage()
    assert (day.user, day.turns, day.tokens_in, day.characters) == ("ann", 3, 300, 24)
    assert day.audio_minutes == pytest.approx(3 * 3.5 / 60, abs=1e-3)
    assert day.cost_usd == pytest.approx(3e-4)
    with pytest.raises(NotFoundError):
        await store.reports.usage(user="bob")
    assert await store.reports.usage(since=day_after(conversation.started_at)) == []
    (latency,) = await store.reports.latency()
    assert latency["stages"]["stt_ms"] == {"p50": 102.0, "p95": 103.0}  # type: ignore[index]


def day_after(timestamp: float) -> float:
    return timestamp + 86_400


async def test_a_record_the_database_refuses_is_dropped_and_the_rest_written(
    store: Store,
) -> None:
    device, _ = await store.devices.add("toy")
    writer = store.writer
    writer.submit(ConversationOpened("c-1", device.id, None, None, resumed=False))
    writer.submit(_turn("no-such-conversation", device.id, 1))  # foreign key violation
    writer.submit(_turn("c-1", device.id, 2))
    assert await writer.flush(10)
    assert writer.dropped == 1 and writer.written == 2 and writer.healthy
    messages = await store.conversations.messages("c-1")
    assert [m.text for m in messages] == ["question 2", "answer 2"]


async def test_an_interruption_marks_only_its_own_sessions_turn(store: Store) -> None:
    """Turn numbers restart in every session of a conversation (B1 of the review)."""
    device, _ = await store.devices.add("toy")
    writer = store.writer
    writer.submit(ConversationOpened("c-1", device.id, None, None, resumed=False))
    writer.submit(_turn("c-1", device.id, 1, session_id="first"))
    writer.submit(ConversationOpened("c-1", device.id, None, None, resumed=True))
    writer.submit(_turn("c-1", device.id, 1, session_id="second"))
    writer.submit(HeardUpdate("c-1", 1, "ans", "second"))
    assert await writer.flush(10)
    replies = [m for m in await store.conversations.messages("c-1") if m.role == "assistant"]
    assert [(r.interrupted, r.heard_text) for r in replies] == [(False, None), (True, "ans")]


async def test_migration_0002_keeps_messages_written_before_it(db_url: str) -> None:
    database = Database(db_url)
    try:
        await database.upgrade("0001")
        async with database.engine.begin() as connection:
            await connection.exec_driver_sql(
                "INSERT INTO devices (id, name, created_at) VALUES (1, 'old', 0)"
            )
            await connection.exec_driver_sql(
                "INSERT INTO conversations (id, device_id, started_at) VALUES ('c', 1, 0)"
            )
            await connection.exec_driver_sql(
                "INSERT INTO messages (conversation_id, turn_id, role, text, interrupted,"
                " created_at) VALUES ('c', 1, 'user', 'hello', false, 1)"
            )
        await database.upgrade()
        async with database.engine.connect() as connection:
            rows = (await connection.exec_driver_sql("SELECT text, session_id FROM messages")).all()
        assert [tuple(row) for row in rows] == [("hello", None)]
        await database.downgrade("0001")
        assert await database.revision() == "0001"
    finally:
        await database.close()
