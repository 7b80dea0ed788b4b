"""A small error hierarchy: every failure voxgate reports carries a machine-readable code."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Codes sent to consumers in :class:`voxgate.core.events.ErrorEvent`."""

    BAD_AUDIO = "bad_audio"
    NO_SPEECH = "no_speech"
    STT_FAILED = "stt_failed"
    LLM_FAILED = "llm_failed"
    LLM_EMPTY = "llm_empty"
    TTS_FAILED = "tts_failed"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNKNOWN_EVENT = "unknown_event"
    SEQ_GAP = "seq_gap"
    SHUTTING_DOWN = "shutting_down"
    LOADING_MODELS = "loading_models"
    UNAVAILABLE = "unavailable"
    """The server cannot check the credentials now (its database is busy or away): try again."""
    INTERNAL = "internal"


class VoxgateError(Exception):
    """Base of every error voxgate raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL


class ConfigError(VoxgateError):
    """The configuration names something that does not exist or cannot work."""

    code = ErrorCode.BAD_REQUEST


class StoreError(VoxgateError):
    """Something asked of the store cannot be done: a name taken, a bad value."""

    code = ErrorCode.BAD_REQUEST


class NotFoundError(StoreError):
    """A device, user, character or conversation that does not exist."""


class UnavailableError(VoxgateError):
    """The database cannot answer now (locked, read-only, away): the same request may work in
    a moment. Devices are told to try again (1013 / 503), not that their token is bad."""

    code = ErrorCode.UNAVAILABLE


class ModelError(VoxgateError):
    """A model is missing, corrupt or cannot be prepared; the message says which package to install."""


class AudioFormatError(VoxgateError):
    """Audio that cannot be understood (bad rate, unreadable file)."""

    code = ErrorCode.BAD_AUDIO


class ProtocolError(VoxgateError):
    """A device sent something its protocol does not allow; the codec says what."""

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code


class ProviderError(VoxgateError):
    """An engine (VAD, STT, LLM, TTS) failed; ``retryable`` says whether trying again may help."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        """How long the provider asked us to wait (an HTTP ``Retry-After``), when it said."""


def reason(exc: BaseException) -> str:
    """What went wrong, for a log line: the message, or what kind of failure it was when it has
    none (a timeout's message is empty, which made "cannot check a token ()" lines)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer in time"
    return str(exc) or type(exc).__name__
