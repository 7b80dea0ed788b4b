"""What text the store accepts: anything both databases can hold. PostgreSQL refuses NUL in
text, and a lone UTF-16 surrogate (``"\\ud800"``, which JSON allows) cannot be encoded at all."""

from __future__ import annotations

from voxgate.core.errors import StoreError


def unstorable(value: str) -> str | None:
    """Why ``value`` cannot be stored, or None."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    return None


def check_storable(value: str, what: str) -> str:
    problem = unstorable(value)
    if problem is not None:
        raise StoreError(f"{what} {problem}")
    return value


def check_name(value: str, what: str) -> str:
    """A name shown in lists and used on command lines: no control characters either."""
    check_storable(value, what)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise StoreError(f"{what} has control characters: {value!r}")
    return value
