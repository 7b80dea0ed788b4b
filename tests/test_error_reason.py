"""Log lines say what went wrong even when the exception carries no message."""

from __future__ import annotations

from voxgate.core.errors import UnavailableError, reason


def test_a_message_is_kept() -> None:
    assert reason(UnavailableError("database is away")) == "database is away"


def test_a_timeout_without_a_message_says_it_timed_out() -> None:
    assert reason(TimeoutError()) == "no answer in time"


def test_another_exception_without_a_message_names_its_kind() -> None:
    assert reason(ConnectionResetError()) == "ConnectionResetError"
