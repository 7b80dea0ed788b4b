"""The web page ``/`` in a real browser (headless Chromium, fake microphone playing real speech),
talking to the real server over a loopback socket.

With fake engines: the page's plumbing (transcript, reply, audio played, timings, errors). With
the real models (``models``): the sample question is heard, answered and played, and barge-in
stops a reply. Screenshots land in ``tests/artifacts/``; the real-model test also refreshes
``docs/screenshots/talk-page.png`` (README) when ``VOXGATE_UPDATE_SCREENSHOTS=1`` (`make screenshots`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import websockets
from playwright.async_api import Page, expect

from tests.fakes import FakeLLM, Fakes, FakeSTT, FakeTTS, bounded
from tests.server_harness import server_settings, serving
from tests.web_browser import browser_page, padded_clip, page_state, screenshot
from voxgate.evaluation import normalize_words
from voxgate.pipeline import Engines
from voxgate.server.app import create_app

TOKEN = "test-admin-token-0123456789"
DOC_SCREENSHOT = Path(__file__).parents[2] / "docs" / "screenshots" / "talk-page.png"


@asynccontextmanager
async def server(tmp_path: Path, engines: Engines, **overrides: object) -> AsyncIterator[str]:
    """The real app on 127.0.0.1 with the admin token :data:`TOKEN`; yields ``host:port``.
    Its state (devices, ...) is whatever the app opens by itself in ``tmp_path``."""
    settings = server_settings(tmp_path, admin_token=TOKEN, **overrides)
    async with serving(create_app(settings, engines=engines)) as address:
        yield address


def spoken_turn_fakes() -> Fakes:
    return Fakes(
        # Every call (a speculative one may be dropped) hears the same words.
        stt=FakeSTT(default=lambda audio: "What is the capital of France?"),
        llm=FakeLLM(["The capital ", "of France ", "is Paris."]),
        tts=FakeTTS(ms_per_word=250),
    )


async def start_talking(page: Page, address: str, token: str = TOKEN) -> None:
    await page.goto(f"http://{address}/#token={token}")
    await page.click("#start")


# ---------------------------------------------------------------------------------------------
# Without a browser


async def test_the_page_and_its_modules_are_served_and_elato_keeps_the_websocket_root(
    tmp_path: Path,
) -> None:
    engines = Fakes().engines()
    async with (
        server(tmp_path, engines) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        page = await client.get("/")
        module = await client.get("/static/app.js")
        worklet = await client.get("/static/mic-worklet.js")
        missing = await client.get("/static/nothing.js")
        # The ElatoAI firmware's WebSocket on "/" still reaches the Elato transport, which
        # answers a connection without a token with 401 (no route at all would be 403).
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"ws://{address}/"):
                pass
    engines.close()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="static/app.js">' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert "registerProcessor" in worklet.text
    assert missing.status_code == 404
    assert refused.value.response.status_code == 401


# ---------------------------------------------------------------------------------------------
# In the browser, fake engines


@bounded(60)
async def test_a_spoken_turn_shows_the_transcript_the_reply_plays_audio_and_the_timings(
    tmp_path: Path,
) -> None:
    fakes = spoken_turn_fakes()
    engines = fakes.engines()
    async with (
        server(tmp_path, engines) as address,
        browser_page(padded_clip(tmp_path)) as (page, errors),
    ):
        await start_talking(page, address)
        assert "#token" not in page.url  # moved out of the address bar
        turn = page.locator("#turns .turn").first
        await expect(turn.locator(".user .text")).to_have_text("What is the capital of France?")
        await expect(turn.locator(".reply .text")).to_have_text(
            "The capital of France is Paris.", timeout=10_000
        )
        await expect(turn.locator(".timings")).to_be_visible(timeout=10_000)
        stages = await turn.locator(".timings .bar-row").evaluate_all(
            "rows => rows.map(row => row.dataset.stage)"
        )
        await page.wait_for_function(
            "() => window.voxgate.player.stats.sourcesEnded >= 6", timeout=10_000
        )
        stats = await page_state(page, "player.stats")
        await expect(page.locator("#status")).to_have_attribute("data-state", "listening")
        await screenshot(page, "fake-spoken-turn")
    engines.close()
    assert errors.messages == []
    assert "stt_ms" in stages and "tts_first_audio_ms" in stages
    # The page measured the network part of the wait (uplink send time → first audio arrival).
    assert "network_ms" in stages
    assert isinstance(stats, dict)
    # FakeTTS: 6 words of 250 ms at 22.05 kHz, resampled to the page's 24 kHz.
    assert stats["samplesScheduled"] == pytest.approx(6 * 0.25 * 24_000, rel=0.02)
    assert stats["peak"] > 0.01  # the analyser saw the audio pass on its way to the speakers
    assert stats["sourcesStopped"] == 0
    assert fakes.stt.calls, "the server heard the page's microphone"


@bounded(60)
async def test_a_bad_token_shows_a_clear_error_and_asks_for_the_token(tmp_path: Path) -> None:
    engines = Fakes().engines()
    async with server(tmp_path, engines) as address, browser_page(None) as (page, errors):
        await start_talking(page, address, token="not-the-token")
        await expect(page.locator("#error")).to_have_attribute("data-code", "unauthorized")
        await expect(page.locator("#error")).to_contain_text("token was refused")
        await expect(page.locator("#token-form")).to_be_visible()
        await expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        await screenshot(page, "bad-token")
        # The right token, typed into the form, connects.
        await page.fill("#token", TOKEN)
        await page.click("#token-form button")
        await expect(page.locator("#status")).to_have_attribute("data-state", "listening")
        await expect(page.locator("#error")).to_be_hidden()
    engines.close()
    assert errors.messages == []


@bounded(60)
async def test_when_the_server_goes_away_the_page_says_so_and_offers_to_reconnect(
    tmp_path: Path,
) -> None:
    engines = Fakes().engines()
    async with browser_page(None) as (page, errors):
        async with server(tmp_path, engines) as address:
            await start_talking(page, address)
            await expect(page.locator("#status")).to_have_attribute("data-state", "listening")
            await expect(page.locator("#reconnect")).to_be_hidden()
        # The server has stopped (as on SIGTERM).
        await expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        await expect(page.locator("#error")).to_be_visible()
        await expect(page.locator("#reconnect")).to_be_visible()
        await expect(page.locator("#text")).to_be_disabled()
        await screenshot(page, "server-gone")
        # Nobody listens on that port any more: reconnecting fails, and says so.
        await page.click("#reconnect")
        await expect(page.locator("#error")).to_have_attribute("data-code", "unreachable")
        await expect(page.locator("#reconnect")).to_be_visible()
    engines.close()
    assert errors.messages == []


@bounded(60)
async def test_a_typed_turn_over_a_reply_interrupts_it_and_its_queued_audio_stops(
    tmp_path: Path,
) -> None:
    long_reply = ["One two three four five six seven eight. ", "Nine ten eleven twelve."]
    fakes = Fakes(llm=FakeLLM(long_reply, ["Okay."]), tts=FakeTTS(ms_per_word=400))
    engines = fakes.engines()
    async with server(tmp_path, engines) as address, browser_page(None) as (page, errors):
        await start_talking(page, address)
        await expect(page.locator("#status")).to_have_attribute("data-state", "listening")
        await page.fill("#text", "Count to twelve")
        await page.press("#text", "Enter")
        await expect(page.locator("#status")).to_have_attribute("data-state", "speaking")
        first = page.locator('#turns .turn[data-turn-id="1"]')
        await page.fill("#text", "Stop counting")
        await page.press("#text", "Enter")
        # reply.interrupted for turn 1 (no local stop: a typed turn leaves that to the server).
        await expect(first).to_have_attribute("data-interrupted", "true")
        await expect(first.locator(".note")).to_contain_text("interrupted")
        stopped = await page_state(page, "player.stats")
        second = page.locator('#turns .turn[data-turn-id="2"]')
        await expect(second.locator(".reply .text")).to_have_text("Okay.")
        await page.wait_for_function("() => !window.voxgate.player.playing", timeout=10_000)
        await screenshot(page, "typed-barge-in")
    engines.close()
    assert errors.messages == []
    assert isinstance(stopped, dict) and stopped["sourcesStopped"] >= 1
    assert fakes.llm.calls[1][-1].content == "Stop counting"


@bounded(60)
async def test_the_character_picker_lists_the_stored_characters_and_the_choice_is_used(
    tmp_path: Path,
) -> None:
    fakes = Fakes(llm=FakeLLM(["Once upon a time."]))
    engines = fakes.engines()
    async with server(tmp_path, engines) as address, browser_page(None) as (page, errors):
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            refused = await client.get("/api/characters")
            wrong = await client.get("/api/characters", headers={"Authorization": "Bearer x"})
        await start_talking(page, address)
        await expect(page.locator("#character-picker")).to_be_visible()
        offered = await page.locator("#character option").evaluate_all(
            "options => options.map(option => option.value)"
        )
        await page.select_option("#character", "storyteller")
        await expect(page.locator("#character-description")).to_contain_text("stories")
        await expect(page.locator("#status")).to_have_attribute("data-state", "listening")
        await page.fill("#text", "Tell me a story")
        await page.press("#text", "Enter")
        turn = page.locator("#turns .turn").last
        await expect(turn.locator(".reply .text")).to_have_text("Once upon a time.")
    engines.close()
    assert errors.messages == []
    assert refused.status_code == 401 and wrong.status_code == 401
    assert {"assistant", "toy", "storyteller"} <= set(offered)
    system = fakes.llm.calls[-1][0]
    assert system.role == "system" and "storyteller" in system.content


@bounded(60)
async def test_a_denied_microphone_is_explained_and_typing_still_works(tmp_path: Path) -> None:
    fakes = Fakes(llm=FakeLLM(["Hello there."]))
    engines = fakes.engines()
    async with (
        server(tmp_path, engines) as address,
        browser_page(None, allow_microphone=False) as (page, errors),
    ):
        await start_talking(page, address)
        await expect(page.locator("#error")).to_have_attribute("data-code", "microphone")
        await expect(page.locator("#error")).to_contain_text("Microphone access was denied")
        await expect(page.locator("#status-text")).to_have_text("ready — type below")
        await screenshot(page, "microphone-denied")
        await page.fill("#text", "Hello")
        await page.press("#text", "Enter")
        reply = page.locator('#turns .turn[data-turn-id="1"] .reply .text')
        await expect(reply).to_have_text("Hello there.")
        mic = await page_state(page, "mic")
    engines.close()
    assert errors.messages == []
    assert mic is None


# ---------------------------------------------------------------------------------------------
# In the browser, the real models


@pytest.mark.models
@bounded(300)
async def test_real_speech_is_heard_answered_and_played_and_barge_in_stops_the_reply(
    tmp_path: Path, real_engines: Engines
) -> None:
    async with (
        server(tmp_path, real_engines) as address,
        browser_page(padded_clip(tmp_path)) as (page, errors),
    ):
        await start_talking(page, address)
        first = page.locator('#turns .turn[data-turn-id="1"]')
        await expect(first).to_have_attribute("data-done", "true", timeout=60_000)
        heard = await first.locator(".user .text").text_content() or ""
        reply = await first.locator(".reply .text").text_content() or ""
        stages = await first.locator(".timings .bar-row").evaluate_all(
            "rows => rows.map(row => row.dataset.stage)"
        )
        await page.wait_for_function(
            "() => !window.voxgate.player.playing && window.voxgate.player.stats.sourcesEnded > 0",
            timeout=30_000,
        )
        played = await page_state(page, "player.stats")
        received_ms = await page_state(page, "audioReceivedMs")

        # Barge-in with the Stop button, while a long reply plays.
        await page.fill("#text", "Tell me a story about a dragon who learns to bake bread.")
        await page.press("#text", "Enter")
        await page.wait_for_function("() => window.voxgate.player.playing", timeout=60_000)
        await expect(page.locator("#status")).to_have_attribute("data-state", "speaking")
        await page.click("#stop")
        second = page.locator('#turns .turn[data-turn-id="2"]')
        await expect(second).to_have_attribute("data-interrupted", "true", timeout=10_000)
        await page.wait_for_function("() => !window.voxgate.player.playing", timeout=5_000)
        await page.wait_for_function("() => window.voxgate.outputLevel() < 0.001", timeout=5_000)
        after_stop = await page_state(page, "player.stats")

        # Barge-in by a new typed turn: the server's reply.interrupted stops the audio.
        await page.fill("#text", "Tell me another story, about a cat who sails the sea.")
        await page.press("#text", "Enter")
        await page.wait_for_function(
            "() => window.voxgate.player.playing && window.voxgate.events.filter("
            "e => e === 'reply.started').length >= 3",
            timeout=60_000,
        )
        await page.fill("#text", "Thank you, that is enough.")
        await page.press("#text", "Enter")
        third = page.locator('#turns .turn[data-turn-id="3"]')
        await expect(third).to_have_attribute("data-interrupted", "true", timeout=10_000)
        after_typed = await page_state(page, "player.stats")
        fourth = page.locator('#turns .turn[data-turn-id="4"]')
        await expect(fourth).to_have_attribute("data-done", "true", timeout=60_000)
        await page.wait_for_function("() => !window.voxgate.player.playing", timeout=30_000)
        await expect(page.locator("#status")).to_have_attribute("data-state", "listening")
        shot = await screenshot(page, "talk-page")
    if os.environ.get("VOXGATE_UPDATE_SCREENSHOTS") == "1":  # `make screenshots`
        DOC_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOC_SCREENSHOT)

    assert errors.messages == []
    assert {"capital", "france"} <= set(normalize_words(heard)), heard
    assert reply.strip()
    assert {"stt_ms", "llm_first_token_ms", "tts_first_audio_ms"} <= set(stages)
    assert isinstance(played, dict) and isinstance(received_ms, int | float)
    # Every sample received was scheduled and played through the analyser, none stopped.
    assert played["samplesScheduled"] == pytest.approx(received_ms / 1000 * 24_000, rel=0.01)
    assert played["sourcesStopped"] == 0 and played["peak"] > 0.05
    assert isinstance(after_stop, dict) and after_stop["sourcesStopped"] >= 1
    assert isinstance(after_typed, dict)
    assert after_typed["sourcesStopped"] > after_stop["sourcesStopped"]
