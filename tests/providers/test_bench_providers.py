"""``voxgate bench providers``: stand-in engines (instant), a priced OpenAI-compatible stand-in
LLM that reports its token counts, cloud engines without keys, and the real local engines."""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.stand_in import Exchange, Request, StandIn, closed_port_url, serving
from voxgate.benchmarks import candidates as cands
from voxgate.benchmarks.providers import Inputs, run_benchmark, turn_costs
from voxgate.benchmarks.report import COLUMNS, TITLES
from voxgate.commands.bench import bench_app
from voxgate.core.audio import read_wav
from voxgate.core.config import Price, Settings
from voxgate.core.errors import ConfigError
from voxgate.evaluation import word_errors
from voxgate.models import ModelStore
from voxgate.providers.deepgram_stt import DeepgramSTTSettings
from voxgate.providers.elevenlabs_tts import ElevenLabsSettings
from voxgate.providers.faster_whisper_stt import FasterWhisperSettings
from voxgate.providers.openai_llm import OpenAILLMSettings
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips

CLIPS = librivox_clips()
pytestmark = pytest.mark.skipif(not CLIPS, reason=f"no LibriVox clips: {INSTALL_HINT}")

STANDIN_HEARS = "hello there"  # what the stand-in STT answers to any audio
STANDIN_REPLY = "Hello to you too."
PER_AUDIO_MINUTE = 0.6
ENGINES_TOML = """
[[stt]]
provider = "standin"
model = "free"

[[stt]]
provider = "standin"
model = "priced"

[[stt]]                 # a cloud engine without a key: skipped, not a failure
provider = "deepgram"
model = "nova-3"

[[llm]]
provider = "standin"
model = "fixed-reply"

[[tts]]
provider = "standin"
voice = "tone"

[judge]
provider = "standin"
"""
CONFIG_TOML = f"""
[prices."standin/priced"]
per_audio_minute = {PER_AUDIO_MINUTE}
"""


class _NoModels:
    def resolve(self, name_or_path: str) -> Path:
        raise AssertionError("stand-in and cloud engines need no model")


def _wer(pairs: list[tuple[str, str]]) -> float:
    errors = words = 0
    for reference, hypothesis in pairs:
        e, w = word_errors(reference, hypothesis)
        errors, words = errors + e, words + w
    return round(errors / words, 4)


def _cli(args: list[str], tmp_path: Path, engines_toml: str, config_toml: str = "") -> Any:
    """Runs the command as ``voxgate bench providers`` (voxgate/cli.py adds bench_app as
    ``bench``), with ``engines_toml`` as the engines file and ``config_toml`` as the config."""
    engines = tmp_path / "engines.toml"
    engines.write_text(engines_toml)
    config = tmp_path / "voxgate.toml"
    config.write_text(config_toml)
    app = typer.Typer()
    app.add_typer(bench_app, name="bench")
    return CliRunner().invoke(
        app,
        ["bench", "providers", "--engines", str(engines), "--config", str(config), *args],
        env={"COLUMNS": "200"},
    )


