"""``voxgate llm-server``: llama.cpp's own HTTP server on a GGUF model, for replicas to share.

It is llama.cpp's server (``llama-server``'s code, linked in through the ``xllamacpp`` wheel that
the in-process LLM already uses), so it speaks OpenAI's chat completions with llama.cpp's
additions (``cache_prompt``, ``/health``, ``/slots``, ``/metrics``). Gateway replicas point their
``[llm] provider = "openai"`` at it (``base_url = "http://HOST:PORT/v1"``) and load no LLM
themselves. ``--parallel`` slots decode at once (continuous batching): one slot per turn in flight.
See docs/scaling.md.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from voxgate.commands.common import ConfigOption, fail, say, settings_from
from voxgate.core.errors import VoxgateError
from voxgate.models import ModelStore

API_KEY_ENV = "VOXGATE_LLM_SERVER_API_KEY"
"""The bearer token clients must send (read from the environment: not on the command line, where
``ps`` shows it). Unset: no token, so bind to a private address."""


def llm_server(
    model: Annotated[
        str, typer.Option(help="A name from `voxgate models` or a path to a GGUF file.")
    ] = "qwen2.5-0.5b-instruct",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    parallel: Annotated[int, typer.Option(min=1, help="Requests decoded at once (slots).")] = 4,
    context_tokens: Annotated[int, typer.Option(min=256, help="Context per slot.")] = 2048,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for decoding.")] = 2,
    config: ConfigOption = None,
) -> None:
    """Serve a GGUF model over llama.cpp's OpenAI-compatible HTTP API, for replicas to share."""
    import xllamacpp  # here: the other commands must not load llama.cpp

    settings = settings_from(config)
    try:
        path = (
            Path(model) if Path(model).is_file() else ModelStore(settings.models_dir).resolve(model)
        )
    except VoxgateError as exc:
        fail(str(exc))
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = parallel
    params.n_ctx = context_tokens * parallel  # llama.cpp splits the context among the slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = [host]
    params.port = port
    params.verbosity = -1
    api_key = os.environ.get(API_KEY_ENV)
    if api_key:
        params.api_keys = [api_key]
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # llama.cpp says why (bad file, port taken) in its message
        fail(f"llama.cpp could not start on {host}:{port} with {path}: {exc}")
    say(f"llama.cpp serves {path.name} at {server.listening_address}/v1 ({parallel} slots)")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    del server  # stops listening and frees the model
