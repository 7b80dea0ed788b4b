"""What every transport shares: settings, the loaded engines, the store, limits, metrics."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from voxgate.core import registry
from voxgate.core.config import CharacterSettings, Settings, TurnSettings
from voxgate.core.errors import ConfigError, NotFoundError, UnavailableError, reason
from voxgate.core.listening import WakeListening
from voxgate.core.turns import ClientCommit, ServerVAD, TurnDetection
from voxgate.pipeline import Engines, TurnSession
from voxgate.pipeline.history import Conversation
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.pipeline.wake_gate import WakeGatedSession
from voxgate.protocols.closing import Ending
from voxgate.server.metrics import Metrics
from voxgate.server.recording import ConversationRecorder, exchanges_of, new_conversation_id
from voxgate.server.session_endings import Endings, watch_revocations
from voxgate.server.shared import Notice, NoticeKind, SharedState, open_shared_state
from voxgate.store import Store
from voxgate.store.conversations import Resumed
from voxgate.store.devices import same_secret, token_hash
from voxgate.store.records import Device
from voxgate.store.writer import DeviceSeen

logger = logging.getLogger(__name__)

BROWSER_DEVICE = "browser"
"""The device the web page is when it talks with the admin token."""
SHARED_TOKEN_DEVICE = "shared-token"
"""The device a connection is when it used the shared token rather than a device's own."""
AUTH_TIMEOUT_S = 3.0
"""Checking a token waits no longer for the database; then the device is told to try again."""
HISTORY_TIMEOUT_S = 2.0
"""A session does not wait longer than this for its history; it starts fresh instead."""


@dataclass(frozen=True, slots=True)
class CharacterChoice:
    settings: CharacterSettings
    character_id: int | None
    """The stored character's row, or None for the configured default."""


