"""The seams: one small ``typing.Protocol`` per capability.

A provider module implements one of these; the turn engine only ever sees these types. Providers
never see a session or a socket: they take inputs and return results or async iterators.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The LLM asks voxgate to do something rather than (or besides) saying it."""

    name: str
    """One of :data:`TOOLS`."""


TOOLS: dict[str, str] = {
    "end_session": (
        "End the conversation: call this when the user says goodbye or asks to stop talking. "
        "Say a short goodbye as well."
    ),
}
"""The tools voxgate offers an LLM that can call them (``llm.tools``), by name: what they do."""

ReplyPiece = str | ToolCall
"""What an LLM streams: text, and now and then a tool call."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


class VADStream(Protocol):
    """Per-session VAD state; the loaded model behind it is shared."""

    def speech_probabilities(self, chunks: Float32Array) -> Float32Array:
        """Speech probability for each row of ``chunks`` (shape ``[n, chunk_samples]``, in order).

        Blocking; callers run it off the event loop.
        """
        ...

    def reset(self) -> None: ...


class VoiceActivityDetector(Protocol):
    sample_rate_hz: int
    chunk_samples: int
    runs_inline: bool
    """True when a call costs microseconds: it then runs on the event loop, where a thread hop
    would cost more than the work."""

    def new_stream(self) -> VADStream: ...


class SpeechToText(Protocol):
    sample_rate_hz: int
    """The rate ``transcribe`` expects its audio at."""

    async def transcribe(self, audio: Float32Array) -> str:
        """Text of a whole utterance (float32 samples in [-1, 1], mono). Empty when nothing is said."""
        ...


class LanguageModel(Protocol):
    def stream_reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ReplyPiece]:
        """Reply text in pieces as it is generated, and any tool calls (only engines configured
        with ``tools`` make them). Closing the iterator stops generation."""
        ...


class TextToSpeech(Protocol):
    sample_rate_hz: int

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        """Audio of ``text`` (mono PCM16 at ``sample_rate_hz``), in one or more chunks.

        ``voice``: the character's voice, in the engine's own terms (a Piper voice from the model
        store, an OpenAI voice name, an ElevenLabs voice id, an Aura model); None, or one the
        engine cannot use, gives its configured voice."""
        ...


class ModelResolver(Protocol):
    """Turns a model name from the catalogue (or a path) into a prepared file or directory."""

    def resolve(self, name_or_path: str) -> Path: ...
