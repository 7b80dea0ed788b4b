"""SentenceSplitter: streamed LLM text → pieces worth speaking, as early as they are complete."""

from __future__ import annotations

import re

import pytest

from voxgate.pipeline.sentences import SentenceSplitter, speakable


def tokens(text: str) -> list[str]:
    """Roughly how an LLM streams: words with their leading space, punctuation on its own."""
    return re.findall(r" ?[\w']+|[^\w\s]|\s+", text)


def split(text: str, *, by: str = "token", first_clause_min_words: int = 4) -> list[str]:
    """All pieces, pushed token by token (or char by char), then flushed."""
    splitter = SentenceSplitter(first_clause_min_words)
    deltas = list(text) if by == "char" else tokens(text)
    assert "".join(deltas) == text
    pieces = [piece for delta in deltas for piece in splitter.push(delta)]
    return pieces + splitter.flush()


def arrivals(deltas: list[str], first_clause_min_words: int = 4) -> list[tuple[int, str]]:
    """Each piece with the index of the delta that completed it."""
    splitter = SentenceSplitter(first_clause_min_words)
    return [(i, piece) for i, delta in enumerate(deltas) for piece in splitter.push(delta)]


@pytest.mark.parametrize("by", ["token", "char"])
def test_streamed_text_is_cut_into_sentences(by: str) -> None:
    text = "Hello there! How are you today? I am fine.\nThanks for asking"
    assert split(text, by=by) == [
        "Hello there!",
        "How are you today?",
        "I am fine.",
        "Thanks for asking",
    ]


def test_a_sentence_comes_out_as_soon_as_the_next_whitespace_arrives() -> None:
    deltas = ["Hi", " there", ".", " How", " are", " you", "?", " Fine"]
    assert arrivals(deltas) == [(3, "Hi there."), (7, "How are you?")]


def test_a_full_stop_at_the_end_of_the_buffer_waits_for_what_follows() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("It costs 3.") == []
    assert splitter.push("5 dollars. ") == ["It costs 3.5 dollars."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Smith will see you at St. Mary's. Bring your card.",
            ["Dr. Smith will see you at St. Mary's.", "Bring your card."],
        ),
        (
            "Bring fruit, e.g. apples, i.e. something sweet. Mr. and Mrs. Jones agree.",
            ["Bring fruit, e.g. apples, i.e. something sweet.", "Mr. and Mrs. Jones agree."],
        ),
        ("See Prof. Lee vs. Dr. No today. Ok.", ["See Prof. Lee vs. Dr. No today.", "Ok."]),
    ],
)
def test_abbreviations_do_not_end_a_sentence(text: str, expected: list[str]) -> None:
    assert split(text, first_clause_min_words=50) == expected
    assert split(text, by="char", first_clause_min_words=50) == expected


@pytest.mark.parametrize("by", ["token", "char"])
def test_decimals_do_not_end_a_sentence(by: str) -> None:
    text = "It weighs 3.5 kg. That is 7.72 pounds, or 0.5 stone."
    assert split(text, by=by, first_clause_min_words=50) == [
        "It weighs 3.5 kg.",
        "That is 7.72 pounds, or 0.5 stone.",
    ]


def test_the_first_piece_may_end_at_a_comma_once_it_has_enough_words() -> None:
    text = "Well, I think the answer is yes, but maybe not. Also, this one, with commas, stays."
    assert split(text) == [
        "Well, I think the answer is yes,",  # "Well," alone has too few words
        "but maybe not.",
        "Also, this one, with commas, stays.",  # only the first piece is cut at a comma
    ]


def test_the_first_clause_goes_out_while_the_sentence_is_still_streaming() -> None:
    deltas = ["Of", " course", " I", " can", ",", " here", " is", " how", "."]
    assert arrivals(deltas) == [(5, "Of course I can,")]


def test_no_comma_cut_after_a_full_first_sentence() -> None:
    text = "Sure, that works. Then, after all of that is done, we rest."
    assert split(text) == ["Sure, that works.", "Then, after all of that is done, we rest."]


@pytest.mark.parametrize(("min_words", "first"), [(1, "Yes,"), (3, "Yes, I think,"), (9, None)])
def test_first_clause_min_words(min_words: int, first: str | None) -> None:
    pieces = split("Yes, I think, all of this is fine.", first_clause_min_words=min_words)
    if first is None:
        assert pieces == ["Yes, I think, all of this is fine."]
    else:
        assert pieces[0] == first
        assert " ".join(pieces) == "Yes, I think, all of this is fine."


def test_flush_returns_the_rest_once() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("One. Two without an end") == ["One."]
    assert splitter.flush() == ["Two without an end"]
    assert splitter.flush() == []


def test_flush_of_nothing_speakable_is_empty() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("  \n") == []
    assert splitter.flush() == []
    splitter.push("**  ** 🎉")
    assert splitter.flush() == []


def test_newlines_end_pieces_and_empty_lines_are_dropped() -> None:
    assert split("First line\n\n\nSecond line\n") == ["First line", "Second line"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("**Bold** and _italic_ and `code`", "Bold and italic and code"),
        ("# A title", "A title"),
        ("Great job 🎉🚀 well   done", "Great job well done"),
        ("Thumbs up 👍🏽!", "Thumbs up !"),
        ("Sunny ☀ and done ✅", "Sunny and done"),
        ("I love it ❤️ so much", "I love it so much"),
        ("Family 👨‍👩‍👧 time", "Family time"),
        ("You get a ⭐ and a ⏰", "You get a and a"),
        ("Plain text, 3.5 kg, it's 50% off!", "Plain text, 3.5 kg, it's 50% off!"),
    ],
)
def test_speakable_removes_markdown_and_emoji(text: str, expected: str) -> None:
    assert speakable(text) == expected


def test_markdown_and_emoji_are_removed_from_streamed_pieces() -> None:
    text = "Here is **one** thing. 🎉 Done! ❤️\n- item"
    assert split(text) == ["Here is one thing.", "Done!", "- item"]


def test_a_long_first_sentence_is_cut_after_the_word_limit_but_later_ones_are_not() -> None:
    splitter = SentenceSplitter(first_clause_min_words=4, first_piece_max_words=5)
    pieces: list[str] = []
    text = "one two three four five six seven. eight nine ten eleven twelve thirteen fourteen. "
    for character in text:
        pieces += splitter.push(character)
    assert pieces == [
        "one two three four five",
        "six seven.",
        "eight nine ten eleven twelve thirteen fourteen.",
    ]


def test_a_partial_word_is_never_cut() -> None:
    splitter = SentenceSplitter(first_piece_max_words=2)
    assert splitter.push("alpha beta gam") == []
    assert splitter.push("ma ") == ["alpha beta"]
    assert splitter.flush() == ["gamma"]
