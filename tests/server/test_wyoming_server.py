"""voxgate's Wyoming server over real sockets, driven by the ``wyoming`` package's own client, on
the stand-in engines (the real-model tests are in test_wyoming_models.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from wyoming.asr import Transcript
from wyoming.audio import AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from tests.fakes import Fakes, FakeSTT, stt_failure, wait_until
from tests.server_harness import free_port, standin_env
from tests.wyoming_harness import (
    Served,
    audio_of,
    events_until,
    standin_settings,
    synthesize,
    transcribe,
    wyoming_server,
)
from voxgate.protocols import wyoming
from voxgate.protocols.wyoming import WyomingDecoder

TONE_MS_PER_WORD = 200  # the stand-in TTS (voxgate/providers/standin.py)


async def describe(port: int) -> Info:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        [event] = await events_until(client, "info")
        return Info.from_event(event)


async def raw_exchange(port: int, wire: bytes) -> tuple[list[Error], bytes]:
    """Send ``wire`` as is; the error events the server answered with, and what was left."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire)
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()  # until the server closes
    writer.close()
    errors = []
    for event in WyomingDecoder().receive_data(answer):
        if event.type == "error":
            errors.append(Error(text=event.data["text"], code=event.data.get("code")))
    return errors, answer


async def metrics(served: Served) -> str:
    async with httpx.AsyncClient(base_url=f"http://{served.http}") as http:
        return (await http.get("/metrics")).text


async def test_describe_lists_voxgate_stt_and_tts_on_one_port(tmp_path: Path) -> None:
    async with wyoming_server(standin_settings(tmp_path, languages=["en", "de"])) as served:
        info = await describe(served.ports[0])
    [asr] = info.asr
    [tts] = info.tts
    assert asr.installed and tts.installed
    assert [m.name for m in asr.models] == ["standin/standin"]
    assert asr.models[0].languages == ["en", "de"]
    assert asr.supports_transcript_streaming
    assert [v.name for v in tts.voices] == ["standin"]
    assert tts.supports_synthesize_streaming
    assert info.wake == []  # no wake-word engine yet


async def test_transcribe_streams_the_transcript_events(tmp_path: Path) -> None:
    async with wyoming_server(standin_settings(tmp_path)) as served:
        speech = (np.sin(np.arange(16000) / 3) * 8000).astype(np.int16)
        events = await transcribe(served.ports[0], speech, 16000, language="en")
    assert [e.type for e in events] == [
        "transcript-start",
        "transcript-chunk",
        "transcript",
        "transcript-stop",
    ]
    transcript = Transcript.from_event(events[2])
    assert transcript.text == "hello there" and transcript.language == "en"
    assert events[1].data["text"] == "hello there"


async def test_synthesize_answers_audio_of_the_right_length(tmp_path: Path) -> None:
    async with wyoming_server(standin_settings(tmp_path)) as served:
        events = await synthesize(served.ports[0], "one two three")
    assert events[0].type == "audio-start" and events[-1].type == "audio-stop"
    assert AudioStart.from_event(events[0]).rate == 16000
    audio, rate = audio_of(events)
    assert len(audio) == 3 * TONE_MS_PER_WORD * rate // 1000
    assert np.abs(audio).max() > 1000


async def test_a_long_synthesize_is_spoken_a_piece_at_a_time_in_one_audio_stream(
    tmp_path: Path,
) -> None:
    async with wyoming_server(standin_settings(tmp_path)) as served:
        events = await synthesize(
            served.ports[0], "It is sunny today, so go out. Tomorrow it rains."
        )
    kinds = [e.type for e in events if e.type != "audio-chunk"]
    assert kinds == ["audio-start", "audio-stop"]
    audio, rate = audio_of(events)
    assert len(audio) == 10 * TONE_MS_PER_WORD * rate // 1000  # every word, once


async def test_streamed_synthesis_speaks_each_sentence_then_stops(tmp_path: Path) -> None:
    async with (
        wyoming_server(standin_settings(tmp_path)) as served,
        AsyncTcpClient("127.0.0.1", served.ports[0]) as client,
    ):
        await client.write_event(SynthesizeStart().event())
        for piece in ("It is sunny ", "today. Tomorrow it ", "rains."):
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(SynthesizeStop().event())
        events = await events_until(client, "synthesize-stopped")
    kinds = [e.type for e in events]
    assert kinds.count("audio-start") == 2 and kinds.count("audio-stop") == 2
    assert kinds[-1] == "synthesize-stopped"
    audio, rate = audio_of(events)
    assert len(audio) == 7 * TONE_MS_PER_WORD * rate // 1000  # seven words in all


