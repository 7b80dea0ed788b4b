"""The admin page ``/admin`` in a real browser (headless Chromium), reading the real server's admin
API over a loopback socket.

The turns it shows are made just before, through the relay protocol, by a device registered on
the page's API: the instant stand-in engines, loaded from the registry and priced through
``Settings(prices=...)``, so every turn costs something; its LLM fails on one phrase, so there is
an error to show. A seeded history (``tests/store_seed.py``) on the two days before gives the
charts more than one day and more than one user. With ``VOXGATE_UPDATE_SCREENSHOTS=1`` the main test refreshes
``docs/screenshots/admin-page.png``; every screenshot also lands in ``tests/artifacts/``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Dialog, Page, expect
from websockets.asyncio.client import ClientConnection, connect

from tests.fakes import bounded, llm_failure
from tests.server_harness import open_store, serving
from tests.store_seed import seed
from tests.web_browser import PageErrors, browser_page, screenshot
from voxgate.core.capabilities import ChatMessage, LanguageModel, ToolSpec
from voxgate.core.config import Price, Settings
from voxgate.core.threads import close_stream
from voxgate.models import ModelStore
from voxgate.pipeline import Engines, load_engines
from voxgate.server.app import create_app
from voxgate.store import Store

TOKEN = "admin-page-token-0123456789"
DOC_SCREENSHOT = Path(__file__).parents[2] / "docs" / "screenshots" / "admin-page.png"
FAIL_PHRASE = "Please fall over"
XSS = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'
PRICES = {
    "standin/brain-1": Price(per_million_tokens_in=100.0, per_million_tokens_out=400.0),
    "standin/mouth-1": Price(per_audio_minute=0.6),
}


class FailsOn:
    """The LLM, except that it fails when the user says ``phrase`` (an engine that breaks)."""

    def __init__(self, inner: LanguageModel, phrase: str) -> None:
        self.inner = inner
        self.phrase = phrase

    async def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str]:
        if messages[-1].content == self.phrase:
            raise llm_failure("the model fell over")
        pieces = self.inner.stream_reply(messages, tools)
        try:
            async for piece in pieces:
                yield piece
        finally:
            await close_stream(pieces)


def priced_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        server={"admin_token": TOKEN},  # type: ignore[arg-type]
        vad={"provider": "standin"},
        stt={"provider": "standin", "model": "ear-1"},
        llm={"provider": "standin", "model": "brain-1"},
        tts={"provider": "standin", "voice": "mouth-1"},
        prices=PRICES,
    )


@asynccontextmanager
async def admin_server(tmp_path: Path, store: Store | None = None) -> AsyncIterator[str]:
    """The real app (priced stand-in engines, SQLite in ``tmp_path``); yields ``host:port``."""
    settings = priced_settings(tmp_path)
    engines: Engines = load_engines(settings, ModelStore(settings.models_dir))
    engines.llm = FailsOn(engines.llm, FAIL_PHRASE)
    try:
        async with serving(create_app(settings, engines=engines, store=store)) as address:
            yield address
    finally:
        engines.close()


class Device:
    """A relay client: a registered device typing its turns."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seq = 0
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def send(self, event: str, payload: dict[str, Any]) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({"event": event, "seq": self.seq, "payload": payload}))

    async def until(self, event: str) -> dict[str, Any]:
        """The payload of the next ``event`` (binary audio and other events are skipped)."""
        while True:
            frame = await self.ws.recv()
            if isinstance(frame, str):
                message = json.loads(frame)
                self.events.append((message["event"], message["payload"]))
                if message["event"] == event:
                    payload: dict[str, Any] = message["payload"]
                    return payload

    async def say(self, text: str) -> dict[str, Any]:
        """A typed turn, answered in full and listened to: its ``turn.done``, once the reply's
        audio would have played out (a next turn sooner would cut it short)."""
        await self.send("text.input", {"text": text})
        done = await self.until("turn.done")
        played_ms = sum(
            p["duration_ms"]
            for event, p in self.events
            if event == "tts.audio" and p["turn_id"] == done["turn_id"]
        )
        await asyncio.sleep(played_ms / 1000 + 0.2)
        return done


@asynccontextmanager
async def device_session(address: str, token: str) -> AsyncIterator[Device]:
    async with connect(f"ws://{address}/v1/relay", max_size=None, proxy=None) as ws:
        device = Device(ws)
        await device.send("session.start", {"token": token, "greeting": False})
        await device.until("session.ready")
        yield device
        await device.send("session.end", {})


