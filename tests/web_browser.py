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
    microphone_wav: Path | None,
    *,
    allow_microphone: bool = True,
    viewport: tuple[int, int] = (1000, 720),
    phone: bool = False,
) -> AsyncIterator[tuple[Page, PageErrors]]:
    """A fresh headless Chromium and page; the fake microphone plays ``microphone_wav`` once
    (then near-silence), or silence when it is None. Without ``allow_microphone`` the browser
    answers the page's request for the microphone as a user saying no would. ``phone``: a touch
    screen with a mobile browser's layout viewport (``viewport`` is then the phone's size)."""
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
            width, height = viewport
            page = await browser.new_page(
                viewport={"width": width, "height": height},
                is_mobile=phone,
                has_touch=phone,
                device_scale_factor=3 if phone else 1,
            )
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


async def off_screen(page: Page) -> dict[str, object]:
    """How the page fits its window: ``overflow_px`` (how much wider than the window the page
    is), and ``unreachable``: each visible control (button, link, input, select, textarea) that,
    once scrolled to, is not the element found at its centre (it lies off the side of the
    window, or under something else)."""
    script = """async () => {
      const width = document.documentElement.clientWidth;
      const overflow = document.documentElement.scrollWidth - width;
      const unreachable = [];
      const controls = [...document.querySelectorAll("button, a[href], input, select, textarea")];
      for (const control of controls) {
        if (!control.checkVisibility()) continue;
        control.scrollIntoView({ block: "center", inline: "center" });
        await new Promise((done) => requestAnimationFrame(done));
        const box = control.getBoundingClientRect();
        const x = box.left + box.width / 2;
        const y = box.top + box.height / 2;
        const found = document.elementFromPoint(x, y);
        const label = control.closest("label");
        const inside = found && (control.contains(found) || found === label || label?.contains(found));
        if (box.left < 0 || box.right > width + 0.5 || !inside) {
          const name = control.id || control.textContent.trim() || control.getAttribute("aria-label") || control.tagName;
          unreachable.push(`${control.tagName.toLowerCase()} ${name}: ${Math.round(box.left)}-${Math.round(box.right)}`);
        }
      }
      window.scrollTo(0, 0);
      return { overflow_px: overflow, unreachable };
    }"""
    found: dict[str, object] = await page.evaluate(script)
    return found