class _Tables(HTMLParser):
    """Each ``<table>`` of a page as rows of cell texts, keyed by the ``<h2>`` before it."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._title = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self._in, self._title = "h2", ""
        elif tag == "tr":
            self.tables.setdefault(self._title, []).append([])
        elif tag in ("td", "th"):
            self._in = "cell"
            self.tables[self._title][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "td", "th"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h2":
            self._title += data
        elif self._in == "cell":
            self.tables[self._title][-1][-1] += data


def _matches(cell: str, value: float) -> bool:
    """Whether a table cell (``235``, ``8.5%``, ``$0.000710``, ``$0``) shows ``value``, to the
    precision it is printed with."""
    text = cell.strip("$%")
    decimals = len(text.partition(".")[2])
    scale = 100.0 if cell.endswith("%") else 1.0
    return abs(float(text) - value * scale) <= 0.5 * 10**-decimals + 1e-12


def test_standin_run_writes_table_png_html_and_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--clips", "2", "--prompts", "2", "--sentences", "3", "-o", str(out)]
    result = _cli(args, tmp_path, ENGINES_TOML, CONFIG_TOML)
    assert result.exit_code == 0, result.output

    names = ["standin/free", "standin/priced", "deepgram/nova-3", "standin/fixed-reply"]
    names.append("standin/tone")
    for name in names:  # the terminal table lists every engine
        assert name in result.output
    assert "skipped" in result.output and "stt.api_key" in result.output

    data = json.loads((out / "results.json").read_text())
    engines = {e["name"]: e for e in data["engines"]}
    assert list(engines) == names
    assert [e["status"] for e in data["engines"]] == ["ok", "ok", "skipped", "ok", "ok"]
    assert data["inputs"]["clips"] == [clip.name for clip in CLIPS[:2]]
    assert data["judge"] == "standin/standin"  # the stand-in STT's own default model

    # Plausible figures: what the stand-ins say is known, so their WER and cost are too.
    clips = CLIPS[:2]
    free, priced = engines["standin/free"], engines["standin/priced"]
    assert free["figures"]["wer"] == _wer([(c.transcript, STANDIN_HEARS) for c in clips])
    assert [s["text"] for s in free["samples"]] == [STANDIN_HEARS] * 2
    assert free["figures"]["cost_per_clip_usd"] == 0
    seconds = [len(read_wav(c.path)[0]) / read_wav(c.path)[1] for c in clips]
    expected = sum(s / 60 * PER_AUDIO_MINUTE for s in seconds) / len(seconds)
    assert priced["figures"]["cost_per_clip_usd"] == pytest.approx(expected, rel=1e-5)
    assert 0 <= free["figures"]["transcript_median_ms"] <= free["figures"]["transcript_p95_ms"]
    llm = engines["standin/fixed-reply"]
    assert [s["reply"] for s in llm["samples"]] == [STANDIN_REPLY] * 2
    assert llm["figures"]["reply_chars"] == len(STANDIN_REPLY)
    tts = engines["standin/tone"]
    sentences = data["inputs"]["sentences"]
    assert len(sentences) == 3
    assert tts["figures"]["intelligibility_wer"] == _wer([(s, STANDIN_HEARS) for s in sentences])
    # The stand-in speaks 200 ms a word, far faster than real time.
    assert [s["audio_s"] for s in tts["samples"]] == [
        round(0.2 * len(s.split()), 3) for s in sentences
    ]
    assert all(0 < s["real_time_factor"] < 0.5 for s in tts["samples"])
    assert 0 < tts["figures"]["real_time_factor"] < 0.5
    turns = {(t["stt"], t["tts"]): t["cost_usd"] for t in data["turns"]}
    assert turns == {
        ("standin/free", "standin/tone"): 0,
        ("standin/priced", "standin/tone"): priced["figures"]["cost_per_clip_usd"],
    }

    png = (out / "providers.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (1100, 700)
    assert len(png) > 20_000  # bars, labels and text, not an empty canvas

    page = (out / "providers.html").read_text()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    for name in names:
        assert name in page
    # Every figure in the page's tables is the JSON's, as formatted.
    parser = _Tables()
    parser.feed(page)
    for capability in COLUMNS:
        header, *rows = parser.tables[TITLES[capability]]
        assert [row[0] for row in rows] == [
            e["name"] for e in data["engines"] if e["capability"] == capability
        ]
        for row in rows:
            figures = engines[row[0]]["figures"]
            for (key, label, _), cell in zip(COLUMNS[capability], row[1:-1], strict=True):
                assert header[1 + [k for k, _, _ in COLUMNS[capability]].index(key)] == label
                if figures.get(key) is None:
                    assert cell == "-"
                else:
                    assert _matches(cell, figures[key]), (row[0], key, cell, figures[key])
    (header, *turn_rows) = parser.tables["Cost per turn (estimated)"]
    assert len(turn_rows) == 2
    for row in turn_rows:
        assert _matches(row[3], turns[(row[0], row[2])])


def test_engines_file_mistakes_are_clear_errors(tmp_path: Path) -> None:
    result = _cli([], tmp_path, '[[stt]]\nprovider = "faster-whisper"\nbeam_size = 0\n')
    assert result.exit_code == 1
    assert "engines.toml: stt.0.beam_size: Input should be greater than or equal to 1" in (
        " ".join(result.output.split())
    )
    result = _cli([], tmp_path, '[[stt]]\nprovider = "standin"\nbeam_size = 2\n')
    assert result.exit_code == 1
    assert (
        "stt.0.beam_size: not a setting of the standin STT engine (only of faster-whisper)"
        in " ".join(result.output.split())
    )
    result = _cli([], tmp_path, '[[sst]]\nprovider = "standin"\n')  # a typo: not ignored
    assert result.exit_code == 1
    assert "sst: Extra inputs are not permitted" in " ".join(result.output.split())
    result = _cli([], tmp_path, "[[stt]\n")
    assert result.exit_code == 1
    assert "engines.toml:" in result.output
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        cands.read_engines_file(missing, cands.from_settings(Settings()))


def test_default_candidates_are_the_configured_engines_and_their_fallbacks() -> None:
    settings = Settings.model_validate(
        {"tts": {"provider": "elevenlabs", "fallbacks": [{"provider": "piper"}]}}
    )
    found = cands.with_standin(cands.from_settings(settings))
    assert cands.labels("tts", found.tts) == [
        "elevenlabs/eleven_flash_v2_5",  # its own default model, not the Piper voice
        "piper/en_US-joe-medium",
        "standin/tone",
    ]
    assert [s.provider for s in found.stt] == ["faster-whisper", "standin"]
    assert all(not s.fallbacks for s in found.tts)  # each engine is measured alone
    assert found.judge == FasterWhisperSettings()
    assert cands.labels("llm", [cands.STANDIN_LLM] * 2) == [
        "standin/fixed-reply",
        "standin/fixed-reply #2",
    ]


async def test_cloud_engines_without_a_key_or_server_are_skipped_with_the_reason() -> None:
    candidates = cands.Candidates(
        stt=[DeepgramSTTSettings(), cands.STANDIN_STT],
        llm=[OpenAILLMSettings(base_url=closed_port_url("/v1"), model="gpt-x")],
        tts=[ElevenLabsSettings(), cands.STANDIN_TTS],
        judge=cands.STANDIN_STT,
    )
    inputs = Inputs(CLIPS[:1], prompts=("Hi?",), sentences=("Hello.",))
    steps: list[str] = []
    result = await run_benchmark(candidates, inputs, {}, _NoModels(), steps.append)

    status = {e.name: (e.status, e.reason or "") for e in result.engines}
    assert status["deepgram/nova-3"][0] == "skipped"
    assert "stt.api_key" in status["deepgram/nova-3"][1]
    assert status["elevenlabs/eleven_flash_v2_5"][0] == "skipped"
    assert "tts.api_key" in status["elevenlabs/eleven_flash_v2_5"][1]
    assert status["openai/gpt-x"][0] == "skipped"
    assert status["openai/gpt-x"][1].startswith("first call failed: cannot connect")
    assert status["standin/fixed-text"] == ("ok", "")
    assert len(steps) == inputs.steps(candidates)  # the progress bar ends full
    assert turn_costs(result) == []  # no working LLM: no turn


# --- A priced OpenAI-compatible LLM that reports its token counts ------------------------------

TOKENS_IN, TOKENS_OUT = 31, 7
PRICE_IN, PRICE_OUT = 2.0, 8.0  # dollars per million tokens


def _chat_route(request: Request, exchange: Exchange, server: StandIn) -> None:
    if request.scenario == "dies" and request.seen > 1:  # answers the untimed call, then fails
        exchange.reply(500, '{"error": {"message": "The server had an error"}}')
        return

    def event(payload: dict[str, Any] | str) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        exchange.chunk(f"data: {text}\n\n".encode())

    exchange.start_chunked("text/event-stream")
    for piece in ("Paris", " it", " is."):
        event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": TOKENS_IN, "completion_tokens": TOKENS_OUT}
    event({"choices": [], "usage": usage})
    event("[DONE]")
    exchange.end_chunked()


@pytest.fixture
def chat_server() -> Iterator[StandIn]:
    with serving(_chat_route) as server:
        yield server


async def test_a_priced_llm_costs_its_reported_tokens_stand_in(chat_server: StandIn) -> None:
    llm = OpenAILLMSettings(base_url=chat_server.url("ok", "/v1"), model="gpt-bench")
    tts = cands.STANDIN_TTS
    candidates = cands.Candidates([cands.STANDIN_STT], [llm], [tts], judge=None)
    prices = {
        "openai/gpt-bench": Price(per_million_tokens_in=PRICE_IN, per_million_tokens_out=PRICE_OUT),
        "standin/tone": Price(per_million_characters=1000.0),
    }
    inputs = Inputs(CLIPS[:1], prompts=("Capital of France?", "Again?"), sentences=("Hi there.",))
    result = await run_benchmark(candidates, inputs, prices, _NoModels())

    (engine,) = result.of("llm")
    per_reply = (TOKENS_IN * PRICE_IN + TOKENS_OUT * PRICE_OUT) / 1e6
    assert engine.figures["cost_per_reply_usd"] == pytest.approx(per_reply)
    assert [s["tokens_out"] for s in engine.samples] == [TOKENS_OUT] * 2
    assert not any(s["tokens_estimated"] for s in engine.samples)
    assert engine.figures["reply_chars"] == len("Paris it is.")
    assert engine.figures["tokens_per_s"] is not None and engine.figures["tokens_per_s"] > 0
    # The untimed first call, then each prompt once, with the system prompt.
    bodies = [json.loads(r.body) for r in chat_server.requests]
    assert [b["messages"][-1]["content"] for b in bodies] == ["Hi", "Capital of France?", "Again?"]
    assert all(
        b["messages"][0] == {"role": "system", "content": inputs.system_prompt} for b in bodies
    )
    # A turn: the free STT, this reply, and the reply spoken at $1000 per million characters.
    (tts_engine,) = result.of("tts")
    assert tts_engine.figures["cost_per_sentence_usd"] == pytest.approx(len("Hi there.") * 1e-3)
    (turn,) = turn_costs(result)
    assert turn["cost_usd"] == pytest.approx(per_reply + len("Paris it is.") * 1e-3)


async def test_an_engine_whose_every_call_fails_is_reported_failed_stand_in(
    chat_server: StandIn,
) -> None:
    dying = OpenAILLMSettings(base_url=chat_server.url("dies", "/v1"), model="x")
    candidates = cands.Candidates([cands.STANDIN_STT], [dying, cands.STANDIN_LLM], [], None)
    inputs = Inputs(CLIPS[:1], prompts=("One?", "Two?"))
    result = await run_benchmark(candidates, inputs, {}, _NoModels())

    failed, fine = result.engines[1:]
    assert (failed.status, failed.errors, failed.samples) == ("failed", 2, [])
    assert failed.reason is not None and "500" in failed.reason
    assert all(value is None for value in failed.figures.values())
    assert (fine.status, fine.errors, len(fine.samples)) == ("ok", 0, 2)
    assert [e.name for e in result.of("llm")] == ["standin/fixed-reply"]


# --- The real local engines ---------------------------------------------------------------------


@pytest.mark.models
async def test_the_embedded_default_engines_on_one_clip(real_settings: Settings) -> None:
    # Greedy: a sampled 0.5B reply is sometimes "France is the capital of France." (seen once in
    # a full run); the test is about the benchmark's figures, not the sampler.
    greedy = real_settings.llm.model_copy(update={"temperature": 0.0})
    candidates = cands.from_settings(real_settings.model_copy(update={"llm": greedy}))
    inputs = Inputs(
        CLIPS[:1],
        prompts=("What is the capital of France?",),
        # Not "...France is Paris": whisper-tiny hears "Francis Paris", a third of the words.
        sentences=("Try to go to bed at the same time every night.",),
        system_prompt=real_settings.character.system_prompt,
    )
    models = ModelStore(real_settings.models_dir, show_progress=False)
    result = await run_benchmark(candidates, inputs, real_settings.prices, models)

    assert [(e.capability, e.name, e.status) for e in result.engines] == [
        ("stt", "faster-whisper/whisper-tiny-en", "ok"),
        ("llm", "llamacpp/qwen2.5-0.5b-instruct", "ok"),
        ("tts", "piper/en_US-joe-medium", "ok"),
    ]
    stt, llm, tts = result.engines
    assert stt.figures["wer"] is not None and stt.figures["wer"] < 0.3
    assert 0 < (stt.figures["transcript_median_ms"] or 0) < 10_000
    assert "paris" in llm.samples[0]["reply"].lower()
    assert not llm.samples[0]["tokens_estimated"]  # llama.cpp reports exact counts
    assert 0 < (llm.figures["first_token_median_ms"] or 0) <= (llm.figures["total_median_ms"] or 0)
    assert (llm.figures["tokens_per_s"] or 0) > 1
    assert (
        tts.figures["intelligibility_wer"] is not None and tts.figures["intelligibility_wer"] < 0.3
    )
    assert 0 < (tts.figures["real_time_factor"] or 0) < 2
    assert result.judge == "faster-whisper/whisper-tiny-en"
    assert turn_costs(result) == [
        {"stt": stt.name, "llm": llm.name, "tts": tts.name, "cost_usd": 0.0}
    ]