def unexpected(errors: PageErrors, *allowed: str) -> list[str]:
    """The page's errors, less Chromium's log lines for responses a test provoked on purpose
    (``allowed``: parts of those lines, e.g. "status of 401")."""
    return [
        message
        for message in errors.messages
        if not (
            message.startswith("console error: Failed to load resource")
            and "/api/admin/" in message
            and any(part in message for part in allowed)
        )
    ]


async def open_admin(page: Page, address: str, token: str | None = TOKEN) -> None:
    await page.goto(f"http://{address}/admin" + (f"#token={token}" if token else ""))


def utc_day(offset_days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=offset_days)).strftime("%Y-%m-%d")


# ---------------------------------------------------------------------------------------------
# Without a browser


async def test_the_admin_page_and_its_modules_are_served(tmp_path: Path) -> None:
    async with (
        admin_server(tmp_path) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        page = await client.get("/admin")
        head = await client.head("/admin")
        modules = {
            name: await client.get(f"/static/{name}")
            for name in (
                "admin.js",
                "admin-api.js",
                "admin-dom.js",
                "admin-charts.js",
                "admin-sections.js",
                "reply-text.js",
                "timings.js",
                "admin.css",
            )
        }
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert head.status_code == 200
    assert '<script type="module" src="static/admin.js">' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-cache"
    # Before any data: every section says it is loading.
    assert page.text.count('data-loading="true"') == 7
    assert all(response.status_code == 200 for response in modules.values()), modules
    # Data only ever becomes text: no HTML parsing of anything in the admin modules.
    for name, response in modules.items():
        if name.endswith(".js"):
            assert "innerHTML" not in response.text and "insertAdjacentHTML" not in response.text


# ---------------------------------------------------------------------------------------------
# In the browser

NAME = 'toy <img src=x onerror="window.__xss = 3">'
"""A device name that would run script if the page made HTML of it (no "/": the API's device
paths cannot address a name with one)."""


@bounded(120)
async def test_the_turns_just_made_show_with_their_cost_latency_errors_and_exact_transcripts(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    await seed(store, days=(utc_day(-2), utc_day(-1)))
    try:
        async with (
            admin_server(tmp_path, store) as address,
            httpx.AsyncClient(
                base_url=f"http://{address}/api/admin",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as api,
            browser_page(None) as (page, errors),
        ):
            # Register the device on the admin API, then talk through the relay protocol.
            assert (await api.post("/users", json={"name": "bob"})).status_code == 201
            added = await api.post("/devices", json={"name": "kitchen", "user": "bob"})
            assert added.status_code == 201, added.text
            async with device_session(address, added.json()["token"]) as device:
                first = await device.say("What is the capital of France?")
                xss = await device.say(XSS)
                # A barge-in: the second turn starts while the first reply plays.
                await device.send("text.input", {"text": "Count to twelve"})
                await device.until("tts.audio")
                await device.say("Stop counting")
                (heard,) = [p["heard_text"] for e, p in device.events if e == "reply.interrupted"]
                # The engine that breaks.
                await device.send("text.input", {"text": FAIL_PHRASE})
                failure = await device.until("error")
                await device.until("turn.done")  # a spoken apology
                costs = [p["usage"]["cost_usd"] for e, p in device.events if e == "turn.done"]

                await open_admin(page, address)
                await expect(page.locator("#status")).to_have_attribute("data-state", "ok")

                # The device is listed, online while its session is open, with its owner.
                row = page.locator('#devices tr[data-device="kitchen"]')
                await expect(row).to_have_attribute("data-online", "true")
                await expect(row.locator(".badge")).to_have_text("online")
                await expect(row.get_by_label("owner of kitchen")).to_have_value("bob")
                live = page.locator('#overview [data-tile="sessions_live"] .tile-value')
                await expect(live).to_have_text("1")

                # The conversation with the exact transcript just made.
                await page.select_option("#conversation-device", "kitchen")
                rows = page.locator("#conversations tr[data-conversation]")
                await expect(rows).to_have_count(1)
                await rows.first.locator("button").click()
                transcript = page.locator("#conversation .transcript")
                turn1 = transcript.locator('.turn[data-turn-id="1"]')
                await expect(turn1.locator(".user .text")).to_have_text(
                    "What is the capital of France?"
                )
                await expect(turn1.locator(".reply .text")).to_have_text("Hello to you too.")
                await expect(turn1.locator(".timings .bar-row").first).to_be_visible()
                await expect(turn1.locator(".meta")).to_contain_text("reply audio")
                # The XSS attempt is shown as the text it is.
                turn2 = transcript.locator('.turn[data-turn-id="2"]')
                await expect(turn2.locator(".user .text")).to_have_text(XSS)
                # The interrupted reply is marked, with what was heard; the others are not.
                turn3 = transcript.locator('.turn[data-turn-id="3"]')
                await expect(turn3).to_have_attribute("data-interrupted", "true")
                # What was heard plain, the rest of the reply struck through.
                await expect(turn3.locator(".reply .heard")).to_have_text(heard or "")
                await expect(turn3.locator(".reply .unheard")).not_to_be_empty()
                await expect(turn3.locator(".note")).to_contain_text("interrupted")
                await expect(turn1).to_have_attribute("data-interrupted", "false")
                await expect(turn1.locator(".heard, .unheard")).to_have_count(0)

                # Usage and cost: bob's turns of today in the table and the chart.
                bob_today = page.locator(f'#usage tr[data-user="bob"][data-day="{utc_day(0)}"]')
                await expect(bob_today.locator("td").nth(2)).to_have_text(str(len(costs)))
                cost_cell = bob_today.locator("[data-usd]")
                bar = page.locator(f'#usage-chart rect[data-series="bob"][data-day="{utc_day(0)}"]')
                await expect(bar).to_have_count(1)
                # Latency: each stage's chart has a p50 and a p95 point per day it ran on (the
                # LLM today only: the seeded turns did not time it).
                llm = page.locator('#latency figure[data-stage="llm_first_token_ms"] .point-mark')
                await expect(llm).to_have_count(2)
                await expect(llm.first).to_have_attribute("data-day", utc_day(0))
                spoken = '#latency figure[data-stage="speech_end_to_first_audio_ms"] .point-mark'
                await expect(page.locator(spoken)).to_have_count(2 * 2)
                # Errors: the broken engine's.
                error_row = page.locator('#errors tr[data-code="llm_failed"]').first
                await expect(error_row).to_contain_text("kitchen")
                await expect(error_row).to_contain_text("the model fell over")

                shown_cost = float(await cost_cell.get_attribute("data-usd") or "nan")
                cost_text = await cost_cell.text_content()
                bar_cost = float(await bar.get_attribute("data-value") or "nan")
                seeded_bars = await page.locator("#usage-chart rect.bar-mark").count()
                llm_ms = await llm.evaluate_all("ps => ps.map(p => Number(p.dataset.value))")
                (today, *_) = (await api.get("/latency")).json()["days"]
                xss_ran = await page.evaluate("() => window.__xss")
                images = await page.locator("#conversation img").count()
                shot = await screenshot(page, "admin-page")
            # The session is over: the device goes offline on the next refresh.
            await expect(page.locator('#devices tr[data-device="kitchen"]')).to_have_attribute(
                "data-online", "false", timeout=10_000
            )
    finally:
        await store.close()
    if os.environ.get("VOXGATE_UPDATE_SCREENSHOTS") == "1":  # `make screenshots`
        DOC_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOC_SCREENSHOT)

    assert unexpected(errors) == []
    assert first["user_text"] == "What is the capital of France?" and xss["user_text"] == XSS
    assert failure["code"] == "llm_failed"
    assert len(costs) == 5 and all(cost > 0 for cost in costs), costs
    assert shown_cost == pytest.approx(sum(costs), abs=2e-6)
    assert bar_cost == pytest.approx(shown_cost)
    assert cost_text == (f"${shown_cost:.4f}" if shown_cost >= 0.01 else f"${shown_cost:.6f}")
    # Seeded: ann and (no user) on the two days before today, bob today.
    assert seeded_bars == 4
    assert xss_ran is None and images == 0
    # The points are the API's percentiles of today's turns.
    assert today["day"] == utc_day(0)
    assert llm_ms == [today["stages"]["llm_first_token_ms"][p] for p in ("p50", "p95")]


@bounded(60)
async def test_without_a_token_or_with_a_bad_one_the_page_asks_for_the_token(
    tmp_path: Path,
) -> None:
    async with admin_server(tmp_path) as address, browser_page(None) as (page, errors):
        await open_admin(page, address, token=None)
        await expect(page.locator("#token-form")).to_be_visible()
        await expect(page.locator("#error")).to_have_attribute("data-code", "no_token")
        await expect(page.locator("#status")).to_have_attribute("data-state", "unauthorized")

        await open_admin(page, address, token="not-the-token")
        await expect(page.locator("#error")).to_have_attribute("data-code", "unauthorized")
        assert "#token" not in page.url  # moved out of the address bar
        await expect(page.locator("#error")).to_contain_text("token was refused")
        await expect(page.locator("#token-form")).to_be_visible()
        await screenshot(page, "admin-bad-token")
        stored = await page.evaluate("() => sessionStorage.getItem('voxgate.token')")

        await page.fill("#token", TOKEN)
        await page.click("#token-form button")
        await expect(page.locator("#status")).to_have_attribute("data-state", "ok")
        await expect(page.locator("#error")).to_be_hidden()
        await expect(page.locator("#token-form")).to_be_hidden()
        # A fresh server: every list says it is empty.
        await expect(page.locator("#devices .empty")).to_contain_text("No devices yet")
        await expect(page.locator("#conversations .empty")).to_contain_text("No conversations")
        await expect(page.locator("#usage-chart .empty")).to_contain_text("No usage")
        await expect(page.locator("#latency .empty")).to_contain_text("No turns")
        await expect(page.locator("#errors .empty")).to_have_text("No errors.")
    assert stored is None  # a refused token is forgotten
    assert unexpected(errors, "status of 401") == []


@bounded(60)
async def test_when_the_server_goes_away_the_page_says_so_and_recovers_when_it_is_back(
    tmp_path: Path,
) -> None:
    async with browser_page(None) as (page, errors):
        async with admin_server(tmp_path) as address:
            await open_admin(page, address)
            await expect(page.locator("#status")).to_have_attribute("data-state", "ok")
        # Stopped (as on SIGTERM): the next refresh finds nobody.
        await expect(page.locator("#status")).to_have_attribute("data-state", "offline")
        await expect(page.locator("#error")).to_have_attribute("data-code", "unreachable")
        await expect(page.locator("#error")).to_contain_text("not answering")
        await screenshot(page, "admin-server-gone")
        host, port = address.split(":")
        # Back on the same port: the page picks up by itself.
        restarted = create_app(priced_settings(tmp_path))

        def same_port(config: uvicorn.Config) -> uvicorn.Server:
            config.host, config.port = host, int(port)
            return uvicorn.Server(config)

        async with serving(restarted, same_port):
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "ok", timeout=10_000
            )
            await expect(page.locator("#error")).to_be_hidden()
    assert unexpected(errors, "ERR_CONNECTION_REFUSED") == []


@bounded(60)
async def test_a_device_added_on_the_page_shows_its_token_once_and_can_be_changed_and_revoked(
    tmp_path: Path,
) -> None:
    async with (
        admin_server(tmp_path) as address,
        httpx.AsyncClient(
            base_url=f"http://{address}/api/admin", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as api,
        browser_page(None) as (page, errors),
    ):
        await open_admin(page, address)
        await expect(page.locator("#status")).to_have_attribute("data-state", "ok")
        await page.fill("#user-name", "ann")
        await page.click("#add-user button")
        await expect(page.locator('#device-user option[value="ann"]')).to_have_count(1)
        await page.fill("#device-name", NAME)
        await page.select_option("#device-user", "ann")
        await page.click("#add-device button")
        token = await page.locator("#new-token .token-value").text_content()
        row = page.locator(f"#devices tr[data-device={json.dumps(NAME)}]")
        await expect(row.locator("strong")).to_have_text(NAME)
        await expect(row.locator(".badge")).to_contain_text("never seen")

        # The token shown works on the relay protocol.
        assert token
        async with device_session(address, token):
            await expect(row).to_have_attribute("data-online", "true")

        await row.get_by_label(f"character of {NAME}").select_option("storyteller")
        await row.get_by_label(f"owner of {NAME}").select_option("")
        await expect(row.get_by_label(f"owner of {NAME}")).to_have_value("")
        await page.click("#new-token button:text('Done')")
        await expect(page.locator("#new-token")).to_be_hidden()

        asked: list[str] = []

        async def confirm(dialog: Dialog) -> None:
            asked.append(dialog.message)
            await dialog.accept()

        page.once("dialog", confirm)
        await row.locator("button.danger").click()
        await expect(row).to_have_attribute("data-revoked", "true")
        await expect(row.locator(".badge")).to_contain_text("revoked")
        await expect(row.locator("button.danger")).to_be_disabled()
        # Adding it again is a conflict, shown as such.
        await page.fill("#device-name", NAME)
        await page.click("#add-device button")
        await expect(page.locator("#error")).to_have_attribute("data-code", "conflict")
        await screenshot(page, "admin-devices")
        xss_ran = await page.evaluate("() => window.__xss")
        (stored,) = (await api.get("/devices")).json()["devices"]
    assert unexpected(errors, "status of 409") == []
    assert asked == [f"Revoke {NAME}? Its token stops working at once."]
    assert xss_ran is None
    assert stored["settings"]["character"] == "storyteller"
    assert stored["user"] is None and stored["revoked"]