async def test_usage_is_billed_to_the_configured_device_and_counted_in_metrics(
    tmp_path: Path,
) -> None:
    settings = standin_settings(tmp_path, device="kitchen-ha")
    async with wyoming_server(settings) as served:
        port = served.ports[0]
        await transcribe(port, np.full(8000, 3000, dtype=np.int16), 16000)
        await synthesize(port, "Two sentences here. Billed once.")
        async with AsyncTcpClient("127.0.0.1", port) as client:  # a streamed one: once too
            await client.write_event(SynthesizeStart().event())
            for piece in ("One. ", "Two. ", "Three."):
                await client.write_event(SynthesizeChunk(text=piece).event())
            await client.write_event(SynthesizeStop().event())
            await events_until(client, "synthesize-stopped")
        await served.store.writer.flush(5.0)
        turns = await served.store.reports.device_turns()
        [usage] = await served.store.reports.usage()
        text = await metrics(served)
        device = await served.store.devices.by_name("kitchen-ha")
    assert turns == {"kitchen-ha": 3}
    # The characters synthesised: each sentence (the spaces between them are not spoken).
    assert usage.characters == len("Two sentences here.Billed once.One.Two.Three.")
    assert device.last_seen_at is not None
    assert 'voxgate_sessions_total{protocol="wyoming"} 3.0' in text
    assert 'voxgate_wyoming_request_seconds_count{kind="transcribe"} 1.0' in text
    # The synthesize, and each sentence of the streamed one.
    assert 'voxgate_wyoming_request_seconds_count{kind="synthesize_first_audio"} 4.0' in text
    assert 'voxgate_bytes_in_total{protocol="wyoming"}' in text


async def test_requests_over_the_rate_get_an_error(tmp_path: Path) -> None:
    async with wyoming_server(standin_settings(tmp_path, requests_per_minute=2)) as served:
        port = served.ports[0]
        assert (await synthesize(port, "one"))[-1].type == "audio-stop"
        assert (await synthesize(port, "two"))[-1].type == "audio-stop"
        third = await synthesize(port, "three")
        info = await describe(port)  # describing is not a request that costs
    assert third[-1].type == "error"
    assert Error.from_event(third[-1]).code == "rate_limited"
    assert info.tts


async def test_a_tts_only_port_lists_and_serves_tts_alone(tmp_path: Path) -> None:
    async with wyoming_server(standin_settings(tmp_path, tts_port=0)) as served:
        both, tts_only = served.ports
        info = await describe(tts_only)
        refused = await transcribe(tts_only, np.zeros(1600, dtype=np.int16), 16000)
        spoken = await synthesize(tts_only, "hi")
        assert (await describe(both)).asr
    assert info.asr == [] and info.tts
    assert (
        refused[-1].type == "error" and "does not serve speech to text" in refused[-1].data["text"]
    )
    assert spoken[-1].type == "audio-stop"


async def test_clients_outside_the_allowed_networks_are_refused(tmp_path: Path) -> None:
    settings = standin_settings(tmp_path, allowed_networks=["192.0.2.0/24"])
    async with wyoming_server(settings) as served:
        errors, _ = await raw_exchange(served.ports[0], b'{"type": "describe"}\n')
    assert [e.code for e in errors] == ["unauthorized"]


@pytest.mark.parametrize(
    ("wire", "code", "says"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad_request", "not JSON"),
        (
            b'{"type": "audio-chunk", "payload_length": 99999999999}\n',
            "message_too_large",
            "exceeds",
        ),
        (b'{"type": "synthesize", "data_length": -5}\n', "bad_request", "whole number"),
        (b'{"type": "synthesize", "data_length": 3}\n{"text": "hi"}', "bad_request", "not JSON"),
        (
            b'{"type": "audio-chunk", "payload_length": 10}\n' + b"\x00" * 10,
            "bad_request",
            "before",
        ),
        (b'{"type": "audio-chunk", "payload_length": 10}\n\x00\x00', "bad_request", "middle"),
        (b"x" * 70_000, "message_too_large", "header line longer"),
    ],
)
async def test_bad_input_ends_only_that_connection_with_an_error_event(
    tmp_path: Path, wire: bytes, code: str, says: str
) -> None:
    async with wyoming_server(standin_settings(tmp_path)) as served:
        port = served.ports[0]
        async with AsyncTcpClient("127.0.0.1", port) as bystander:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(wire)
            await writer.drain()
            if says == "middle":
                writer.write_eof()  # the client stops in the middle of an event
            async with asyncio.timeout(10):
                answer = await reader.read()
            writer.close()
            # The other connection, open all along, is served as if nothing happened.
            await bystander.write_event(Describe().event())
            [info] = await events_until(bystander, "info")
        text = await metrics(served)
    [error] = WyomingDecoder().receive_data(answer)
    assert error.type == "error"
    assert error.data["code"] == code and says in error.data["text"]
    assert info.type == "info"
    assert f'voxgate_errors_total{{code="{code}",protocol="wyoming"}} 1.0' in text


