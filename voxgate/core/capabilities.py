"""The seams: one small ``typing.Protocol`` per capability.

A provider module implements one of these; the turn engine only ever sees these types. Providers
never see a session or a socket: they take inputs and return results or async iterators.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeGuard

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The LLM asks voxgate to do something rather than (or besides) saying it."""

    name: str
    """One of :data:`TOOLS`, or of the session's own :class:`ToolSpec` s."""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    """The arguments the LLM gave (JSON), for a session's own tools."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool a session offers its LLM besides voxgate's :data:`TOOLS` (a device's own, such as a
    xiaozhi board's speaker volume over MCP)."""

    name: str
    """Letters, digits, ``_`` and ``-`` (what OpenAI-style APIs accept), at most 64."""
    description: str
    parameters: Mapping[str, Any]
    """A JSON schema of the arguments (an object)."""


ToolRunner = Callable[[ToolCall], Awaitable[str]]
"""Runs one of a session's own tools; its answer (or why it failed) as text for the LLM."""


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


class BatchingVAD(VoiceActivityDetector, Protocol):
    """A VAD that can run many sessions' streams in one call (one inference for all of them)."""

    batches: bool
    """True when loaded to batch (a setting); False: use each stream on its own."""

    def speech_probabilities_batch(
        self, streams: Sequence[VADStream], chunks: Sequence[Float32Array]
    ) -> list[Float32Array]:
        """``streams[i].speech_probabilities(chunks[i])`` for every i, in one call. Blocking;
        callers run it off the event loop, one call at a time."""
        ...


def can_batch(vad: VoiceActivityDetector) -> TypeGuard[BatchingVAD]:
    """Whether ``vad`` is loaded to run many streams in one call."""
    return bool(getattr(vad, "batches", False))


class EndOfTurnModel(Protocol):
    """Hears the end of an utterance (trailing silence included) and says whether the speaker
    has finished, from how it sounds: intonation, a trailing "and...", not the silence alone."""

    sample_rate_hz: int

    def complete_probability(self, audio: Float32Array) -> float:
        """Probability in [0, 1] that the turn is complete, for mono ``audio`` at
        ``sample_rate_hz`` from the start of the utterance to now. Blocking (tens of ms);
        callers run it off the event loop."""
        ...


class SpeechToText(Protocol):
    """What an engine can do is declared as data (``sample_rate_hz``, ``streaming``, ``model``);
    a wrapper declares what it wraps."""

    sample_rate_hz: int
    """The rate ``transcribe`` expects its audio at."""
    streaming: bool
    """True when the engine is configured to stream: it is then a :class:`StreamingSpeechToText`."""
    model: str
    """The model it runs, as priced: ``[prices."provider/model"]``."""

    async def transcribe(self, audio: Float32Array) -> str:
        """Text of a whole utterance (float32 samples in [-1, 1], mono). Empty when nothing is said."""
        ...


class STTStream(Protocol):
    """One utterance streamed to a recogniser while the user speaks (per session; the engine
    behind it is shared). Not safe for concurrent calls: one caller pushes and finalizes."""

    async def push(self, audio: Float32Array) -> None:
        """More of the utterance: float32 samples in [-1, 1], mono, at the engine's
        ``sample_rate_hz`` (16 kHz for every engine voxgate has)."""
        ...

    def interim(self) -> AsyncIterator[str]:
        """Running guesses at everything said so far, each time they change. Ends when the stream
        closes; raises :class:`~voxgate.core.errors.ProviderError` if the stream fails."""
        ...

    async def finalize(self) -> str:
        """The final transcript of all the audio pushed so far, once the recogniser has flushed
        what it still held. The stream stays open: more audio may follow, and a later
        ``finalize`` covers it too."""
        ...

    async def aclose(self) -> None: ...


class StreamingSpeechToText(SpeechToText, Protocol):
    """An STT that can also transcribe while the user speaks (its ``transcribe`` still works)."""

    async def open_stream(self) -> STTStream:
        """A new stream for one utterance (connected: connection failures raise here)."""
        ...


def can_stream(stt: SpeechToText) -> TypeGuard[StreamingSpeechToText]:
    """Whether ``stt`` (or the engine its wrappers wrap) is configured to stream."""
    return stt.streaming


async def open_stt_stream(stt: SpeechToText) -> STTStream:
    """``stt.open_stream()``, for wrappers that only know their inner engine as a SpeechToText."""
    if not can_stream(stt):
        raise TypeError(f"{type(stt).__name__} does not stream")
    return await stt.open_stream()


class LanguageModel(Protocol):
    model: str
    """The model it runs, as priced: ``[prices."provider/model"]``."""

    def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyPiece]:
        """Reply text in pieces as it is generated, and any tool calls (only engines configured
        with ``tools``, or offered the session's ``tools``, make them; an engine that cannot
        call tools ignores them). Closing the iterator stops generation."""
        ...


class TextToSpeech(Protocol):
    sample_rate_hz: int
    model: str
    """The model (or, for Piper, the voice) it runs, as priced: ``[prices."provider/model"]``."""

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        """Audio of ``text`` (mono PCM16 at ``sample_rate_hz``), in one or more chunks.

        ``voice``: the character's voice, in the engine's own terms (a Piper voice from the model
        store, an OpenAI voice name, an ElevenLabs voice id, an Aura model); None, or one the
        engine cannot use, gives its configured voice."""
        ...


@dataclass(frozen=True, slots=True)
class WakeDetection:
    """The wake word was heard."""

    wake_word: str
    """Its name (``"hey_jarvis"``)."""
    end_sample: int
    """Samples fed to the stream (at ``sample_rate_hz``) up to the point where it fired: the
    word ended a little before."""
    probability: float
    """The averaged score that crossed the threshold, in [0, 1]."""


class WakeWordStream(Protocol):
    """Per-session wake-word state (the loaded model behind it is shared). One caller."""

    wake_word: str

    def process(self, pcm: Int16Array) -> WakeDetection | None:
        """More audio (mono PCM16 at the detector's ``sample_rate_hz``, any length); a detection
        if the word ended in it. After a detection the stream starts afresh. Blocking (well under
        a millisecond per 10 ms of audio for the embedded engine)."""
        ...

    def reset(self) -> None: ...


class WakeWord(Protocol):
    """A wake-word engine: listens to an always-open stream for one of its installed words."""

    sample_rate_hz: int
    wake_words: tuple[str, ...]
    """The names it can listen for (what ``new_stream`` accepts), sorted."""
    runs_inline: bool
    """True when a call costs microseconds: it then runs on the event loop."""

    def new_stream(self, wake_word: str) -> WakeWordStream:
        """A stream listening for ``wake_word``; ConfigError naming the installed ones if the
        engine has no such word."""
        ...


class ModelResolver(Protocol):
    """Turns a model name from the catalogue (or a path) into a prepared file or directory."""

    def resolve(self, name_or_path: str) -> Path: ...
