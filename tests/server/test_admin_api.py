"""The admin JSON API: the admin token on every route, each endpoint's answers, and clear errors
for bad input, unknown things and conflicts. On SQLite, the main paths on PostgreSQL too, and once
inside the real server with a device talking to it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from starlette.applications import Starlette
from starlette.routing import Route
from websockets.asyncio.client import connect

from tests.fakes import Fakes
from tests.server_harness import serving
from tests.store_seed import seed
from voxgate.core.config import DatabaseSettings, Settings
from voxgate.server import admin_api
from voxgate.server.app import create_app
from voxgate.server.shared import NoticeKind
from voxgate.store import Store
from voxgate.store.characters import BUILT_IN
from voxgate.store.writer import ConversationOpened, TurnRecord

ADMIN_TOKEN = "admin-token-for-tests"
BASE_URL = "http://voxgate.test"


@dataclass
class FakeContext:
    """What the admin API reads of the server's context."""

    settings: Settings
    store: Store
    sessions: set[object] = field(default_factory=set)
    online: set[int] = field(default_factory=set)
    notices: list[tuple[NoticeKind, int]] = field(default_factory=list)
    drains: int = 0

    async def online_devices(self) -> dict[int, set[str]]:
        return {device_id: {"replica-a"} for device_id in self.online}

    async def live_sessions(self) -> int:
        return len(self.sessions)

    async def publish(self, kind: NoticeKind, device_id: int) -> None:
        self.notices.append((kind, device_id))

    def start_drain(self) -> None:
        self.drains += 1


