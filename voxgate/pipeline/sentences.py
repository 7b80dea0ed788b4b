"""Cuts streamed LLM text into pieces worth speaking, as early as they are complete."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (or …) plus closing quotes/brackets, followed by whitespace; or a newline.
_SENTENCE_END = re.compile(r"""[.!?…]+["')\]]*\s+|\n+""")
_CLAUSE_END = re.compile(r"[,;:—]\s+")
_WORD_THEN_SPACE = re.compile(r"\S+\s+")
_ABBREVIATIONS = frozenset(
    {
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "st.",
        "vs.",
        "etc.",
        "e.g.",
        "i.e.",
        "prof.",
        "no.",
        "jr.",
        "sr.",
    }
)
# Markdown and other marks that TTS would read aloud or choke on; emoji with their invisible
# variation selectors and zero-width joiners (else "❤️" leaves a lone U+FE0F to speak).
_UNSPEAKABLE = re.compile(
    r"[*_#`~|<>\[\]{}]"
    r"|[\U0001F000-\U0001FAFF\u2300-\u23FF\u2600-\u27BF\u2B00-\u2BFF\uFE0E\uFE0F\u200D]"
)


def speakable(text: str) -> str:
    """Text with markdown marks and emoji removed and whitespace collapsed."""
    return " ".join(_UNSPEAKABLE.sub("", text).split())


class SentenceSplitter:
    """Feed text deltas, get complete sentences back.

    The first piece of a reply may be a clause: once it has ``first_clause_min_words`` words and
    reaches a comma, it goes to TTS, because the user waits for the first audio, not the first
    full stop. A first sentence that runs past ``first_piece_max_words`` without a comma is cut
    after that word, for the same reason (at some cost in prosody).
    """

    def __init__(
        self, first_clause_min_words: int = 4, first_piece_max_words: int | None = None
    ) -> None:
        self._buffer = ""
        self._first_clause_min_words = first_clause_min_words
        self._first_piece_max_words = first_piece_max_words
        self._emitted_any = False

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return pieces
            if piece:
                pieces.append(piece)
                self._emitted_any = True

    def flush(self) -> list[str]:
        rest = speakable(self._buffer)
        self._buffer = ""
        if rest:
            self._emitted_any = True
            return [rest]
        return []

    def _next_piece(self) -> str | None:
        start = 0
        while True:
            match = _SENTENCE_END.search(self._buffer, start)
            if match is None:
                break
            candidate = self._buffer[: match.start()]
            last_word = candidate.rsplit(maxsplit=1)[-1].lower() + "." if candidate.strip() else ""
            if match.group().startswith(".") and last_word.rstrip(".") + "." in _ABBREVIATIONS:
                start = match.end()
                continue
            return self._take(match.end())
        if not self._emitted_any:
            for clause in _CLAUSE_END.finditer(self._buffer):
                if len(self._buffer[: clause.start()].split()) >= self._first_clause_min_words:
                    return self._take(clause.end())
            limit = self._first_piece_max_words
            # Only words followed by whitespace are complete: the last one may still grow.
            complete = list(_WORD_THEN_SPACE.finditer(self._buffer))
            if limit is not None and len(complete) > limit:
                return self._take(complete[limit - 1].end())
        return None

    def _take(self, end: int) -> str:
        piece, self._buffer = self._buffer[:end], self._buffer[end:]
        return speakable(piece)
