"""The talk page's turn cards in a real browser (headless Chromium) against the real server with
fake engines: a turn shows as soon as the user ends it and says when it was cut off, an
interrupted reply shows what was heard, a wrapped reply stays beside its label, the timings are
a timeline with a total for typed turns too, and before Start the page says what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from playwright.async_api import Page, expect

from tests.fakes import FakeLLM, Fakes, FakeSTT, FakeTTS, bounded
from tests.web.test_web_page import server, start_talking
from tests.web_browser import SAMPLE_QUESTION, browser_page, page_state, screenshot
from voxgate.core.audio import read_wav, write_wav

QUESTION = "What is the capital of France?"


def two_questions(tmp_path: Path, gap_s: float) -> Path:
    """The sample question twice, ``gap_s`` of silence between (a turn ended, then another)."""
    samples, rate_hz = read_wav(SAMPLE_QUESTION)

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(round(rate_hz * seconds), dtype=np.int16)

    path = tmp_path / "two-questions.wav"
    clip = np.concatenate([silence(0.5), samples, silence(gap_s), samples, silence(1.0)])
    write_wav(path, clip.astype(np.int16), rate_hz)
    return path


@bounded(90)
async def test_a_turn_shows_as_soon_as_it_ends_and_says_when_a_new_one_cut_it_off(
    tmp_path: Path,
) -> None:
    # The STT takes longer than the pause before the second question: the first question is
    # still being transcribed when the user asks again, which cuts it off.
    fakes = Fakes(stt=FakeSTT(default=lambda audio: QUESTION, delay_s=6.0), llm=FakeLLM(["Paris."]))
    engines = fakes.engines()
    async with (
        server(tmp_path, engines) as address,
        browser_page(two_questions(tmp_path, gap_s=1.5)) as (page, errors),
    ):
        await start_talking(page, address)
        cards = page.locator("#turns .turn")
        first = cards.first
        # The first question's card, pending, before any transcript.
        await page.wait_for_function(
            "() => window.voxgate.events.includes('speech.stopped')", timeout=15_000
        )
        await expect(first).to_have_attribute("data-pending", "true", timeout=1_000)
        events_then = await page_state(page, "events")
        pending_text = await first.locator(".user .text").text_content()
        await screenshot(page, "pending-turn")
        # The second question ends the first: cut off, and said so; the second is answered.
        await expect(first).to_have_attribute("data-cut-off", "true", timeout=15_000)
        await expect(first.locator(".note")).to_have_text("cut off before the reply")
        second = cards.nth(1)
        await expect(second.locator(".user .text")).to_have_text(QUESTION, timeout=15_000)
        await expect(second.locator(".reply .text")).to_have_text("Paris.", timeout=10_000)
        await expect(second).to_have_attribute("data-done", "true")
        await expect(cards).to_have_count(2)
        ids = await cards.evaluate_all("cs => cs.map(c => c.dataset.turnId)")
        await screenshot(page, "cut-off-turn")
    engines.close()
    assert errors.messages == []
    assert isinstance(events_then, list) and "asr.final" not in events_then
    assert pending_text == ""
    assert ids[0] != ids[1] and all(ids)


async def line_lefts(page: Page, selector: str) -> list[float]:
    """The left edge of each line box of ``selector``'s text."""
    script = """(sel) => {
      const range = document.createRange();
      range.selectNodeContents(document.querySelector(sel));
      return [...range.getClientRects()].map((r) => r.left);
    }"""
    found: list[float] = await page.evaluate(script, selector)
    return found


async def box(page: Page, selector: str) -> dict[str, float]:
    found = await page.locator(selector).bounding_box()
    assert found is not None, selector
    return found


@bounded(90)
async def test_typed_turns_hints_heard_part_wrapping_and_the_timeline(tmp_path: Path) -> None:
    long_reply = [
        "One two three four five six seven eight nine ten. ",
        "Eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty, ",
        "and so on, all the way up to a very large number that nobody will ever hear.",
    ]
    fakes = Fakes(llm=FakeLLM(long_reply, ["Okay."]), tts=FakeTTS(ms_per_word=250))
    engines = fakes.engines()
    async with server(tmp_path, engines) as address, browser_page(None) as (page, errors):
        await page.goto(f"http://{address}/#token=test-admin-token-0123456789")
        # Before Start: the disabled box says why.
        await expect(page.locator("#start-hint")).to_be_visible()
        await expect(page.locator("#start-hint")).to_contain_text("Start talking")
        await expect(page.locator("#text")).to_be_disabled()
        placeholder = await page.locator("#text").get_attribute("placeholder")
        await page.click("#start")
        await expect(page.locator("#status")).to_have_attribute("data-state", "listening")
        await expect(page.locator("#start-hint")).to_be_hidden()

        await page.fill("#text", "Count for me")
        await page.press("#text", "Enter")
        # Cut in once a few words have played.
        await page.wait_for_function("() => window.voxgate.playedMs(1) > 2500", timeout=10_000)
        await page.fill("#text", "Stop")
        await page.press("#text", "Enter")
        first = page.locator('#turns .turn[data-turn-id="1"]')
        await expect(first).to_have_attribute("data-interrupted", "true")
        second = page.locator('#turns .turn[data-turn-id="2"]')
        await expect(second.locator(".reply .text")).to_have_text("Okay.")
        await expect(second.locator(".timings")).to_be_visible()
        await expect(first.locator(".timings")).to_be_visible()
        heard = await first.locator(".reply .heard").text_content() or ""
        unheard = await first.locator(".reply .unheard").text_content() or ""
        whole = await first.locator(".reply .text").text_content() or ""
        struck = await first.locator(".reply .unheard").evaluate(
            "e => getComputedStyle(e).textDecorationLine"
        )
        plain = await first.locator(".reply .heard").evaluate(
            "e => getComputedStyle(e).textDecorationLine"
        )
        # The wrapped reply stays right of its label.
        label = await box(page, '#turns .turn[data-turn-id="1"] .reply .who')
        lefts = await line_lefts(page, '#turns .turn[data-turn-id="1"] .reply .text')
        # The timeline of the typed turn: a total bar, and the stages end to end within it.
        rows = second.locator(".timings .bar-row")
        stages = await rows.evaluate_all("rs => rs.map(r => r.dataset.stage)")
        bars = {
            stage: await box(page, f'#turns .turn[data-turn-id="2"] [data-stage="{stage}"] .bar')
            for stage in stages
        }
        await screenshot(page, "typed-turns")
    engines.close()
    assert errors.messages == []
    assert placeholder and "Start talking" in placeholder
    assert whole == "".join(long_reply).strip() or whole.startswith("One two three")
    assert heard and unheard and heard + unheard == whole
    assert whole.split()[: len(heard.split())] == heard.split()
    assert struck == "line-through" and plain == "none"
    assert len(lefts) >= 2 and min(lefts) >= label["x"] + label["width"]
    assert stages[-1] == "turn_end_to_first_audio_ms"
    assert {"first_sentence_ms", "tts_first_audio_ms"} <= set(stages)
    sentence, tts, total = (
        bars["first_sentence_ms"],
        bars["tts_first_audio_ms"],
        bars["turn_end_to_first_audio_ms"],
    )
    assert tts["x"] >= sentence["x"] + sentence["width"] - 1  # one after the other
    assert tts["x"] + tts["width"] <= total["x"] + total["width"] + 1
