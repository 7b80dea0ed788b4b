"""The admin API's endpoints: each takes the request and the server's context, returns JSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import asdict
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxgate.core.config import Settings
from voxgate.core.errors import NotFoundError
from voxgate.server.admin_api._input import (
    ApiError,
    bad_request,
    before_of,
    body,
    integer,
    limit_of,
    number,
    since_of,
    text,
)
from voxgate.server.shared import NoticeKind
from voxgate.store import Store
from voxgate.store.characters import BUILT_IN
from voxgate.store.records import Character, Device
from voxgate.store.reports import usage_total

BUILT_IN_SLUGS = frozenset(character.slug for character in BUILT_IN)


class AdminContext(Protocol):
    """What the admin API uses of the server's context."""

    settings: Settings
    store: Store

    @property
    def sessions(self) -> Collection[object]: ...

    async def online_devices(self) -> Mapping[int, Collection[str]]:
        """On every replica: each device online, and the replicas holding its sessions."""
        ...

    async def live_sessions(self) -> int:
        """On every replica."""
        ...

    async def publish(self, kind: NoticeKind, device_id: int) -> None:
        """To every replica."""
        ...

    def start_drain(self) -> None: ...


Handler = Callable[[Request, AdminContext], Awaitable[Response]]


def _today() -> float:
    now = dt.datetime.now(dt.UTC)
    return dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC).timestamp()


def _device(device: Device, online: Mapping[int, Collection[str]]) -> dict[str, Any]:
    return {
        "id": device.id,
        "name": device.name,
        "mac": device.mac,
        "user": device.user,
        "settings": asdict(device.settings),
        "created_at": device.created_at,
        "last_seen_at": device.last_seen_at,
        "revoked_at": device.revoked_at,
        "revoked": not device.active,
        "pairing_until": device.pair_until,
        "online": device.id in online,
        "replicas": sorted(online.get(device.id, ())),
    }


def _character(character: Character) -> dict[str, Any]:
    return {**asdict(character), "built_in": character.slug in BUILT_IN_SLUGS}


def _ok(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status)


# -- overview and devices -----------------------------------------------------------------------


async def overview(request: Request, ctx: AdminContext) -> Response:
    store = ctx.store
    devices = await store.devices.all()
    today = await store.reports.usage(since=_today())
    writer = store.writer
    return _ok(
        {
            "devices": len(devices),
            "devices_active": sum(device.active for device in devices),
            "devices_online": len(await ctx.online_devices()),
            "users": len(await store.users.all()),
            "sessions_live": await ctx.live_sessions(),
            "turns_today": sum(row.turns for row in today),
            "cost_today_usd": round(sum(row.cost_usd for row in today), 6),
            "writer": {
                "healthy": writer.healthy,
                "pending": writer.pending,
                "last_error": writer.last_error,
            },
        }
    )


async def list_devices(request: Request, ctx: AdminContext) -> Response:
    online = await ctx.online_devices()
    return _ok({"devices": [_device(device, online) for device in await ctx.store.devices.all()]})


async def add_device(request: Request, ctx: AdminContext) -> Response:
    data = await body(request, ("name", "mac", "user"))
    name = text(data, "name", 100, required=True) or ""
    mac = text(data, "mac", 32)
    user = text(data, "user", 100)
    devices = ctx.store.devices
    if await _exists(devices.by_name(name.strip())):
        raise ApiError(409, "conflict", f"a device named {name.strip()!r} exists")
    taken = await devices.by_mac(mac) if mac else None
    if taken is not None:
        raise ApiError(409, "conflict", f"device {taken.name!r} has MAC {taken.mac} already")
    window_s = ctx.settings.server.elato_pairing_window_s
    device, token = await devices.add(name, mac, user=user, pairing_window_s=window_s)
    return _ok({"device": _device(device, await ctx.online_devices()), "token": token}, 201)


async def change_device(request: Request, ctx: AdminContext) -> Response:
    data = await body(request, ("user", "character", "volume", "pitch", "language"))
    if not data:
        raise bad_request("nothing to change: give user, character, volume, pitch or language")
    readers: dict[str, Callable[[], Any]] = {
        "user": lambda: text(data, "user", 100),
        "character": lambda: text(data, "character", 64),
        "volume": lambda: integer(data, "volume", 0, 100),
        "pitch": lambda: number(data, "pitch", 0.5, 2.0),
        "language": lambda: text(data, "language", 16),
    }
    changes = {key: readers[key]() for key in data}
    device = await ctx.store.devices.configure(request.path_params["name"], **changes)
    await ctx.publish(NoticeKind.DEVICE_CHANGED, device.id)
    return _ok({"device": _device(device, await ctx.online_devices())})


async def revoke_device(request: Request, ctx: AdminContext) -> Response:
    name = request.path_params["name"]
    devices = ctx.store.devices
    await devices.by_name(name)
    if not await devices.revoke(name):
        raise ApiError(409, "conflict", f"device {name!r} is revoked already")
    revoked = await devices.by_name(name)
    # Its live sessions end, on whichever replica they are.
    await ctx.publish(NoticeKind.REVOKED, revoked.id)
    return _ok({"device": _device(revoked, await ctx.online_devices())})


