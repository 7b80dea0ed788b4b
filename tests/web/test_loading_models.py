"""While the server loads its models it already listens (as ``voxgate serve`` does): both pages
load in a real browser (headless Chromium), say "loading models" rather than fail, and carry on
by themselves once the models are ready. The engines here are the fakes, held back by the test
until it lets them load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from playwright.async_api import expect

from tests.fakes import FakeLLM, Fakes, bounded
from tests.server_harness import server_settings, serving
from tests.web_browser import browser_page, screenshot
from voxgate.pipeline import Engines
from voxgate.server.app import create_app

TOKEN = "loading-token-0123456789"


@bounded(90)
async def test_the_pages_say_loading_models_until_the_server_is_ready_then_work(
    tmp_path: Path,
) -> None:
    engines = Fakes(llm=FakeLLM(["Ready now."])).engines()
    let_load = asyncio.Event()

    async def load() -> Engines:
        await let_load.wait()
        return engines

    app = create_app(server_settings(tmp_path, admin_token=TOKEN), engines=load)
    async with (
        serving(app) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as client,
        browser_page(None) as (talk, errors),
    ):
        health = await client.get("/healthz")
        api = await client.get("/api/admin/overview", headers={"Authorization": f"Bearer {TOKEN}"})
        await talk.goto(f"http://{address}/#token={TOKEN}")
        await talk.click("#start")
        await expect(talk.locator("#status")).to_have_attribute("data-state", "loading")
        await expect(talk.locator("#status-text")).to_have_text("loading models…")
        await expect(talk.locator("#error")).to_have_attribute("data-code", "loading_models")
        await expect(talk.locator("#reconnect")).to_be_hidden()
        browser = talk.context.browser
        assert browser is not None
        admin = await browser.new_page()
        await admin.goto(f"http://{address}/admin#token={TOKEN}")
        await expect(admin.locator("#status")).to_have_attribute("data-state", "loading")
        await expect(admin.locator("#error")).to_contain_text("loading its models")
        await screenshot(talk, "talk-loading-models")
        await screenshot(admin, "admin-loading-models")
        # Some tries later the models are there: both pages carry on by themselves.
        await asyncio.sleep(3)
        let_load.set()
        await expect(talk.locator("#status")).to_have_attribute(
            "data-state", "listening", timeout=10_000
        )
        await expect(talk.locator("#error")).to_be_hidden()
        await expect(talk.locator("#character-picker")).to_be_visible()
        await talk.fill("#text", "Are you ready?")
        await talk.press("#text", "Enter")
        await expect(talk.locator("#turns .turn .reply .text")).to_have_text("Ready now.")
        await expect(admin.locator("#status")).to_have_attribute("data-state", "ok", timeout=10_000)
        await expect(admin.locator("#error")).to_be_hidden()
        ready = await client.get("/healthz")
    engines.close()
    # Chromium logs the 503s the admin page was answered while loading.
    assert [m for m in errors.messages if "status of 503" not in m] == []
    assert health.status_code == 503 and health.json()["status"] == "loading_models"
    assert api.status_code == 503 and api.json()["error"]["code"] == "loading_models"
    assert ready.status_code == 200 and ready.json()["models_ready"] is True
