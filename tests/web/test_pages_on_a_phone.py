"""Both pages on a phone-sized screen (390 by 844 px, touch, a mobile browser's viewport) in headless
Chromium against the real server: nothing wider than the screen, and every control on them can be
reached and used — on the admin page, with devices, conversations, usage, latency and errors to
show, down to a device's Revoke button."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from playwright.async_api import Dialog, expect

from tests.fakes import bounded
from tests.server_harness import open_store
from tests.store_seed import seed
from tests.web.test_admin_page import TOKEN, admin_server, device_session, open_admin, unexpected
from tests.web_browser import browser_page, off_screen, screenshot

PHONE = (390, 844)


def utc_day(offset_days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=offset_days)).strftime("%Y-%m-%d")


@bounded(120)
async def test_the_admin_page_fits_a_phone_and_every_action_is_in_reach(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await seed(store, days=(utc_day(-2), utc_day(-1)))
    try:
        async with (
            admin_server(tmp_path, store) as address,
            browser_page(None, viewport=PHONE, phone=True) as (page, errors),
        ):
            await open_admin(page, address)
            await expect(page.locator("#status")).to_have_attribute("data-state", "ok")
            # A device with a long name and a turn of today, so every section has rows.
            await page.fill("#device-name", "kitchen-speaker-by-the-window-0123456789")
            await page.fill("#device-mac", "AA:BB:CC:DD:EE:FF")
            await page.click("#add-device button")
            token = await page.locator("#new-token .token-value").text_content()
            assert token
            async with device_session(address, token) as device:
                await device.say("What is the capital of France, and how far away is it?")
            row = page.locator(
                '#devices tr[data-device="kitchen-speaker-by-the-window-0123456789"]'
            )
            await expect(row).to_have_count(1)
            await page.locator("#conversations tr[data-conversation] button").first.click()
            await expect(page.locator("#conversation .transcript .turn").first).to_be_visible()
            await expect(page.locator("#latency figure").first).to_be_visible()
            await expect(page.locator("#errors tr[data-code]").first).to_be_visible()
            fit = await off_screen(page)
            await screenshot(page, "admin-phone")

            # Revoke, with a tap.
            page.once("dialog", lambda dialog: _accept(dialog))
            await row.locator("button.danger").tap()
            await expect(row).to_have_attribute("data-revoked", "true")
    finally:
        await store.close()
    assert unexpected(errors) == []
    assert fit == {"overflow_px": 0, "unreachable": []}


async def _accept(dialog: Dialog) -> None:
    await dialog.accept()


@bounded(60)
async def test_the_talk_page_fits_a_phone_and_every_control_is_in_reach(tmp_path: Path) -> None:
    async with (
        admin_server(tmp_path) as address,
        browser_page(None, viewport=PHONE, phone=True) as (page, errors),
    ):
        await page.goto(f"http://{address}/#token={TOKEN}")
        before = await off_screen(page)
        await page.tap("#start")
        await expect(page.locator("#status")).to_have_attribute("data-state", "listening")
        await page.fill("#text", "Please tell me something rather long about the sea and ships.")
        await page.tap("#send")
        turn = page.locator('#turns .turn[data-turn-id="1"]')
        await expect(turn).to_have_attribute("data-done", "true")
        after = await off_screen(page)
        await screenshot(page, "talk-phone")
    assert unexpected(errors) == []
    assert before == {"overflow_px": 0, "unreachable": []}
    assert after == {"overflow_px": 0, "unreachable": []}
