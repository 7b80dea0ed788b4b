"""Sessions the server ends: asked for by a revocation (on any replica) or a drain, carried
out by the transport running the session (it closes with the protocol's code).

Revocations made behind the server's back (``voxgate devices revoke`` writes the database only;
the admin API's revoke is also published to every replica and acts at once) are found by
:func:`watch_revocations`: each replica checks the devices it holds sessions for every
``server.revocation_check_s`` and ends the sessions of those revoked since."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from voxgate.core.errors import UnavailableError
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols.closing import Ending
from voxgate.server.shared import Notice, NoticeKind

if TYPE_CHECKING:
    from voxgate.server.context import ServerContext

logger = logging.getLogger(__name__)


class Endings:
    """One request to end, at most, per open session."""

    def __init__(self) -> None:
        self._asked: dict[VoiceSession, asyncio.Future[tuple[Ending, str]]] = {}

    def open(self, session: VoiceSession) -> None:
        self._asked[session] = asyncio.get_running_loop().create_future()

    def closed(self, session: VoiceSession) -> None:
        self._asked.pop(session, None)

    def end(self, session: VoiceSession, ending: Ending, detail: str = "") -> None:
        """Ask the transport running ``session`` to end it so."""
        ask = self._asked.get(session)
        if ask is not None and not ask.done():
            ask.set_result((ending, detail))

    async def requested(self, session: VoiceSession) -> tuple[Ending, str]:
        """Returns once :meth:`end` was asked for this session: how."""
        ask = self._asked.get(session)
        if ask is None:  # not opened through the context: never asked
            await asyncio.Event().wait()
            raise AssertionError("unreachable")  # pragma: no cover
        return await ask


async def watch_revocations(ctx: ServerContext) -> None:
    while True:
        await asyncio.sleep(ctx.settings.server.revocation_check_s)
        try:
            revoked = await ctx.store.devices.revoked_among(ctx.device_ids())
        except UnavailableError as exc:  # the database is away: the next check, then
            logger.debug("cannot check for revocations: %s", exc)
            continue
        for device_id in revoked:
            await ctx.on_notice(Notice(NoticeKind.REVOKED, device_id, ctx.replica_id))
