"""Driving the web page in a real browser: Debian's Chromium through Playwright, headless, with a
fake microphone that plays a WAV file.

``playwright install`` cannot download browsers on these machines; the project's set-up installs
Debian's ``chromium`` and the tests launch that binary. Screenshots go to ``tests/artifacts/``
(git-ignored).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from playwright.async_api import ConsoleMessage, Page, async_playwright

from voxgate.core.audio import read_wav, write_wav

ARTIFACTS = Path(__file__).parent / "artifacts"
SAMPLE_QUESTION = Path(__file__).parents[1] / "voxgate" / "samples" / "question.wav"
""""What is the capital of France?" (16 kHz mono), the clip ``make talk`` answers."""


def chromium_path() -> str:
    path = shutil.which("chromium")
    assert path, "Debian's chromium is not installed (apt-get install chromium; `make test` does)"
    return path


def padded_clip(tmp_path: Path, source: Path = SAMPLE_QUESTION, *, lead_s: float = 0.5) -> Path:
    """``source`` after ``lead_s`` of silence: the fake microphone starts playing when the page
    opens it, and the page's audio graph needs a moment to start pulling."""
    samples, rate_hz = read_wav(source)
    lead = np.zeros(round(rate_hz * lead_s), dtype=np.int16)
    path = tmp_path / "clip.wav"
    write_wav(path, np.concatenate([lead, samples]).astype(np.int16), rate_hz)
    return path


class PageErrors:
    """JavaScript errors and console errors of a page: a test that passes with them is wrong."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("pageerror", lambda error: self.messages.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # Chromium logs a failed WebSocket handshake (the server gone: expected there) and any
        # failed fetch as console errors; a 404 of the character list is how a server without
        # characters answers.
        url = message.location.get("url", "")
        if "WebSocket connection" in message.text or url.endswith("/api/characters"):
            return
        self.messages.append(f"console error: {message.text} ({url})")


@asynccontextmanager
async def browser_page(
    microphone_wav: Path | None, *, allow_microphone: bool = True
) -> AsyncIterator[tuple[Page, PageErrors]]:
    """A fresh headless Chromium and page; the fake microphone plays ``microphone_wav`` once
    (then near-silence), or silence when it is None. Without ``allow_microphone`` the browser
    answers the page's request for the microphone as a user saying no would."""
    args = ["--use-fake-device-for-media-stream"]
    if allow_microphone:
        args.append("--use-fake-ui-for-media-stream")  # grants the permission prompt
    if microphone_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone_wav}%noloop")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=args
        )
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 720})
            errors = PageErrors(page)
            yield page, errors
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def page_state(page: Page, expression: str) -> object:
    """``window.voxgate``'s ``expression`` (e.g. ``"player.stats"``)."""
    return await page.evaluate(f"() => window.voxgate.{expression}")
