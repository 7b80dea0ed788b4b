"""Who ends the user's turn: the server, on trailing silence, or the client, with a commit.

Chosen per protocol (and per session where the protocol lets the client say: the relay's
``turn_detection``), honoured by the cascade (:class:`~voxgate.pipeline.session.TurnSession`) and
by a speech-to-speech session alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerVAD:
    """The server ends the turn after ``silence_ms`` of trailing silence."""

    silence_ms: int
    """Milliseconds of silence after speech that end the turn."""
    threshold: float = 0.5
    """Speech probability (0..1) above which a chunk of audio counts as speech."""


@dataclass(frozen=True, slots=True)
class ClientCommit:
    """The client ends each turn (its own VAD, push-to-talk, a final chunk): silence never does.
    Where the engine runs a VAD of its own it still finds where speech is (for barge-in)."""

    threshold: float = 0.5
    """Speech probability (0..1) above which a chunk of audio counts as speech."""


TurnDetection = ServerVAD | ClientCommit
