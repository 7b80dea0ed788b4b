"""Reading admin API requests: JSON bodies, their fields and query parameters, each checked,
with errors that name the field."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Collection
from typing import Any

from starlette.requests import Request

from voxgate.store.text import unstorable

MAX_BODY_BYTES = 256 * 1024


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


async def body(request: Request, allowed: Collection[str]) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "bad_request", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad_request("the body is not JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return data


def text(data: dict[str, Any], key: str, max_chars: int, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise bad_request(f"{key}: required, a non-empty string")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise bad_request(f"{key}: expected a{' non-empty' if required else ''} string or null")
    if len(value) > max_chars:
        raise bad_request(f"{key}: at most {max_chars} characters")
    problem = unstorable(value)
    if problem is not None:
        raise bad_request(f"{key}: {problem}")
    return value


def number(data: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{key}: expected a number or null")
    # Range first: an integer of 400 digits has no float (math.isfinite would overflow).
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise bad_request(f"{key}: expected {low}-{high}, not {_short(value)}")
    return float(value)


def integer(data: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad_request(f"{key}: expected an integer or null")
    if value is not None and not low <= value <= high:
        raise bad_request(f"{key}: expected {low}-{high}, not {_short(value)}")
    return value


def _short(value: float) -> str:
    """A number for an error message: a 400-digit one is not echoed whole."""
    shown = str(value)
    return shown if len(shown) <= 20 else f"{shown[:8]}...({len(shown)} digits)"


def limit_of(request: Request, default: int, cap: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"limit: expected an integer 1-{cap}, not {raw!r}") from None
    if not 1 <= value <= cap:
        raise bad_request(f"limit: expected an integer 1-{cap}, not {value}")
    return value


def since_of(request: Request) -> float | None:
    raw = request.query_params.get("since")
    if not raw:
        return None
    try:
        day = dt.datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise bad_request(f"since: expected a day YYYY-MM-DD, not {raw!r}") from None
    return day.timestamp()


def before_of(request: Request) -> float | None:
    raw = request.query_params.get("before")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise bad_request(f"before: expected epoch seconds, not {raw!r}")
    return value
