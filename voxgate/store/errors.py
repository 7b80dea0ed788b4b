"""What can go wrong in the store, in the store's terms: callers never see SQLAlchemy.

- :class:`~voxgate.core.errors.NotFoundError`: no such device, user, character...
- :class:`StoreInvalid`: a value the store cannot take (a bad name, an out-of-range number).
- :class:`StoreConflict`: it clashes with what is stored (a name taken, a row in use).
- :class:`StoreUnavailable`: the database cannot answer now (away, locked, read-only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from voxgate.core.errors import NotFoundError, StoreError, UnavailableError

__all__ = [
    "NotFoundError",
    "StoreConflict",
    "StoreError",
    "StoreInvalid",
    "StoreUnavailable",
    "translated",
]


class StoreInvalid(StoreError):
    """A value the database refused (too long, out of range, not a number)."""


class StoreConflict(StoreError):
    """It conflicts with what is stored (a unique name taken, a row something refers to)."""


class StoreUnavailable(UnavailableError):
    """The database cannot answer now; ``retryable``: the same request may work in a moment."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """SQLAlchemy's and the driver's errors raised inside, as store errors."""
    try:
        yield
    except IntegrityError as exc:
        raise StoreConflict("that conflicts with what is stored") from exc
    except DataError as exc:
        first_line = (str(exc.orig or exc).splitlines() or ["bad value"])[0]
        raise StoreInvalid(f"the database refused a value: {first_line}") from exc
    except (SQLAlchemyError, OSError) as exc:
        # The first line only: SQLAlchemy's next lines hold the statement and its parameters.
        first_line = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        raise StoreUnavailable(f"the database is unavailable: {first_line}") from exc
