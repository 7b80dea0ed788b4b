"""The talk page's hands-free switch in a real browser (headless Chromium, the fake microphone
playing real audio made at test time) against the real server with the real wake-word engine and
fake STT/LLM/TTS: the page shows that it waits for the word while people talk, that it heard it,
then the turn, then that it waits again; the talk before the word never reached the STT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import expect

from tests.fakes import FakeLLM, Fakes, FakeSTT, FakeTTS, bounded
from tests.server_harness import server_settings, serving
from tests.web.test_web_page import TOKEN
from tests.web_browser import browser_page, page_state, screenshot
from voxgate.core.audio import read_wav, write_wav
from voxgate.core.config import ListeningSettings
from voxgate.core.listening import FollowUp
from voxgate.evaluation import normalize_words
from voxgate.models import ModelStore
from voxgate.pipeline import Engines
from voxgate.providers.micro_wakeword import MicroWakeWordSettings, create
from voxgate.server.app import create_app
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips, synthesized

RATE_HZ = 16_000

# Every change of the status line's state, in order (the page's own record would miss none).
RECORD_STATES = """() => {
  window.states = [document.getElementById("status").dataset.state];
  new MutationObserver(() => {
    const state = document.getElementById("status").dataset.state;
    if (window.states.at(-1) !== state) window.states.push(state);
  }).observe(document.getElementById("status"), { attributes: true });
}"""


def microphone_clip(
    tmp_path: Path, question: str = "Hey Jarvis, what is the capital of France?"
) -> Path:
    """Silence, four seconds of LibriVox talk (no wake word), a pause, then ``question`` (flite)
    and silence."""
    clips = librivox_clips()
    if not clips:
        pytest.skip(INSTALL_HINT)
    try:
        said = synthesized(question, "flite", "rms")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    talk = read_wav(clips[0].path)[0][: 4 * RATE_HZ]

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(round(RATE_HZ * seconds), dtype=np.int16)

    path = tmp_path / "hands-free.wav"
    audio = np.concatenate([silence(1.5), talk, silence(1.5), said, silence(4)])
    write_wav(path, audio.astype(np.int16), RATE_HZ)
    return path


@bounded(120)
async def test_hands_free_waits_for_the_word_hears_it_answers_and_waits_again(
    tmp_path: Path,
) -> None:
    stt = FakeSTT(default=lambda audio: "What is the capital of France?")
    fakes = Fakes(stt=stt, llm=FakeLLM(["Paris."]), tts=FakeTTS(ms_per_word=250))
    engines = fakes.engines()
    engines.wake_word = create(MicroWakeWordSettings(), ModelStore(tmp_path / "models"))
    settings = server_settings(tmp_path, admin_token=TOKEN).model_copy(
        update={"listening": ListeningSettings(follow_up=FollowUp.TURN)}
    )
    clip = microphone_clip(tmp_path)
    async with (
        serving(create_app(settings, engines=engines)) as address,
        browser_page(clip) as (page, errors),
    ):
        await page.goto(f"http://{address}/#token={TOKEN}")
        await page.evaluate(RECORD_STATES)
        await page.check("#hands-free")
        await page.click("#start")
        await page.wait_for_function("() => window.voxgate.wake === 'waiting'", timeout=15_000)
        assert "Hey Jarvis" in (await page.inner_text("#status-text"))
        await screenshot(page, "talk-page-hands-free-waiting")
        await page.wait_for_function(
            "() => window.voxgate.events.includes('wake.waiting')", timeout=60_000
        )
        # The reply's last audio still plays: then the page waits for the word again.
        await page.wait_for_function("() => window.voxgate.status === 'waiting'", timeout=10_000)
        events = await page_state(page, "events")
        states = await page.evaluate("() => window.states")
        await screenshot(page, "talk-page-hands-free-answered")
        assert errors.messages == []
    assert isinstance(events, list) and isinstance(states, list)
    assert events[0] == "session.ready"
    assert (
        events.index("wake.detected") < events.index("speech.started") < events.index("turn.done")
    )
    # The page said so at each step: waiting, heard the word, listening (then the reply), waiting.
    shown = [s for s in states if s in {"waiting", "heard", "listening", "thinking", "speaking"}]
    assert shown[0] == "waiting" and shown[-1] == "waiting", states
    assert shown.index("heard") < shown.index("speaking"), states
    assert "waiting" not in shown[1 : shown.index("heard")], states
    # Only the question reached the STT: never the four seconds of talk before the word.
    assert stt.calls and all(len(audio) / RATE_HZ < 4.5 for audio in stt.calls)


@pytest.mark.models
@bounded(300)
async def test_hey_jarvis_what_is_two_plus_three_is_answered_in_the_browser(
    tmp_path: Path, real_engines: Engines
) -> None:
    settings = server_settings(tmp_path, admin_token=TOKEN).model_copy(
        update={"listening": ListeningSettings(follow_up=FollowUp.TURN)}
    )
    clip = microphone_clip(tmp_path, "Hey Jarvis, what is two plus three?")
    async with (
        serving(create_app(settings, engines=real_engines)) as address,
        browser_page(clip) as (page, errors),
    ):
        await page.goto(f"http://{address}/#token={TOKEN}")
        await page.check("#hands-free")
        await page.click("#start")
        first = page.locator('#turns .turn[data-turn-id="1"]')
        await expect(first).to_have_attribute("data-done", "true", timeout=120_000)
        heard = await first.locator(".user .text").text_content() or ""
        reply = await first.locator(".reply .text").text_content() or ""
        await page.wait_for_function("() => window.voxgate.status === 'waiting'", timeout=60_000)
        played = await page_state(page, "player.stats")
        await screenshot(page, "talk-page-hands-free-real")
        assert errors.messages == []
    assert {"two", "plus", "three"} <= set(normalize_words(heard)) or "2" in heard, heard
    assert "five" in normalize_words(reply) or "5" in reply, reply
    assert isinstance(played, dict) and played["peak"] > 0.05  # the answer was heard