async def pair_device(request: Request, ctx: AdminContext) -> Response:
    """Opens the ElatoAI pairing window again (earlier tokens stop working)."""
    window_s = ctx.settings.server.elato_pairing_window_s
    device = await ctx.store.devices.pair(request.path_params["name"], window_s)
    await ctx.publish(NoticeKind.DEVICE_CHANGED, device.id)
    return _ok({"device": _device(device, await ctx.online_devices())})


async def drain(request: Request, ctx: AdminContext) -> Response:
    """This replica stops taking sessions (``/healthz`` answers 503 ``draining``, so the load
    balancer sends no one new), lets the replies in flight finish (``server.shutdown_grace_s``),
    then ends the sessions left, whose devices reconnect to another replica. It keeps running
    until stopped."""
    ctx.start_drain()
    return _ok({"draining": True, "sessions": len(ctx.sessions)}, 202)


async def _exists(lookup: Awaitable[object]) -> bool:
    try:
        await lookup
    except NotFoundError:
        return False
    return True


# -- users and characters -----------------------------------------------------------------------


async def list_users(request: Request, ctx: AdminContext) -> Response:
    devices = await ctx.store.devices.all()
    return _ok(
        {
            "users": [
                {
                    "id": user.id,
                    "name": user.name,
                    "created_at": user.created_at,
                    "devices": sum(1 for device in devices if device.user == user.name),
                }
                for user in await ctx.store.users.all()
            ]
        }
    )


async def add_user(request: Request, ctx: AdminContext) -> Response:
    data = await body(request, ("name",))
    name = (text(data, "name", 100, required=True) or "").strip()
    if await _exists(ctx.store.users.by_name(name)):
        raise ApiError(409, "conflict", f"a user named {name!r} exists")
    user = await ctx.store.users.add(name)
    return _ok({"user": {"id": user.id, "name": user.name, "created_at": user.created_at}}, 201)


async def list_characters(request: Request, ctx: AdminContext) -> Response:
    characters = await ctx.store.characters.all()
    return _ok({"characters": [_character(character) for character in characters]})


async def put_character(request: Request, ctx: AdminContext) -> Response:
    slug = request.path_params["slug"]
    data = await body(
        request,
        (
            "slug",
            "name",
            "system_prompt",
            "description",
            "first_message",
            "voice",
            "language",
            "pitch",
        ),
    )
    if data.get("slug", slug) != slug:
        raise bad_request(f"slug: {data['slug']!r} differs from the URL's {slug!r}")
    character = Character(
        slug=slug,
        name=text(data, "name", 100, required=True) or "",
        system_prompt=text(data, "system_prompt", 20_000, required=True) or "",
        description=text(data, "description", 1000) or "",
        first_message=text(data, "first_message", 2000),
        voice=text(data, "voice", 200),
        language=text(data, "language", 16),
        pitch=number(data, "pitch", 0.5, 2.0),
    )
    existed = await _exists(ctx.store.characters.get(slug))
    saved = await ctx.store.characters.save(character)
    return _ok({"character": _character(saved)}, 200 if existed else 201)


async def delete_character(request: Request, ctx: AdminContext) -> Response:
    slug = request.path_params["slug"]
    await ctx.store.characters.get(slug)
    if slug in BUILT_IN_SLUGS:
        raise ApiError(
            409, "conflict", f"{slug!r} is built in and would come back at the next start; edit it"
        )
    await ctx.store.characters.delete(slug)
    return _ok({"deleted": slug})


# -- conversations and reports ------------------------------------------------------------------


async def list_conversations(request: Request, ctx: AdminContext) -> Response:
    device = request.query_params.get("device") or None
    limit = limit_of(request, default=50, cap=500)
    before = before_of(request)
    if device is not None:
        await ctx.store.devices.by_name(device)
    found = await ctx.store.conversations.recent(device=device, limit=limit, before=before)
    return _ok(
        {
            "conversations": [asdict(conversation) for conversation in found],
            # Pass as ?before= for the next page.
            "next_before": found[-1].started_at if len(found) == limit else None,
        }
    )


async def get_conversation(request: Request, ctx: AdminContext) -> Response:
    conversation_id = request.path_params["id"]
    messages = await ctx.store.conversations.messages(conversation_id)
    return _ok(
        {
            "id": conversation_id,
            "messages": [
                {
                    # A turn is (session_id, turn_id): turn_ids restart in every session.
                    "session_id": message.session_id,
                    "turn_id": message.turn_id,
                    "role": message.role,
                    "text": message.text,
                    "heard_text": message.heard_text,
                    "interrupted": message.interrupted,
                    "audio_s": message.audio_s,
                    "timings": message.timings,
                    "created_at": message.created_at,
                }
                for message in messages
            ],
        }
    )


async def usage(request: Request, ctx: AdminContext) -> Response:
    user = request.query_params.get("user") or None
    rows = await ctx.store.reports.usage(user=user, since=since_of(request))
    return _ok(
        {
            "rows": [asdict(row) for row in reversed(rows)],
            "total": {
                key: value
                for key, value in asdict(usage_total(rows)).items()
                if key not in ("day", "user")
            },
        }
    )


async def latency(request: Request, ctx: AdminContext) -> Response:
    days = await ctx.store.reports.latency(since=since_of(request))
    return _ok({"days": list(reversed(days))})


async def errors(request: Request, ctx: AdminContext) -> Response:
    found = await ctx.store.reports.errors(limit_of(request, default=100, cap=1000))
    return _ok({"errors": [asdict(entry) for entry in found]})