@dataclass
class ServerContext:
    settings: Settings
    engines: Engines
    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: set[VoiceSession] = field(default_factory=set)
    shared: SharedState | None = None
    """Limits, presence and notices: this process's memory, or Redis with ``redis.url``."""

    def __post_init__(self) -> None:
        if self.shared is None:
            self.shared = open_shared_state(self.settings)
        self.connection_limit = self.shared.connection_limit
        self.replica_id = self.shared.replica_id
        self._recorders: dict[VoiceSession, ConversationRecorder] = {}
        self._devices_of: dict[VoiceSession, int] = {}
        self._holders: dict[VoiceSession, str] = {}
        self.endings = Endings()
        """Sessions the server asked to end (a revocation, a drain)."""
        self._draining: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._pseudo_devices: dict[str, Device] = {}
        # Devices that authenticated, by token hash: used only while the database is away, so
        # devices already known can reconnect. A revocation takes effect once it is back.
        self._known_tokens: dict[str, Device] = {}

    # -- who is connecting ------------------------------------------------------------------

    async def authenticate(self, token: str | None) -> Device | None:
        """A device token, the admin token (the web page) or the shared token if configured.
        Raises UnavailableError when the database cannot say, for a token not seen before."""
        if not token:
            return None
        server = self.settings.server
        if server.admin_token is not None and same_secret(
            token, server.admin_token.get_secret_value()
        ):
            return await self._pseudo_device(BROWSER_DEVICE)
        if server.shared_token is not None and same_secret(
            token, server.shared_token.get_secret_value()
        ):
            return await self._pseudo_device(SHARED_TOKEN_DEVICE)
        device = await self._checked(token_hash(token), self._by_token(token))
        if device is not None:
            # Queued, not awaited: a locked database must not hold up (or fail) the login.
            self.store.writer.submit(DeviceSeen(device.id))
        return device

    async def device_for_credential(self, credential: str, device_id: int) -> Device | None:
        """The device a credential that names it (an ElatoAI token) is for, looked up like a
        token: while the database is away, a device that connected with it before is known."""

        async def lookup() -> Device | None:
            try:
                return await self.store.devices.get(device_id)
            except NotFoundError:
                return None

        return await self._checked(token_hash(credential), lookup())

    def _by_token(self, token: str) -> Coroutine[Any, Any, Device | None]:
        return self.store.devices.authenticate(token, note_seen=False)

    async def _checked(
        self, digest: str, lookup: Coroutine[Any, Any, Device | None]
    ) -> Device | None:
        """The device ``lookup`` finds, remembered under ``digest`` for an outage. Raises
        UnavailableError when the database cannot say, for a credential not seen before."""
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                device = await lookup
        except (UnavailableError, TimeoutError) as exc:
            known = self._known_tokens.get(digest)
            logger.warning(
                "cannot check a token in the database (%s); known: %s", reason(exc), bool(known)
            )
            if known is None:
                # Not "invalid token": the device would give up, or be reported as revoked.
                raise UnavailableError(
                    "cannot check the token now (the database is busy or away); try again"
                ) from exc
            return known
        if device is None:
            self._known_tokens.pop(digest, None)
        else:
            self._known_tokens[digest] = device
        return device

    async def _pseudo_device(self, name: str) -> Device:
        if name not in self._pseudo_devices:
            try:
                async with asyncio.timeout(AUTH_TIMEOUT_S):
                    self._pseudo_devices[name] = await self.store.devices.ensure(name)
            except (UnavailableError, TimeoutError) as exc:  # made on first use: a write
                raise UnavailableError(
                    f"cannot set up the {name} device now (the database is busy or away); try again"
                ) from exc
        device = self._pseudo_devices[name]
        # Seen now, as a device with its own token is when it authenticates (the admin page's
        # "last seen"): queued, so a busy database never holds up the connection.
        self.store.writer.submit(DeviceSeen(device.id))
        return device

    @property
    def state(self) -> SharedState:
        assert self.shared is not None  # set in __post_init__
        return self.shared

    async def online_devices(self) -> dict[int, set[str]]:
        """Devices with a live session on any replica (this one's, should Redis be away), and
        the replicas holding them."""
        try:
            return await self.state.presence.online_devices()
        except Exception as exc:
            logger.warning("presence unavailable (%s): this replica's devices only", exc)
            return {device_id: {self.replica_id} for device_id in self._devices_of.values()}

    async def live_sessions(self) -> int:
        try:
            return await self.state.presence.live_sessions()
        except Exception as exc:
            logger.warning("presence unavailable (%s): this replica's sessions only", exc)
            return len(self.sessions)

    # -- notices from every replica ---------------------------------------------------------

    async def start(self) -> None:
        """The shared state's background work, and the watch for revocations."""
        await self.state.start(self.on_notice)
        self._watch = asyncio.create_task(watch_revocations(self))

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.state.close()

    def device_ids(self) -> set[int]:
        """The devices with a session on this replica."""
        return set(self._devices_of.values())

    async def publish(self, kind: NoticeKind, device_id: int) -> None:
        """Tell every replica (this one too) that a device changed or was revoked."""
        await self.state.notices.publish(Notice(kind, device_id, self.replica_id))

    async def on_notice(self, notice: Notice) -> None:
        # What was remembered for an outage must not let a revoked (or re-paired) device in.
        for digest, device in list(self._known_tokens.items()):
            if device.id == notice.device_id:
                del self._known_tokens[digest]
        if notice.kind is NoticeKind.REVOKED:
            ended = 0
            for session, device_id in list(self._devices_of.items()):
                if device_id == notice.device_id:
                    self.endings.end(session, Ending.UNAUTHORIZED, "the device was revoked")
                    ended += 1
            if ended:
                logger.info("device %d revoked: ending its %d session(s)", notice.device_id, ended)

    async def pseudo_device(self, name: str) -> Device:
        """The server's own device ``name`` (made on first use): what a protocol without
        credentials (Wyoming) connects as. Raises UnavailableError while the database is away."""
        return await self._pseudo_device(name)

    async def character_for(self, device: Device, requested: str | None = None) -> CharacterChoice:
        """The character a session talks as: the one the client asked for, else the device's,
        else the configured default. Raises NotFoundError only for one the client asked for."""
        slug = requested or device.settings.character
        if slug is None:
            return CharacterChoice(self.settings.character, None)
        try:
            character = await self.store.characters.get(slug)
            character_id = await self.store.characters.id_of(slug)
        except NotFoundError:
            if requested:
                raise
            logger.warning("device %s has character %r, which is gone", device.name, slug)
            return CharacterChoice(self.settings.character, None)
        except UnavailableError as exc:  # the database is away: talk as the default character
            logger.warning("cannot read character %r (%s); using the default", slug, reason(exc))
            return CharacterChoice(self.settings.character, None)
        settings = self.settings.character.model_copy(
            update={
                "name": character.name,
                "system_prompt": character.system_prompt,
                "first_message": character.first_message,
                "voice": character.voice,
            }
        )
        return CharacterChoice(settings, character_id)

    # -- sessions ---------------------------------------------------------------------------

    async def open_session(
        self,
        device: Device,
        *,
        output_rate_hz: int,
        turn: TurnSettings | None = None,
        character: CharacterChoice | None = None,
        limit_key: str | None = None,
        detection: TurnDetection | None = None,
        listening: WakeListening | None = None,
    ) -> VoiceSession:
        """A new session for one connection. It continues the device's last conversation with
        the same character (its last turns), and is recorded as it goes. ``detection``: how the
        protocol has its turns end (None: the configured server VAD, the cascade's or the
        speech-to-speech engine's own). ``listening``: the session waits for a wake word first
        (check it with :meth:`wake_listening`); None: it hears everything."""
        turn = turn or self.settings.turn
        if character is None:
            character = await self.character_for(device)
        history = Conversation(turn.max_history_turns)
        conversation_id, resumed = new_conversation_id(), False
        earlier = None
        # Every device using the shared token is "shared-token": one device's conversation must
        # not reach another's prompt, so those sessions start fresh.
        if device.name != SHARED_TOKEN_DEVICE:
            earlier = await self._earlier(device, character, turn)
        if earlier is not None:
            conversation_id, resumed = earlier.conversation_id, True
            history.restore(exchanges_of(earlier.messages)[-turn.max_history_turns :])
        recorder = ConversationRecorder(
            self.store.writer,
            conversation_id,
            device.id,
            device.user_id,
            character.character_id,
            resumed=resumed,
            lazy=listening is not None,
        )
        key = limit_key or f"device:{device.id}"  # the shared token: per client (server.policy)
        session: VoiceSession
        realtime = self.settings.realtime
        if realtime is not None:  # speech to speech: the session is the provider's
            session = registry.factory("s2s", realtime.provider)(
                realtime,
                turn,
                character.settings,
                output_rate_hz=output_rate_hz,
                history=history,
                prices=self.settings.prices,
                turn_gate=lambda: self.state.turn_gate(key),
                observer=recorder,
                detection=detection,
            )
        else:
            session = TurnSession(
                self.engines,
                turn,
                character.settings,
                output_rate_hz=output_rate_hz,
                history=history,
                turn_gate=lambda: self.state.turn_gate(key),
                observer=recorder,
                detection=detection or self.server_vad(),
            )
        if listening is not None:
            wake = self.engines.wake_word
            assert wake is not None, "wake_listening() checked it"
            session = WakeGatedSession(session, wake, listening)
        self.sessions.add(session)
        self._recorders[session] = recorder
        self._devices_of[session] = device.id
        self._holders[session] = holder = secrets.token_hex(8)
        self.endings.open(session)
        await self.state.presence.arrive(device.id, holder)
        return session

    def wake_listening(
        self,
        device: Device,
        wake_word: str | None = None,
        character: CharacterSettings | None = None,
    ) -> WakeListening:
        """A session's ``wake_word`` listening as configured (``[listening]``): for ``wake_word``
        (the client's choice), else the device's (``listening.device_wake_words``), else the
        character's, else ``[wake_word].wake_word``. ConfigError, naming the installed words,
        when this server cannot listen for it."""
        engine = self.engines.wake_word
        if engine is None:
            raise ConfigError("this server has no wake-word engine (its VAD is the stand-in)")
        listening = self.settings.listening
        word = (
            wake_word
            or listening.device_wake_words.get(device.name)
            or (character.wake_word if character else None)
            or self.settings.wake_word.wake_word
        )
        engine.new_stream(word)  # raises for a word it does not have
        return WakeListening(
            word, listening.follow_up, listening.conversation_silence_s, listening.pre_roll_ms
        )

    def server_vad(self, silence_ms: int | None = None) -> ServerVAD:
        """The server ends turns after ``silence_ms`` (default ``turn.end_of_turn_silence_ms``)
        of silence, speech being what the VAD scores over ``vad.threshold``."""
        silence_ms = silence_ms or self.settings.turn.end_of_turn_silence_ms
        return ServerVAD(silence_ms, self.settings.vad.threshold)

    def client_commit(self) -> ClientCommit:
        """The client ends turns; the VAD (over ``vad.threshold``) only finds the speech."""
        return ClientCommit(self.settings.vad.threshold)

    async def _earlier(
        self, device: Device, character: CharacterChoice, turn: TurnSettings
    ) -> Resumed | None:
        """The device's last conversation with this character, if it can be had in time."""
        try:
            async with asyncio.timeout(HISTORY_TIMEOUT_S):
                # The device's previous session may have just ended: its last turns first (not
                # what others queue meanwhile; not at all while the database is away).
                writer = self.store.writer
                if writer.healthy:
                    await writer.wait_written(writer.last_ticket, HISTORY_TIMEOUT_S / 2)
                return await self.store.conversations.latest(
                    device.id, character.character_id, turn.max_history_turns
                )
        except (UnavailableError, TimeoutError) as exc:
            logger.warning("starting %s without its history: %s", device.name, reason(exc))
            return None

    async def turn_written(self, session: VoiceSession, turn_id: int) -> None:
        """Until the turn is in the database, so that a device told a turn is done can rely on
        it (a crash right after loses nothing it saw finish). Bounded: with the database away,
        the turn waits in the queue and the device is told anyway."""
        recorder = self._recorders.get(session)
        # With the database away, waiting would only hold back the device's next events.
        if recorder is not None and self.store.writer.healthy:
            await self.store.writer.wait_written(
                recorder.ticket(turn_id), self.settings.database.durable_wait_s
            )

    async def close_session(self, session: VoiceSession) -> None:
        self.sessions.discard(session)
        device_id = self._devices_of.pop(session, None)
        holder = self._holders.pop(session, None)
        self.endings.closed(session)
        if device_id is not None and holder is not None:
            await self.state.presence.leave(device_id, holder)
        await session.close()
        recorder = self._recorders.pop(session, None)
        if recorder is not None:
            recorder.close()

    def start_drain(self) -> None:
        """The admin's drain: as :meth:`drain`, then end the sessions still open (their devices
        reconnect, through the load balancer, to another replica); the process keeps running."""
        self.shutting_down.set()
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain_and_release())

    async def _drain_and_release(self) -> None:
        await self.drain(self.settings.server.shutdown_grace_s)
        for session in list(self.sessions):
            self.endings.end(session, Ending.SERVER_SHUTDOWN)

    async def drain(self, grace_s: float) -> None:
        """Shutdown: refuse new sessions, give replies in flight ``grace_s`` to finish, be
        written and reach their devices."""
        self.shutting_down.set()
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.gather(*(session.wait_idle() for session in list(self.sessions)))
                await self.store.writer.flush()
                # The transports' pumps still hold the last events (turn done, paced audio).
                while any(session.undelivered for session in self.sessions):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)  # the last one read is on its way out
        except TimeoutError:
            pass
