"""Characters on the admin page, in a real browser (headless Chromium) against the real server:
listed, added, edited (prompt, voice, first message) and deleted (not the built-in ones), and the
device picker offering what was saved."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.async_api import Dialog, expect

from tests.fakes import bounded
from tests.web.test_admin_page import TOKEN, admin_server, open_admin, unexpected
from tests.web_browser import browser_page, screenshot

PROMPT = "You are Ada, who answers in rhymes. <b>not markup</b>"


@bounded(90)
async def test_characters_are_listed_added_edited_and_deleted_on_the_admin_page(
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
        rows = page.locator("#characters tr[data-character]")
        # The built-in ones, marked, without a Delete button.
        await expect(rows).to_have_count(3)
        built_in = page.locator('#characters tr[data-built-in="true"]')
        await expect(built_in).to_have_count(3)
        await expect(built_in.locator("button.danger")).to_have_count(0)

        # Add one.
        await page.fill("#character-slug", "ada")
        await page.fill("#character-name", "Ada")
        await page.fill("#character-description", "Answers in rhymes.")
        await page.fill("#character-prompt", PROMPT)
        await page.fill("#character-first-message", "Hello, in rhyme I shall reply.")
        await page.click("#character-save")
        ada = page.locator('#characters tr[data-character="ada"]')
        await expect(ada).to_have_attribute("data-built-in", "false")
        await expect(ada).to_contain_text("Hello, in rhyme I shall reply.")
        # A device can be given it at once.
        await api.post("/devices", json={"name": "desk"})
        picker = page.get_by_label("character of desk")
        await expect(picker.locator('option[value="ada"]')).to_have_count(1)

        # Edit a built-in one: its form comes filled in, the id fixed.
        await page.locator('#characters tr[data-character="toy"] button.edit').click()
        await expect(page.locator("#character-slug")).to_have_value("toy")
        await expect(page.locator("#character-slug")).to_have_attribute("readonly", "")
        await expect(page.locator("#character-name")).to_have_value("Pip")
        await page.fill("#character-prompt", "You are Pip, and you only ever say squeak.")
        await page.fill("#character-voice", "squeaky-1")
        await page.fill("#character-first-message", "")
        await page.click("#character-save")
        toy = page.locator('#characters tr[data-character="toy"]')
        await expect(toy).to_contain_text("squeaky-1")
        await expect(page.locator("#character-slug")).to_have_value("")
        await screenshot(page, "admin-characters")

        # Delete the added one, after a confirmation.
        asked: list[str] = []

        async def confirm(dialog: Dialog) -> None:
            asked.append(dialog.message)
            await dialog.accept()

        page.once("dialog", confirm)
        await ada.locator("button.danger").click()
        await expect(ada).to_have_count(0)
        await expect(picker.locator('option[value="ada"]')).to_have_count(0)
        # A bad id is refused with the store's reason.
        await page.fill("#character-slug", "Not An Id!")
        await page.fill("#character-name", "X")
        await page.fill("#character-prompt", "x")
        await page.evaluate(
            "() => document.getElementById('character-slug').removeAttribute('pattern')"
        )
        await page.click("#character-save")
        await expect(page.locator("#error")).to_have_attribute("data-code", "bad_request")
        stored = {c["slug"]: c for c in (await api.get("/characters")).json()["characters"]}
        ran = await page.evaluate("() => document.querySelectorAll('#characters b').length")
    assert unexpected(errors, "status of 400") == []
    assert asked == ["Delete the character Ada (ada)? Devices using it talk as the default."]
    assert set(stored) == {"assistant", "toy", "storyteller"}
    assert stored["toy"]["system_prompt"] == "You are Pip, and you only ever say squeak."
    assert stored["toy"]["voice"] == "squeaky-1" and stored["toy"]["first_message"] is None
    assert stored["toy"]["name"] == "Pip" and stored["toy"]["built_in"]
    assert ran == 0
