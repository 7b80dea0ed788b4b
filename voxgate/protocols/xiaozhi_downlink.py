"""Turn-engine events → what a xiaozhi-esp32 device is sent (the transport's EventEncoder).

The firmware's states that matter: LISTENING (microphone on), SPEAKING (after ``tts start``,
until ``tts stop``; in auto and realtime mode it then listens again, in manual mode it goes
idle) and IDLE. Every reply that started therefore ends with exactly one ``tts stop``, cut short
or not: a device left in SPEAKING would never listen again. Control messages carry no
``turn_id`` (the event pump drops the frames of an interrupted reply, and these must still go
out); Opus packets carry theirs, so audio of an interrupted reply stops at once.
"""

from __future__ import annotations

import re

from voxgate.core.errors import ErrorCode
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    ReplyAudio,
    ReplyStarted,
    ReplyTextDelta,
    SessionEndRequested,
    Transcript,
    TurnDone,
)
from voxgate.protocols.frames import Outbound, pcm_at
from voxgate.protocols.opus import OpusPacketizer
from voxgate.protocols.xiaozhi import FRAME_MS, OUTPUT_RATE_HZ, dump, frame

BITRATE_BPS = 24_000

EMOTIONS: dict[str, str] = {
    "neutral": "😶",
    "happy": "🙂",
    "laughing": "😆",
    "sad": "😔",
    "surprised": "😯",
    "thinking": "🤔",
    "confused": "🙄",
    "loving": "😍",
}
"""Emotions the firmware shows (a subset of its 21), with the emoji the reference server sends."""

_CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("sad", re.compile(r"\b(sorry|unfortunately|sad|can't|cannot)\b")),
    ("laughing", re.compile(r"\b(haha|funny|joke|lol)\b")),
    ("loving", re.compile(r"\b(love|lovely|sweet)\b")),
    ("surprised", re.compile(r"\b(wow|oh|really|amazing)\b")),
    ("thinking", re.compile(r"\b(hmm|let me think|maybe|perhaps)\b")),
    ("happy", re.compile(r"\b(great|glad|sure|happy|hello|hi|good|nice)\b|!")),
)


def emotion_for(text: str) -> str:
    """The face to show for a reply that begins with ``text``: a few word cues, else neutral.
    (The reference server asks its LLM for an emoji; small local models are not reliable at it,
    and this costs nothing.)"""
    lowered = text.lower().replace("\u2019", "'")
    for emotion, cue in _CUES:
        if cue.search(lowered):
            return emotion
    return "neutral"


GOODBYE = "\x00goodbye"
"""Not sent: tells the transport the assistant ended the session (its goodbye's audio is out),
so it lets the board play what it holds before closing: the firmware drops its queue when the
connection closes."""


def stt_message(session_id: str, text: str) -> str:
    return dump({"session_id": session_id, "type": "stt", "text": text})


def llm_message(session_id: str, emotion: str) -> str:
    return dump(
        {"session_id": session_id, "type": "llm", "text": EMOTIONS[emotion], "emotion": emotion}
    )


def tts_message(session_id: str, state: str, text: str | None = None) -> str:
    message: dict[str, object] = {"session_id": session_id, "type": "tts", "state": state}
    if text is not None:
        message["text"] = text
    return dump(message)


def alert_message(session_id: str, status: str, message: str, emotion: str = "sad") -> str:
    """Shown (and buzzed) by the device; the firmware needs all three fields."""
    return dump(
        {
            "session_id": session_id,
            "type": "alert",
            "status": status,
            "message": message,
            "emotion": emotion,
        }
    )


class XiaozhiEncoder:
    """Events → xiaozhi frames for one connection (binary protocol ``version``)."""

    def __init__(
        self, session_id: str, version: int, packetizer: OpusPacketizer | None = None
    ) -> None:
        self.session_id = session_id
        self.version = version
        self._opus = packetizer or OpusPacketizer(
            OUTPUT_RATE_HZ, frame_ms=FRAME_MS, bitrate_bps=BITRATE_BPS, application="voip"
        )
        self.reply_turn_id: int | None = None
        """The reply the device is speaking (``tts start`` sent, ``tts stop`` not yet)."""
        self._emotion_sent = False

    def encode(self, event: Event) -> list[Outbound]:
        sid = self.session_id
        match event:
            case Transcript(text=text, final=True):
                return [Outbound(stt_message(sid, text))]
            case ReplyStarted(turn_id=turn_id):
                self.reply_turn_id = turn_id
                self._emotion_sent = False
                self._opus.reset()
                return [Outbound(tts_message(sid, "start"))]
            case ReplyTextDelta(turn_id=turn_id, text=text) if (
                turn_id == self.reply_turn_id and not self._emotion_sent and text.strip()
            ):
                self._emotion_sent = True
                return [Outbound(llm_message(sid, emotion_for(text)))]
            case ReplyAudio() if event.turn_id == self.reply_turn_id:
                out: list[Outbound] = []
                if event.sentence_start:
                    out.append(Outbound(tts_message(sid, "sentence_start", event.sentence_text)))
                return out + self._audio(event)
            case Interrupted(turn_id=turn_id) if turn_id == self.reply_turn_id:
                self._opus.reset()  # its last partial frame is not to be played
                self.reply_turn_id = None
                return [Outbound(tts_message(sid, "stop"))]
            case TurnDone(turn_id=turn_id) if turn_id == self.reply_turn_id:
                self.reply_turn_id = None
                packets = [] if event.interrupted else self._packets(self._opus.flush(), turn_id)
                return [*packets, Outbound(tts_message(sid, "stop"))]
            case SessionEndRequested():
                return [Outbound(GOODBYE)]
            case ErrorEvent(code=code, message=message) if (
                self.reply_turn_id is None and code is not ErrorCode.NO_SPEECH
            ):
                # A turn that failed before its reply (rate limited, STT failed): say so on the
                # screen. Errors during a reply end with its tts stop; silence is no error.
                return [Outbound(alert_message(sid, "error", message))]
        return []

    def _audio(self, event: ReplyAudio) -> list[Outbound]:
        pcm = pcm_at(event, OUTPUT_RATE_HZ)
        return self._packets(self._opus.push(pcm), event.turn_id)

    def _packets(self, packets: list[bytes], turn_id: int) -> list[Outbound]:
        return [
            Outbound(frame(self.version, packet), audio_ms=float(FRAME_MS), turn_id=turn_id)
            for packet in packets
        ]