async def test_a_client_that_never_reads_is_dropped_and_others_go_on(tmp_path: Path) -> None:
    settings = standin_settings(tmp_path, max_text_chars=100_000)
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"send_timeout_s": 1.0})}
    )
    async with wyoming_server(settings) as served:
        port = served.ports[0]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        # ~2000 words: over six minutes of audio, far more than the socket buffers hold.
        writer.write(wyoming.encode("synthesize", {"text": "word " * 2000}))
        await writer.drain()
        await wait_until(lambda: served.wyoming.live_connections == 1, 10)
        # Dropped after send_timeout_s.
        await wait_until(lambda: served.wyoming.live_connections == 0, 20)
        spoken = await synthesize(port, "still here")
        text = await metrics(served)
        writer.close()
    assert spoken[-1].type == "audio-stop"
    assert 'voxgate_errors_total{code="slow_client",protocol="wyoming"} 1.0' in text


async def test_shutdown_answers_the_transcription_in_progress_first(tmp_path: Path) -> None:
    stt = FakeSTT(["just in time"], delay_s=1.0)
    engines = Fakes(stt=stt).engines()
    request: asyncio.Task[list[Event]] | None = None
    async with wyoming_server(standin_settings(tmp_path), engines) as served:
        request = asyncio.create_task(
            transcribe(served.ports[0], np.full(1600, 2000, np.int16), 16000)
        )
        await wait_until(lambda: stt.active == 1, 10)  # transcribing when the server stops
    events = await request
    engines.close()
    assert Transcript.from_event(events[-2]).text == "just in time"


async def test_a_failing_engine_ends_the_request_with_its_error(tmp_path: Path) -> None:
    engines = Fakes(stt=FakeSTT([stt_failure("decoder crashed")])).engines()
    async with wyoming_server(standin_settings(tmp_path), engines) as served:
        events = await transcribe(served.ports[0], np.full(1600, 2000, np.int16), 16000)
        again = await transcribe(served.ports[0], np.full(1600, 2000, np.int16), 16000)
    engines.close()
    assert events[-1].type == "error" and events[-1].data["code"] == "stt_failed"
    assert "decoder crashed" in events[-1].data["text"]
    assert again[-1].type == "transcript-stop"  # the next request is served


async def test_the_admin_page_counts_an_open_wyoming_connection(tmp_path: Path) -> None:
    async with wyoming_server(standin_settings(tmp_path)) as served:
        token = served.ctx.settings.server.admin_token
        assert token is not None
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        async with (
            httpx.AsyncClient(base_url=f"http://{served.http}", headers=headers) as http,
            AsyncTcpClient("127.0.0.1", served.ports[0]) as client,
        ):
            await client.write_event(Describe().event())
            await events_until(client, "info")  # connected, and still open
            during = (await http.get("/api/admin/overview")).json()
            devices = (await http.get("/api/admin/devices")).json()
        await wait_until(lambda: served.wyoming.live_connections == 0, 10)
        async with httpx.AsyncClient(base_url=f"http://{served.http}", headers=headers) as http:
            after = (await http.get("/api/admin/overview")).json()
    assert during["sessions_live"] == 1 and during["devices_online"] == 1
    assert after["sessions_live"] == 0 and after["devices_online"] == 0
    rows = devices["devices"] if isinstance(devices, dict) else devices
    [device] = [d for d in rows if d["name"] == "home-assistant"]
    assert device["online"] is True


async def test_voxgate_serve_dash_dash_wyoming_announces_and_serves_it(tmp_path: Path) -> None:
    http_port, wyoming_port = free_port(), free_port()
    env = standin_env(tmp_path, VOXGATE_WYOMING__PORT=str(wyoming_port))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "voxgate", "serve", "--port", str(http_port), "--wyoming"),
        *("--log-level", "warning"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):
            while not any("Wyoming" in line for line in lines):
                lines.append((await process.stdout.readline()).decode())
            while True:  # the port opens once the engines are loaded
                try:
                    info = await describe(wyoming_port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
    finally:
        process.terminate()
        await process.wait()
    [line] = [line for line in lines if "Wyoming" in line]
    assert f"tcp://127.0.0.1:{wyoming_port}" in line
    assert info.asr and info.tts


async def test_a_plain_synthesize_ended_by_synthesize_stop_gets_audio_then_stopped(
    tmp_path: Path,
) -> None:
    async with (
        wyoming_server(standin_settings(tmp_path)) as served,
        AsyncTcpClient("127.0.0.1", served.ports[0]) as client,
    ):
        await client.write_event(Synthesize(text="two words").event())
        await client.write_event(SynthesizeStop().event())
        events = await events_until(client, "synthesize-stopped")
    assert [e.type for e in events if e.type != "audio-chunk"] == [
        "audio-start",
        "audio-stop",
        "synthesize-stopped",
    ]
