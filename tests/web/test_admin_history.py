"""The admin page's history in a real browser (headless Chromium) against the real server: a
conversation resumed over several sessions reads in the order it was said, the turn counts say
what they count, the conversations page past the first 50, and the talk page's own device
(``browser``) is seen.

The turns are typed over the relay protocol by a device registered on the admin API, answered by
the instant stand-in engines (``tests/web/test_admin_page.py``'s server).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.async_api import expect

from tests.fakes import bounded
from tests.server_harness import open_store
from tests.web.test_admin_page import TOKEN, admin_server, device_session, open_admin, unexpected
from tests.web_browser import browser_page, screenshot
from voxgate.store.writer import ConversationOpened

SESSIONS = (
    ("What is the capital of France?", "And of Italy?"),
    ("How far is the moon?", "Is it made of cheese?"),
    ("Tell me a joke.", "Another one, please."),
)


def admin_api(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://{address}/api/admin", headers={"Authorization": f"Bearer {TOKEN}"}
    )


@bounded(120)
async def test_a_conversation_resumed_over_three_sessions_reads_in_order_with_labelled_counts(
    tmp_path: Path,
) -> None:
    async with (
        admin_server(tmp_path) as address,
        admin_api(address) as api,
        browser_page(None) as (page, errors),
    ):
        added = await api.post("/devices", json={"name": "kitchen"})
        token = added.json()["token"]
        # Three sessions, one after the other: each resumes the device's conversation, and each
        # numbers its turns from 1 again.
        turn_ids = []
        for said in SESSIONS:
            async with device_session(address, token) as device:
                for text in said:
                    turn_ids.append((await device.say(text))["turn_id"])
        (listed,) = (await api.get("/conversations")).json()["conversations"]
        messages = (await api.get(f"/conversations/{listed['id']}")).json()["messages"]

        await open_admin(page, address)
        row = page.locator(f'#conversations tr[data-conversation="{listed["id"]}"]')
        await expect(row.locator("td").nth(4)).to_have_text("6")
        await row.locator("button").click()
        cards = page.locator("#conversation .transcript .turn")
        await expect(cards).to_have_count(6)
        shown = await cards.locator(".user .text").all_text_contents()
        replies = await cards.locator(".reply .text").all_text_contents()
        breaks = await page.locator("#conversation .session-break").all_text_contents()
        # Every count says what it counts.
        label = page.locator('#conversation [data-count="conversation"]')
        await expect(label).to_have_text("6 turns in this conversation, over 3 sessions")
        today = page.locator('#overview [data-tile="turns_today"]')
        await expect(today.locator(".tile-label")).to_have_text("turns today (UTC)")
        await expect(today.locator(".tile-value")).to_have_text("6")
        timed = page.locator('#latency [data-count="latency"]')
        await expect(timed).to_have_text("6 turns with timings in this period")
        await screenshot(page, "admin-resumed-conversation")
    assert unexpected(errors) == []
    assert turn_ids == [1, 2, 1, 2, 1, 2]
    assert shown == [text for said in SESSIONS for text in said]
    assert replies == [m["text"] for m in messages if m["role"] == "assistant"]
    assert [b.split(" · ")[0] for b in breaks] == ["session 2", "session 3"]


@bounded(90)
async def test_the_conversations_page_past_the_first_fifty(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    device, _ = await store.devices.add("clock")
    writer = store.writer
    writer.start()
    # 57 conversations, one a minute, the newest last.
    for n in range(57):
        writer.submit(
            ConversationOpened(f"conv-{n:02d}", device.id, None, None, False, at=1e9 + n * 60)
        )
    assert await writer.flush(10)
    try:
        async with admin_server(tmp_path, store) as address, browser_page(None) as (page, errors):
            await open_admin(page, address)
            rows = page.locator("#conversations tr[data-conversation]")
            await expect(rows).to_have_count(50)
            first_page = await rows.evaluate_all("rs => rs.map(r => r.dataset.conversation)")
            await expect(page.locator("#conversations .newer")).to_be_disabled()
            await page.click("#conversations .older")
            await expect(rows).to_have_count(7)
            await expect(page.locator("#conversations .pager")).to_have_attribute("data-page", "2")
            second_page = await rows.evaluate_all("rs => rs.map(r => r.dataset.conversation)")
            await expect(page.locator("#conversations .older")).to_be_disabled()
            await expect(page.locator("#conversations")).not_to_contain_text("null")
            # The auto-refresh keeps the page the user is on.
            refreshes = await page.evaluate("() => window.voxgateAdmin.refreshes")
            await page.wait_for_function(f"() => window.voxgateAdmin.refreshes > {refreshes}")
            await expect(rows).to_have_count(7)
            await page.click("#conversations .newer")
            await expect(rows).to_have_count(50)
            await expect(rows.first).to_have_attribute("data-conversation", "conv-56")
    finally:
        await store.close()
    assert unexpected(errors) == []
    assert first_page == [f"conv-{n:02d}" for n in range(56, 6, -1)]
    assert second_page == [f"conv-{n:02d}" for n in range(6, -1, -1)]


@bounded(90)
async def test_the_talk_pages_device_is_seen_when_it_talks(tmp_path: Path) -> None:
    async with (
        admin_server(tmp_path) as address,
        admin_api(address) as api,
        browser_page(None) as (talk, errors),
    ):
        await talk.goto(f"http://{address}/#token={TOKEN}")
        await talk.click("#start")
        await expect(talk.locator("#status")).to_have_attribute("data-state", "listening")
        await talk.fill("#text", "Hello there")
        await talk.press("#text", "Enter")
        await expect(talk.locator('#turns .turn[data-turn-id="1"]')).to_have_attribute(
            "data-done", "true"
        )
        browser = talk.context.browser
        assert browser is not None
        admin = await browser.new_page()
        await open_admin(admin, address)
        row = admin.locator('#devices tr[data-device="browser"]')
        await expect(row).to_have_attribute("data-online", "true")
        await talk.close()
        # Gone: offline, and when it was last seen.
        await expect(row).to_have_attribute("data-online", "false", timeout=10_000)
        await expect(row.locator(".badge")).to_contain_text("offline · last seen")
        devices = {d["name"]: d for d in (await api.get("/devices")).json()["devices"]}
    assert unexpected(errors) == []
    assert devices["browser"]["last_seen_at"] is not None
