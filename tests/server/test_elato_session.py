"""ElatoAI sessions over a real socket, with a client written from the spec
(``shared/protocols/elato.md``): token endpoint, upgrade headers, message order, instructions."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import opuslib
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.fakes import FakeLLM, Fakes, FakeSTT, bounded, pcm_bytes, silence, tone
from tests.server_harness import open_store, running_server
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.capabilities import Float32Array, Int16Array, SpeechToText, TextToSpeech
from voxgate.core.config import (
    CharacterSettings,
    ListeningSettings,
    ServerSettings,
    Settings,
)
from voxgate.core.listening import ListeningMode
from voxgate.evaluation import character_error_rate, normalize_words
from voxgate.pipeline import Engines
from voxgate.protocols.elato import issue_token, verify_token
from voxgate.server import elato_tokens
from voxgate.server.context import ServerContext
from voxgate.server.transports import elato as elato_transport
from voxgate.server.transports.elato import DEFAULT_FIRST_MESSAGE
from voxgate.store import Store

SECRET = "elato-test-secret-0123456789abcdef0123456789"
MAC = "AA:BB:CC:00:11:22"
OTHER_MAC = "AA:BB:CC:00:11:33"
GREETING = "Hello there friend."
CHUNK_SIZES = (64, 64, 62, 130, 1, 63, 256, 64)
"""The firmware copies 64 bytes at a time; odd and larger sizes must work too."""
LISTEN_DELAY_S = 1.0
"""The firmware listens again this long after RESPONSE.COMPLETE or RESPONSE.ERROR."""

AUTH = {
    "type": "auth",
    "volume_control": 70,
    "pitch_factor": 1.0,
    "is_ota": False,
    "is_reset": False,
}


@dataclass
class Rig:
    address: str
    store: Store
    fakes: Fakes
    tokens: dict[str, str] = field(default_factory=dict)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://{self.address}", trust_env=False)

    async def token(self, mac: str = MAC) -> str:
        """The device's token, fetched once as the firmware does (pairing ends when the device
        first connects with it)."""
        if mac not in self.tokens:
            async with self.http() as client:
                response = await client.get("/api/generate_auth_token", params={"macAddress": mac})
            assert response.status_code == 200, response.text
            self.tokens[mac] = response.json()["token"]
        return self.tokens[mac]

    async def open_sessions(self) -> tuple[int, float]:
        """Sessions open, by /healthz and by the elato sessions gauge of /metrics."""
        async with self.http() as client:
            health = (await client.get("/healthz")).json()
            metrics = (await client.get("/metrics")).text
        prefix = 'voxgate_sessions_open{protocol="elato"} '
        gauge = [
            float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix)
        ]
        return health["sessions"], sum(gauge)

    async def wait_no_sessions(self) -> None:
        async with asyncio.timeout(5):
            while await self.open_sessions() != (0, 0.0):  # noqa: ASYNC110
                await asyncio.sleep(0.02)


@asynccontextmanager
async def elato_server(
    tmp_path: Path,
    fakes: Fakes | None = None,
    *,
    greeting: str | None = GREETING,
    register: Sequence[str] = (MAC,),
    base: Settings | None = None,
    engines: Engines | None = None,
    **server: Any,
) -> AsyncIterator[Rig]:
    """The real app on loopback with fake engines (or ``engines``), ``register``ed devices,
    ``greeting`` as the first message and ``server`` settings."""
    server.setdefault("jwt_secret", SECRET)
    base = base or Settings(character=CharacterSettings(system_prompt="You are a test."))
    settings = base.model_copy(
        update={
            "data_dir": tmp_path,
            "server": ServerSettings(**server),
            "character": base.character.model_copy(update={"first_message": greeting}),
        }
    )
    fakes = fakes or Fakes()
    engines = engines or fakes.engines()
    store = await open_store(tmp_path)
    for index, mac in enumerate(register):
        await store.devices.add(f"device-{index}", mac)
    try:
        async with running_server(settings, engines, store) as address:
            yield Rig(address, store, fakes)
    finally:
        engines.close()
        await store.close()


def device_connect(
    address: str, token: str, mac: str = MAC, *, path: str = "/ws/esp32", arduino: bool = True
) -> connect:
    """An upgrade as the firmware makes it."""
    headers = {"Authorization": f"Bearer {token}", "X-Wifi-Rssi": "-52", "X-Device-Mac": mac}
    return connect(
        f"ws://{address}{path}",
        additional_headers=headers,
        subprotocols=[Subprotocol("arduino")] if arduino else None,
        compression=None,
        proxy=None,
        ping_interval=None,
        open_timeout=5,
    )


class Device:
    """Reads what the server sends the way the firmware does."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.packets: list[bytes] = []
        self._listens_at = 0.0

    async def auth(self) -> dict[str, Any]:
        message = json.loads(await asyncio.wait_for(self.ws.recv(), 5))
        assert isinstance(message, dict)
        return message

    async def until(self, msg: str, timeout_s: float = 10.0) -> list[str]:
        """Frames up to and including the server message ``msg``: server messages by name,
        runs of Opus packets as "opus*n" (kept in ``packets``)."""
        shape: list[str] = []
        async with asyncio.timeout(timeout_s):
            while True:
                frame = await self.ws.recv()
                if isinstance(frame, bytes):
                    self.packets.append(frame)
                    count = int(shape.pop()[5:]) if shape and shape[-1].startswith("opus*") else 0
                    shape.append(f"opus*{count + 1}")
                    continue
                message = json.loads(frame)
                assert message["type"] == "server", message
                shape.append(message["msg"])
                if message["msg"] in ("RESPONSE.COMPLETE", "RESPONSE.ERROR"):
                    self._listens_at = asyncio.get_running_loop().time() + LISTEN_DELAY_S
                if message["msg"] == msg:
                    return shape

    async def quiet_for(self, seconds: float) -> bool:
        """True if nothing arrives for ``seconds``."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected frame {frame!r}")

    async def speak(self, samples: np.ndarray, sizes: Sequence[int] = CHUNK_SIZES) -> None:
        """Microphone audio, once the device listens again after a reply."""
        await asyncio.sleep(self._listens_at - asyncio.get_running_loop().time())
        data = pcm_bytes(samples)
        offset, index = 0, 0
        while offset < len(data):
            size = sizes[index % len(sizes)]
            await self.ws.send(data[offset : offset + size])
            offset += size
            index += 1

    async def instruct(self, msg: str, **extra: Any) -> None:
        await self.ws.send(json.dumps({"type": "instruction", "msg": msg, **extra}))


def decoded_ms(packets: Sequence[bytes], rate_hz: int = 48_000) -> float:
    """Decoded as the firmware does: libopus at 48 kHz."""
    decoder = opuslib.Decoder(rate_hz, 1)
    samples = sum(len(decoder.decode(packet, rate_hz * 120 // 1000)) // 2 for packet in packets)
    return samples / rate_hz * 1000


# -- the token endpoint ---------------------------------------------------------------------


@bounded(20)
async def test_token_endpoint(tmp_path: Path) -> None:
    async with elato_server(tmp_path) as rig, rig.http() as client:
        ok = await client.get("/api/generate_auth_token", params={"macAddress": MAC.lower()})
        unknown = await client.get("/api/generate_auth_token", params={"macAddress": OTHER_MAC})
        missing = await client.get("/api/generate_auth_token")
        bad = await client.get("/api/generate_auth_token", params={"macAddress": "nope"})
        await rig.store.devices.revoke("device-0")
        revoked = await client.get("/api/generate_auth_token", params={"macAddress": MAC})
    assert ok.status_code == 200
    claims = verify_token(SECRET, ok.json()["token"], mac=MAC)
    assert claims.mac == MAC
    # One answer for unknown and revoked MACs: the endpoint does not tell which are registered.
    assert unknown.status_code == revoked.status_code == 403
    assert unknown.json() == revoked.json() and "voxgate devices add" in unknown.json()["error"]
    assert missing.status_code == 400 and "macAddress" in missing.json()["error"]
    assert bad.status_code == 400


@bounded(20)
async def test_token_endpoint_auto_registers_when_allowed(tmp_path: Path) -> None:
    async with elato_server(tmp_path, register=(), auto_register_devices=True) as rig:
        token = await rig.token(OTHER_MAC)
        again = await rig.token(OTHER_MAC)
        assert [device.mac for device in (await rig.store.devices.all())] == [OTHER_MAC]
        async with device_connect(rig.address, again, OTHER_MAC) as ws:
            assert (await Device(ws).auth())["type"] == "auth"
    assert token


@contextmanager
def bare_app(tmp_path: Path, settings: Settings) -> Iterator[tuple[TestClient, ServerContext]]:
    """Only the Elato routes, without create_app (which would make a signing key)."""
    engines = Fakes().engines()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # In the test client's own event loop, where the database connections will be used.
        store = await open_store(tmp_path)
        await store.devices.add("kitchen", MAC)
        app.state.ctx = ServerContext(settings, engines, store)
        yield
        await store.close()

    app = Starlette(
        routes=[*elato_tokens.routes(), *elato_transport.routes(settings)], lifespan=lifespan
    )
    try:
        with TestClient(app) as client:
            yield client, app.state.ctx
    finally:
        engines.close()


def _denied_status(client: TestClient, token: str) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}", "X-Device-Mac": MAC}
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/ws/esp32", headers=headers),
    ):
        pass
    return denied.value.status_code, denied.value.json()["error"]


def test_without_a_jwt_secret_tokens_and_upgrades_are_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.server.jwt_secret is None
    with bare_app(tmp_path, settings) as (client, _):
        response = client.get("/api/generate_auth_token", params={"macAddress": MAC})
        status, error = _denied_status(client, issue_token(SECRET, 1, MAC))
    assert response.status_code == 503 and "jwt_secret" in response.json()["error"]
    assert status == 401 and "jwt_secret" in error


def test_no_new_sessions_while_shutting_down(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, server=ServerSettings(jwt_secret=SECRET))
    with bare_app(tmp_path, settings) as (client, ctx):
        token = client.get("/api/generate_auth_token", params={"macAddress": MAC}).json()["token"]
        ctx.shutting_down.set()
        status, error = _denied_status(client, token)
    assert status == 503 and "shutting down" in error


# -- authentication on the upgrade ----------------------------------------------------------


@bounded(30)
async def test_bad_credentials_get_http_401_on_the_upgrade(tmp_path: Path) -> None:
    async with elato_server(tmp_path, register=(MAC, OTHER_MAC)) as rig:
        token = await rig.token(MAC)
        other_token = await rig.token(OTHER_MAC)
        attempts = {
            "wrong key": (issue_token("some-other-secret-of-enough-length-xyz", 1, MAC), MAC),
            "garbage": ("not-a-jwt", MAC),
            "wrong MAC": (token, OTHER_MAC),
            "someone else's token": (other_token, MAC),
            "no MAC header": (token, ""),
        }
        statuses = {}
        for name, (attempt_token, mac) in attempts.items():
            with pytest.raises(InvalidStatus) as caught:
                async with device_connect(rig.address, attempt_token, mac):
                    pass
            statuses[name] = caught.value.response.status_code
        with pytest.raises(InvalidStatus) as no_auth:
            async with connect(f"ws://{rig.address}/ws/esp32", proxy=None, open_timeout=5):
                pass
        await rig.store.devices.revoke("device-0")
        with pytest.raises(InvalidStatus) as revoked:
            async with device_connect(rig.address, token, MAC):
                pass
        assert await rig.open_sessions() == (0, 0.0)
    assert statuses == dict.fromkeys(attempts, 401)
    assert no_auth.value.response.status_code == 401
    assert revoked.value.response.status_code == 401


@bounded(20)
async def test_too_many_connections_get_http_429(tmp_path: Path) -> None:
    async with elato_server(tmp_path, connections_per_minute=1) as rig:
        token = await rig.token()
        async with device_connect(rig.address, token) as ws:
            await Device(ws).auth()
        with pytest.raises(InvalidStatus) as caught:
            async with device_connect(rig.address, token):
                pass
    assert caught.value.response.status_code == 429


# -- sessions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "arduino"), [("/ws/esp32", True), ("/ws/esp32", False), ("/", True)]
)
@bounded(30)
async def test_greeting_then_a_spoken_turn_in_the_firmwares_order(
    tmp_path: Path, path: str, arduino: bool
) -> None:
    fakes = Fakes(llm=FakeLLM(["The answer is four."]))
    async with elato_server(tmp_path, fakes, elato_end_of_turn_silence_ms=700) as rig:
        token = await rig.token()
        async with device_connect(rig.address, token, path=path, arduino=arduino) as ws:
            assert ws.subprotocol == ("arduino" if arduino else None)
            device = Device(ws)
            assert await device.auth() == AUTH
            greeting = await device.until("RESPONSE.COMPLETE")
            greeting_packets = len(device.packets)
            assert greeting == ["RESPONSE.CREATED", f"opus*{greeting_packets}", "RESPONSE.COMPLETE"]
            # Three words of 100 ms: 300 ms of audio, three 120 ms packets (the last padded).
            assert greeting_packets == 3 and decoded_ms(device.packets) == 360

            await device.speak(tone(600))
            await device.speak(silence(600))  # less than the 700 ms Elato end-of-turn silence
            assert await device.quiet_for(0.3)
            await device.speak(silence(400))
            turn = await device.until("RESPONSE.COMPLETE")
            reply_packets = device.packets[greeting_packets:]
            assert turn == [
                "AUDIO.COMMITTED",
                "RESPONSE.CREATED",
                f"opus*{len(reply_packets)}",
                "RESPONSE.COMPLETE",
            ]
            assert len(reply_packets) == 4  # four words: 400 ms
        await rig.wait_no_sessions()
    assert fakes.tts.sentences == [GREETING, "The answer is four."]
    user_turn = fakes.llm.calls[0][-1]
    assert user_turn.role == "user" and user_turn.content.startswith("I spoke for")


@bounded(20)
async def test_default_greeting_when_none_is_configured(tmp_path: Path) -> None:
    async with elato_server(tmp_path, greeting=None) as rig:
        async with device_connect(rig.address, await rig.token()) as ws:
            device = Device(ws)
            await device.auth()
            assert (await device.until("RESPONSE.COMPLETE"))[-1] == "RESPONSE.COMPLETE"
        assert rig.fakes.tts.sentences == [DEFAULT_FIRST_MESSAGE]


@bounded(30)
async def test_goodbye_ends_the_session(tmp_path: Path) -> None:
    fakes = Fakes(stt=FakeSTT(["Thanks, goodbye!"]), llm=FakeLLM(["Bye!"]))
    async with elato_server(tmp_path, fakes, prebuffer_ms=0) as rig:
        async with device_connect(rig.address, await rig.token()) as ws:
            device = Device(ws)
            await device.auth()
            await device.until("RESPONSE.COMPLETE")
            await device.speak(np.concatenate([tone(500), silence(1100)]))
            shape = await device.until("SESSION.END")
            assert shape[-2:] == ["RESPONSE.COMPLETE", "SESSION.END"]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1000
        await rig.wait_no_sessions()


@bounded(30)
async def test_instructions_end_of_speech_interrupt_and_end_session(tmp_path: Path) -> None:
    long_reply = " ".join(["word"] * 40) + "."  # 4 s of audio
    fakes = Fakes(llm=FakeLLM(["Short one."], [long_reply], ["Fine."]))
    async with elato_server(tmp_path, fakes, prebuffer_ms=0) as rig:
        async with device_connect(rig.address, await rig.token()) as ws:
            device = Device(ws)
            await device.auth()
            await device.until("RESPONSE.COMPLETE")

            # A manual commit: no trailing silence needed. Garbage on the way is ignored.
            await device.speak(tone(400))
            await ws.send("this is not json")
            await device.instruct("no_such_instruction")
            await device.instruct("end_of_speech")
            assert (await device.until("RESPONSE.COMPLETE"))[0] == "AUDIO.COMMITTED"

            # Interrupt a long reply after its first packet: it completes at once.
            await device.speak(tone(400))
            await device.instruct("end_of_speech")
            assert await device.until("RESPONSE.CREATED") == ["AUDIO.COMMITTED", "RESPONSE.CREATED"]
            first = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(first, bytes)
            await device.instruct("INTERRUPT", audio_end_ms=120)
            shape = await device.until("RESPONSE.COMPLETE", timeout_s=2)
            assert shape[-1] == "RESPONSE.COMPLETE" and len(shape) <= 2, shape

            # The next turn hears only what was played of the interrupted reply.
            await device.speak(tone(400))
            await device.instruct("end_of_speech")
            await device.until("RESPONSE.COMPLETE")
            heard = fakes.llm.calls[2][-2]
            assert heard.role == "assistant" and len(heard.content.split()) < 40, heard

            await device.instruct("END_SESSION")
            assert await device.until("SESSION.END") == ["SESSION.END"]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1000
        await rig.wait_no_sessions()


@bounded(30)
async def test_disconnect_mid_reply_cleans_up(tmp_path: Path) -> None:
    greeting = " ".join(["hello"] * 50) + "."  # 5 s of audio, paced in real time
    async with elato_server(tmp_path, greeting=greeting, prebuffer_ms=0) as rig:
        async with device_connect(rig.address, await rig.token()) as ws:
            device = Device(ws)
            await device.auth()
            assert await device.until("RESPONSE.CREATED") == ["RESPONSE.CREATED"]
            assert isinstance(await asyncio.wait_for(ws.recv(), 5), bytes)
            assert await rig.open_sessions() == (1, 1.0)
        await rig.wait_no_sessions()
        # The server still serves the device.
        async with device_connect(rig.address, await rig.token()) as ws:
            assert (await Device(ws).auth())["type"] == "auth"


@bounded(20)
async def test_an_oversized_message_closes_with_1009(tmp_path: Path) -> None:
    async with elato_server(tmp_path, max_message_bytes=1024) as rig:
        async with device_connect(rig.address, await rig.token()) as ws:
            device = Device(ws)
            await device.auth()
            await device.until("RESPONSE.COMPLETE")
            await ws.send(bytes(2048))
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1009
        await rig.wait_no_sessions()


@bounded(60)
async def test_fuzzed_frames_do_not_break_the_server(tmp_path: Path) -> None:
    rng = random.Random(20_240_601)

    def random_frame() -> str | bytes:
        match rng.randrange(5):
            case 0:
                return rng.randbytes(rng.randrange(0, 700))
            case 1:
                return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(40)))
            case 2:
                value = rng.choice([None, True, -1, 1e308, "12", [], {}, 10**30, 250])
                return json.dumps(
                    {"type": "instruction", "msg": "INTERRUPT", "audio_end_ms": value}
                )
            case 3:
                msg = rng.choice(["end_of_speech", "INTERRUPT", "end_session", "", 7, None])
                kind = rng.choice(["instruction", "server", "auth", 1, None])
                return json.dumps({"type": kind, "msg": msg})
            case _:
                return json.dumps(rng.choice([[], "x", 1, None, {"a": [{}] * 5}]))

    async with elato_server(tmp_path) as rig:
        async with device_connect(rig.address, await rig.token()) as ws:
            device = Device(ws)
            await device.auth()
            for _ in range(400):
                await ws.send(random_frame())
            # The noise may have made turns of its own; the connection stays open through them.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    while True:
                        await ws.recv()
            assert ws.close_code is None
        await rig.wait_no_sessions()
        async with device_connect(rig.address, await rig.token()) as ws:
            device = Device(ws)
            assert await device.auth() == AUTH
            assert (await device.until("RESPONSE.COMPLETE"))[0] == "RESPONSE.CREATED"


# -- real speech ----------------------------------------------------------------------------


class _RecordingSTT:
    streaming = False

    def __init__(self, inner: SpeechToText) -> None:
        self.inner = inner
        self.sample_rate_hz = inner.sample_rate_hz
        self.texts: list[str] = []

    async def transcribe(self, audio: Float32Array) -> str:
        text = await self.inner.transcribe(audio)
        self.texts.append(text)
        return text


class _RecordingTTS:
    def __init__(self, inner: TextToSpeech) -> None:
        self.inner = inner
        self.sample_rate_hz = inner.sample_rate_hz
        self.sentences: list[str] = []

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        self.sentences.append(text)
        return self.inner.synthesize(text)


@pytest.mark.models
@bounded(240)
async def test_a_real_spoken_question_gets_a_spoken_answer(
    tmp_path: Path, real_engines: Engines, real_settings: Settings
) -> None:
    stt, tts = _RecordingSTT(real_engines.stt), _RecordingTTS(real_engines.tts)
    engines = Engines(vad=real_engines.vad, stt=stt, llm=real_engines.llm, tts=tts)
    samples, rate = read_wav(SAMPLE_QUESTION)
    question = resample(samples, rate, 16_000)
    greeting = "Hello! Ask me anything."
    async with (
        elato_server(tmp_path, base=real_settings, engines=engines, greeting=greeting) as rig,
        device_connect(rig.address, await rig.token()) as ws,
    ):
        device = Device(ws)
        assert await device.auth() == AUTH
        await device.until("RESPONSE.COMPLETE", timeout_s=60)
        greeting_packets = len(device.packets)
        await device.speak(np.concatenate([silence(300), question, silence(1500)]))
        shape = await device.until("RESPONSE.COMPLETE", timeout_s=120)
    reply_packets = device.packets[greeting_packets:]
    assert shape == [
        "AUDIO.COMMITTED",
        "RESPONSE.CREATED",
        f"opus*{len(reply_packets)}",
        "RESPONSE.COMPLETE",
    ]
    assert {"capital", "france"} <= set(normalize_words(stt.texts[-1])), stt.texts
    reply_text = " ".join(tts.sentences[1:])
    assert tts.sentences[0] == greeting and reply_text.strip()

    # Decoded as the device does it (libopus, 48 kHz), then transcribed back.
    decoder = opuslib.Decoder(48_000, 1)
    pcm = b"".join(decoder.decode(packet, 5_760) for packet in reply_packets)
    audio = resample(np.frombuffer(pcm, dtype="<i2").astype(np.int16), 48_000, 16_000)
    # Half a second of silence each side: on a clip under ~1 s ("Paris.") the STT repeats the
    # word many times, with or without Opus in between.
    padded = np.concatenate([silence(500), audio, silence(500)])
    heard = await real_engines.stt.transcribe(int16_to_float(padded))
    assert character_error_rate(reply_text, heard) <= 0.25, (reply_text, heard)


@bounded(30)
async def test_the_devices_volume_pitch_and_character_come_from_its_settings(
    tmp_path: Path,
) -> None:
    fakes = Fakes(llm=FakeLLM(["Once upon a time."]))
    async with elato_server(tmp_path, fakes, greeting=None) as rig:
        await rig.store.devices.configure("device-0", volume=35, pitch=1.2, character="toy")
        token = await rig.token()
        async with device_connect(rig.address, token) as ws:
            device = Device(ws)
            auth = await device.auth()
            # The toy character's own first message is the greeting.
            await device.until("RESPONSE.COMPLETE")
    assert auth == {**AUTH, "volume_control": 35, "pitch_factor": 1.2}
    assert " ".join(fakes.tts.sentences) == "Hi! I'm Pip. What shall we play today?"


@bounded(30)
async def test_a_session_that_cannot_open_gives_its_slot_back(tmp_path: Path) -> None:
    """Wake-word listening configured on a server without a wake-word engine: the session cannot
    open. The device is told with a close (not a dropped socket), and its one session slot is
    free again, so the next attempt fails the same way and not as "too many sessions"."""
    base = Settings(
        character=CharacterSettings(system_prompt="You are a test."),
        listening=ListeningSettings(elato_mode=ListeningMode.WAKE_WORD),
    )
    async with elato_server(tmp_path, base=base, max_sessions_per_device=1) as rig:
        token = await rig.token(MAC)
        codes = []
        for _ in range(2):
            async with device_connect(rig.address, token) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
    assert codes == [1011, 1011]