@dataclass
class Api:
    app: Starlette
    client: httpx.AsyncClient
    ctx: FakeContext

    def client_with(self, headers: dict[str, str]) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL, headers=headers
        )

    @property
    def store(self) -> Store:
        return self.ctx.store

    async def json(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.client.request(method, "/api/admin" + path, **kwargs)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        return response.json()

    async def error(self, method: str, path: str, status: int, code: str, **kwargs: Any) -> str:
        """The error's message, after checking its status and code."""
        body = await self.json(method, path, status, **kwargs)
        assert set(body) == {"error"} and body["error"]["code"] == code, body
        message: str = body["error"]["message"]
        return message


def settings_for(tmp_path: Path, url: str | None = None, **server: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database=DatabaseSettings(url=url),
        server={"admin_token": ADMIN_TOKEN, **server},  # type: ignore[arg-type]
    )


@asynccontextmanager
async def admin_api_on(settings: Settings) -> AsyncIterator[Api]:
    store = await Store.open(settings)
    app = Starlette(routes=admin_api.routes())
    ctx = FakeContext(settings, store)
    app.state.ctx = ctx
    api = Api(app, httpx.AsyncClient(), ctx)
    try:
        async with api.client_with({"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api.client:
            yield api
    finally:
        await store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with admin_api_on(settings_for(tmp_path)) as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None  # the embedded default, in the data directory
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
async def any_api(db_url: str | None, tmp_path: Path) -> AsyncIterator[Api]:
    async with admin_api_on(settings_for(tmp_path, db_url)) as opened:
        yield opened


# -- the admin token -----------------------------------------------------------------------------


def _every_route() -> list[tuple[str, str]]:
    found = []
    for route in admin_api.routes():
        assert isinstance(route, Route) and route.methods is not None
        (method,) = route.methods - {"HEAD"}
        found.append((method, re.sub(r"\{\w+\}", "x", route.path)))
    return found


async def test_every_route_wants_the_admin_token(api: Api) -> None:
    routes = _every_route()
    assert len(routes) == 17
    refused = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": ADMIN_TOKEN},
        {"X-Admin-Token": ADMIN_TOKEN},
    ]
    for headers in refused:
        async with api.client_with(headers) as client:
            for method, path in routes:
                response = await client.request(method, path, json={"name": "x"})
                assert response.status_code == 401, (method, path, headers)
                assert response.json()["error"]["code"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
    async with api.client_with({"Authorization": f"bearer {ADMIN_TOKEN}"}) as client:
        assert (await client.get("/api/admin/overview")).status_code == 200
    assert await api.store.users.all() == []  # nothing was done without the token
    assert len(await api.store.characters.all()) == len(BUILT_IN)


async def test_without_an_admin_token_configured_nothing_is_allowed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.server.admin_token is None
    async with admin_api_on(settings) as api:
        for header in (f"Bearer {ADMIN_TOKEN}", "Bearer None", "Bearer"):
            async with api.client_with({"Authorization": header}) as client:
                assert (await client.get("/api/admin/overview")).status_code == 401


# -- devices and users ---------------------------------------------------------------------------


async def test_users_and_devices_round_trip(any_api: Api) -> None:
    api = any_api
    user = await api.json("POST", "/users", 201, json={"name": "ann"})
    assert user["user"]["name"] == "ann" and isinstance(user["user"]["created_at"], float)
    added = await api.json(
        "POST", "/devices", 201, json={"name": "toy", "mac": "aa-bb-cc-dd-ee-ff", "user": "ann"}
    )
    device, token = added["device"], added["token"]
    assert (device["name"], device["mac"], device["user"]) == ("toy", "AA:BB:CC:DD:EE:FF", "ann")
    assert device["revoked"] is False and device["online"] is False
    assert device["settings"] == {
        "character": None,
        "volume": None,
        "pitch": None,
        "language": None,
    }
    assert (await api.store.devices.authenticate(token)) is not None
    await api.json("POST", "/devices", 201, json={"name": "desk"})

    changed = await api.json(
        "PATCH", "/devices/toy", json={"character": "storyteller", "volume": 30, "pitch": 1.25}
    )
    assert changed["device"]["settings"] == {
        "character": "storyteller",
        "volume": 30,
        "pitch": 1.25,
        "language": None,
    }
    cleared = await api.json("PATCH", "/devices/toy", json={"user": None, "language": "de"})
    assert cleared["device"]["user"] is None
    assert cleared["device"]["settings"]["volume"] == 30  # left as it was
    assert cleared["device"]["settings"]["language"] == "de"

    api.ctx.online = {device["id"]}
    listed = (await api.json("GET", "/devices"))["devices"]
    assert [(d["name"], d["online"]) for d in listed] == [("toy", True), ("desk", False)]
    assert [d["replicas"] for d in listed] == [["replica-a"], []]  # where its sessions are
    assert isinstance(listed[0]["last_seen_at"], float)  # it authenticated above

    revoked = await api.json("POST", "/devices/toy/revoke")
    assert revoked["device"]["revoked"] is True
    assert isinstance(revoked["device"]["revoked_at"], float)
    assert await api.store.devices.authenticate(token) is None
    message = await api.error("POST", "/devices/toy/revoke", 409, "conflict")
    assert "revoked already" in message
    # Every replica is told: the revoke, and the changes before it (what they remember of it).
    assert api.ctx.notices[-1] == (NoticeKind.REVOKED, device["id"])
    assert (NoticeKind.DEVICE_CHANGED, device["id"]) in api.ctx.notices

    users = (await api.json("GET", "/users"))["users"]
    assert [(u["name"], u["devices"]) for u in users] == [("ann", 0)]


async def test_bad_input_is_400_naming_the_field(api: Api) -> None:
    await api.json("POST", "/devices", 201, json={"name": "toy"})
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/users", {"content": b"{not json"}, "not JSON"),
        ("POST", "/users", {"json": ["ann"]}, "JSON object"),
        ("POST", "/users", {"json": {}}, "name: required"),
        ("POST", "/users", {"json": {"name": 7}}, "name: expected"),
        ("POST", "/users", {"json": {"name": "ann", "admin": True}}, "unknown field 'admin'"),
        ("POST", "/devices", {"json": {"name": "lamp", "mac": "12:34"}}, "not a MAC address"),
        ("POST", "/devices", {"json": {"name": "x" * 101}}, "name: at most 100"),
        ("PATCH", "/devices/toy", {"json": {}}, "nothing to change"),
        ("PATCH", "/devices/toy", {"json": {"volume": "loud"}}, "volume: expected an integer"),
        ("PATCH", "/devices/toy", {"json": {"volume": 300}}, "volume: expected 0-100"),
        ("PATCH", "/devices/toy", {"json": {"volume": True}}, "volume: expected an integer"),
        ("PATCH", "/devices/toy", {"json": {"pitch": 3}}, "pitch: expected 0.5-2.0"),
        ("PATCH", "/devices/toy", {"json": {"language": "x" * 17}}, "language: at most 16"),
        ("PATCH", "/devices/toy", {"json": {"colour": "red"}}, "unknown field 'colour'"),
        ("PUT", "/characters/pirate", {"json": {"name": "Arr"}}, "system_prompt: required"),
        (
            "PUT",
            "/characters/pirate",
            {"json": {"slug": "parrot", "name": "A", "system_prompt": "B"}},
            "slug: 'parrot' differs",
        ),
        ("PUT", "/characters/Bad%20Slug", {"json": {"name": "A", "system_prompt": "B"}}, "id is"),
        ("GET", "/conversations?limit=0", {}, "limit: expected an integer 1-500"),
        ("GET", "/conversations?limit=many", {}, "limit: expected an integer"),
        ("GET", "/conversations?before=yesterday", {}, "before: expected epoch seconds"),
        ("GET", "/errors?limit=5000", {}, "limit: expected an integer 1-1000"),
        ("GET", "/usage?since=2025-13-01", {}, "since: expected a day YYYY-MM-DD"),
        ("GET", "/latency?since=01/02/2025", {}, "since: expected a day YYYY-MM-DD"),
    ]
    for method, path, kwargs, expected in cases:
        message = await api.error(method, path, 400, "bad_request", **kwargs)
        assert expected in message, (method, path, message)
    device = await api.store.devices.by_name("toy")
    assert device.settings.volume is None and device.settings.pitch is None  # nothing changed
    assert [d.name for d in await api.store.devices.all()] == ["toy"]
    assert await api.store.users.all() == []


async def test_unknown_things_are_404(api: Api) -> None:
    await api.json("POST", "/devices", 201, json={"name": "toy"})
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("PATCH", "/devices/attic", {"json": {"volume": 3}}, "no device named 'attic'"),
        ("POST", "/devices/attic/revoke", {}, "no device named 'attic'"),
        ("PATCH", "/devices/toy", {"json": {"character": "pirate"}}, "no character 'pirate'"),
        ("PATCH", "/devices/toy", {"json": {"user": "zoe"}}, "no user named 'zoe'"),
        ("POST", "/devices", {"json": {"name": "lamp", "user": "zoe"}}, "no user named 'zoe'"),
        ("DELETE", "/characters/pirate", {}, "no character 'pirate'"),
        ("GET", "/conversations?device=attic", {}, "no device named 'attic'"),
        ("GET", "/conversations/no-such-id", {}, "no conversation 'no-such-id'"),
        ("GET", "/usage?user=zoe", {}, "no user named 'zoe'"),
    ]
    for method, path, kwargs, expected in cases:
        message = await api.error(method, path, 404, "not_found", **kwargs)
        assert expected in message, (method, path, message)
    assert [d.name for d in await api.store.devices.all()] == ["toy"]


async def test_names_taken_and_built_in_characters_are_409(api: Api) -> None:
    await api.json("POST", "/users", 201, json={"name": "ann"})
    await api.json("POST", "/devices", 201, json={"name": "toy", "mac": "AA:BB:CC:DD:EE:FF"})
    message = await api.error("POST", "/users", 409, "conflict", json={"name": " ann "})
    assert "a user named 'ann' exists" in message
    message = await api.error("POST", "/devices", 409, "conflict", json={"name": "toy"})
    assert "a device named 'toy' exists" in message
    message = await api.error(
        "POST", "/devices", 409, "conflict", json={"name": "lamp", "mac": "aa:bb:cc:dd:ee:ff"}
    )
    assert "'toy' has MAC AA:BB:CC:DD:EE:FF" in message
    message = await api.error("DELETE", "/characters/toy", 409, "conflict")
    assert "built in" in message
    assert "toy" in [c.slug for c in await api.store.characters.all()]


# -- characters ----------------------------------------------------------------------------------


async def test_characters_put_list_and_delete(api: Api) -> None:
    listed = (await api.json("GET", "/characters"))["characters"]
    assert [(c["slug"], c["built_in"]) for c in listed] == [(c.slug, True) for c in BUILT_IN]
    assert listed[1]["first_message"] == BUILT_IN[1].first_message
    pirate = {
        "name": "Arr",
        "system_prompt": "You are a pirate.",
        "first_message": "Ahoy!",
        "voice": "en_GB-alan",
        "language": "en",
        "pitch": 0.9,
        "description": "Talks like a pirate.",
    }
    created = await api.json("PUT", "/characters/pirate", 201, json=pirate)
    assert created["character"] == {**pirate, "slug": "pirate", "built_in": False}
    replaced = await api.json(
        "PUT", "/characters/pirate", json={"name": "Arrr", "system_prompt": "Be brief."}
    )
    assert replaced["character"]["first_message"] is None  # a PUT replaces the whole character
    assert (await api.store.characters.get("pirate")).name == "Arrr"
    edited = await api.json("PUT", "/characters/toy", json={"name": "Pip", "system_prompt": "Hi."})
    assert edited["character"]["built_in"] is True
    await api.json("POST", "/devices", 201, json={"name": "toy"})
    await api.json("PATCH", "/devices/toy", json={"character": "pirate"})
    assert await api.json("DELETE", "/characters/pirate") == {"deleted": "pirate"}
    assert "pirate" not in [c["slug"] for c in (await api.json("GET", "/characters"))["characters"]]
    assert (await api.store.devices.by_name("toy")).settings.character is None


# -- conversations and reports -------------------------------------------------------------------


async def test_conversations_messages_usage_latency_and_errors(any_api: Api) -> None:
    api = any_api
    await seed(api.store)
    conversations = (await api.json("GET", "/conversations"))["conversations"]
    assert [(c["id"], c["device"], c["user"], c["turns"]) for c in conversations] == [
        ("conv-desk", "desk", None, 1),
        ("conv-toy", "toy", "ann", 2),
    ]
    assert conversations[1]["character"] == "toy"
    first_page = await api.json("GET", "/conversations?limit=1")
    assert [c["id"] for c in first_page["conversations"]] == ["conv-desk"]
    before = first_page["next_before"]
    second_page = await api.json("GET", f"/conversations?limit=1&before={before}")
    assert [c["id"] for c in second_page["conversations"]] == ["conv-toy"]
    only_toy = await api.json("GET", "/conversations?device=toy")
    assert [c["id"] for c in only_toy["conversations"]] == ["conv-toy"]
    assert only_toy["next_before"] is None

    conversation = await api.json("GET", "/conversations/conv-toy")
    assert conversation["id"] == "conv-toy"
    messages = conversation["messages"]
    assert [(m["role"], m["text"]) for m in messages] == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris is the capital of France."),
        ("user", "Tell me a [long] story"),
        ("assistant", "Once upon a time there was a dragon who loved tea."),
    ]
    cut = messages[3]
    assert (cut["interrupted"], cut["heard_text"]) == (True, "Once upon a time")
    assert messages[1]["timings"] == {"speech_end_to_first_audio_ms": 812.4, "stt_ms": 120.0}
    assert (messages[0]["audio_s"], messages[1]["audio_s"]) == (6.0, 3.0)
    assert messages[0]["created_at"] < messages[1]["created_at"] < messages[2]["created_at"]

    usage = await api.json("GET", "/usage")
    assert [(r["day"], r["user"], r["turns"]) for r in usage["rows"]] == [
        ("2025-01-11", "ann", 1),
        ("2025-01-11", "(no user)", 1),
        ("2025-01-10", "ann", 1),
    ]
    assert usage["rows"][0]["tokens_in"] == 100 and usage["rows"][0]["audio_minutes"] == 0.15
    total = usage["total"]
    assert (total["turns"], total["tokens_in"], total["tokens_out"]) == (3, 300, 60)
    assert (total["characters"], total["audio_minutes"]) == (90, 0.45)
    assert total["cost_usd"] == pytest.approx(0.003)
    ann = await api.json("GET", "/usage?user=ann&since=2025-01-11")
    assert [(r["day"], r["user"]) for r in ann["rows"]] == [("2025-01-11", "ann")]
    assert ann["total"]["turns"] == 1

    days = (await api.json("GET", "/latency"))["days"]
    assert [d["day"] for d in days] == ["2025-01-11", "2025-01-10"]
    assert days[1]["stages"]["speech_end_to_first_audio_ms"] == {"p50": 812.4, "p95": 812.4}
    assert days[0]["stages"]["turn_end_to_first_audio_ms"]["p50"] == 640.0
    later = (await api.json("GET", "/latency?since=2025-01-11"))["days"]
    assert [d["day"] for d in later] == ["2025-01-11"]

    errors = (await api.json("GET", "/errors"))["errors"]
    assert [(e["code"], e["device"], e["conversation_id"]) for e in errors] == [
        ("llm_failed", "toy", "conv-toy"),
        ("no_speech", "desk", "conv-desk"),
    ]
    assert errors[0]["message"] == "model crashed"
    assert [e["code"] for e in (await api.json("GET", "/errors?limit=1"))["errors"]] == [
        "llm_failed"
    ]


async def test_overview(api: Api) -> None:
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    await seed(api.store, days=("2025-01-10", today))
    api.ctx.sessions = {object(), object()}
    api.ctx.online = {1}
    overview = await api.json("GET", "/overview")
    assert overview == {
        "devices": 2,
        "devices_active": 2,
        "devices_online": 1,
        "users": 1,
        "sessions_live": 2,
        "turns_today": 2,
        "cost_today_usd": pytest.approx(0.002),
        "writer": {"healthy": True, "pending": 0, "last_error": None},
    }


async def test_a_database_that_is_away_is_503(api: Api, tmp_path: Path) -> None:
    database = api.store.database
    working = database.sessions
    gone = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    database.sessions = async_sessionmaker(gone)
    try:
        message = await api.error("GET", "/devices", 503, "unavailable")
        assert "database is unavailable" in message
    finally:
        database.sessions = working
        await gone.dispose()
    await api.json("GET", "/devices")  # back


# -- inside the real server ----------------------------------------------------------------------


async def test_inside_the_server_a_talking_device_is_online_and_its_turn_is_kept(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    store = await Store.open(settings)
    _, token = await store.devices.add("kitchen")
    fakes = Fakes()
    engines = fakes.engines()
    app = create_app(settings, engines=engines, store=store)
    if not any(getattr(route, "path", "").startswith("/api/admin") for route in app.routes):
        app.router.routes[:0] = admin_api.routes()  # until app.py lists them itself
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with serving(app) as address:
            base = f"http://{address}/api/admin"
            async with httpx.AsyncClient(headers=headers) as http:
                assert (await http.get(f"{base}/overview")).json()["sessions_live"] == 0
                async with connect(
                    f"ws://{address}/v1/relay",
                    additional_headers={"Authorization": f"Bearer {token}"},
                    proxy=None,
                ) as ws:
                    await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": {}}))
                    await ws.send(
                        json.dumps({"event": "text.input", "seq": 2, "payload": {"text": "Hi"}})
                    )
                    async with asyncio.timeout(10):
                        while True:
                            frame = await ws.recv()  # JSON, and binary reply audio
                            if isinstance(frame, str) and '"turn.done"' in frame:
                                break
                    overview = (await http.get(f"{base}/overview")).json()
                    devices = (await http.get(f"{base}/devices")).json()["devices"]
                assert overview["sessions_live"] == 1 and overview["devices_online"] == 1
                assert [(d["name"], d["online"]) for d in devices] == [("kitchen", True)]
                await store.writer.flush(5)
                conversations = (await http.get(f"{base}/conversations?device=kitchen")).json()
                (conversation,) = conversations["conversations"]
                detail = (await http.get(f"{base}/conversations/{conversation['id']}")).json()
                first, *_, last = detail["messages"]
                assert (first["role"], first["text"]) == ("user", "Hi")
                assert last["role"] == "assistant" and last["text"]
                async with asyncio.timeout(5):  # the session is over once the server sees it
                    while (await http.get(f"{base}/overview")).json()["sessions_live"]:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                devices = (await http.get(f"{base}/devices")).json()["devices"]
                assert [d["online"] for d in devices] == [False]
                unauthorized = await http.get(f"{base}/devices", headers={"Authorization": ""})
                assert unauthorized.status_code == 401
    finally:
        engines.close()
        await store.close()


async def test_a_conversation_over_several_sessions_names_each_messages_session(api: Api) -> None:
    """turn_id restarts in every session: (session_id, turn_id) is what names a turn."""
    device, _ = await api.store.devices.add("kitchen")
    writer = api.store.writer
    writer.start()
    writer.submit(ConversationOpened("conv-k", device.id, None, None, False, at=100.0))
    for n, session in enumerate(("session-a", "session-b", "session-c")):
        writer.submit(
            TurnRecord(
                "conv-k", device.id, None, 1, f"question {n}", f"answer {n}", None, False, {}, (),
                session_id=session, at=200.0 + n,
            )
        )  # fmt: skip
    assert await writer.flush(10)
    messages = (await api.json("GET", "/conversations/conv-k"))["messages"]
    assert [(m["session_id"], m["turn_id"], m["role"]) for m in messages] == [
        (session, 1, role)
        for session in ("session-a", "session-b", "session-c")
        for role in ("user", "assistant")
    ]
