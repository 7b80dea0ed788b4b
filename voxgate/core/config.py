"""Typed configuration, read once at start and passed down as objects.

Sources, strongest first: arguments given in code, environment variables (``VOXGATE_`` prefix,
``__`` between section and key, e.g. ``VOXGATE_LLM__PROVIDER=openai``), a TOML config file, defaults.
Each component receives only its own section.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from voxgate.core.engine_settings import (
    BreakerSettings,
    EngineSettings,
    LLMSection,
    LLMSettings,
    RealtimeSection,
    RealtimeSettings,
    RetrySettings,
    ServiceSettings,
    STTSection,
    STTSettings,
    TTSSection,
    TTSSettings,
    VADSection,
    VADSettings,
    WakeWordSection,
    WakeWordSettings,
    engine_settings,
)
from voxgate.core.errors import ConfigError
from voxgate.core.listening import FollowUp, ListeningMode

__all__ = [
    "BreakerSettings",
    "CharacterSettings",
    "DatabaseSettings",
    "EngineSettings",
    "LLMSettings",
    "ListeningSettings",
    "Price",
    "RealtimeSettings",
    "RetrySettings",
    "STTSettings",
    "ServerSettings",
    "ServiceSettings",
    "Settings",
    "TTSSettings",
    "TurnSettings",
    "VADSettings",
    "WakeWordSettings",
    "WyomingSettings",
    "load_settings",
]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voxgate"


class Price(BaseModel):
    """What a provider charges for one model, in US dollars; all zero for local engines."""

    per_audio_minute: float = Field(0.0, ge=0)
    """STT: per minute of audio transcribed. TTS: per minute synthesised."""
    per_million_tokens_in: float = Field(0.0, ge=0)
    per_million_tokens_out: float = Field(0.0, ge=0)
    per_million_characters: float = Field(0.0, ge=0)
    """TTS: per million characters of text."""


def default_prices() -> dict[str, Price]:
    """List prices of some cloud models (2025, pay as you go); check your provider's current ones
    and override them in ``[prices."provider/model"]``. Models not listed cost nothing."""
    return {
        "openai/gpt-4o-mini": Price(per_million_tokens_in=0.15, per_million_tokens_out=0.60),
        "openai/gpt-4.1-mini": Price(per_million_tokens_in=0.40, per_million_tokens_out=1.60),
        "openai/llama-3.1-8b-instant": Price(
            per_million_tokens_in=0.05, per_million_tokens_out=0.08
        ),
        "openai/whisper-1": Price(per_audio_minute=0.006),
        "openai/gpt-4o-mini-transcribe": Price(per_audio_minute=0.003),
        "openai/whisper-large-v3-turbo": Price(per_audio_minute=0.04 / 60),
        "openai/tts-1": Price(per_million_characters=15.0),
        "openai/gpt-4o-mini-tts": Price(per_audio_minute=0.015),
        "deepgram/nova-3": Price(per_audio_minute=0.0043),
        "deepgram/aura-2-thalia-en": Price(per_million_characters=30.0),
        # Realtime bills text and audio tokens apart: two keys.
        "openai-realtime/gpt-realtime": Price(
            per_million_tokens_in=4.0, per_million_tokens_out=16.0
        ),
        "openai-realtime/gpt-realtime:audio": Price(
            per_million_tokens_in=32.0, per_million_tokens_out=64.0
        ),
    }


class TurnSettings(BaseModel):
    end_of_turn_silence_ms: int = Field(500, ge=100)
    """Trailing silence after which the user's turn is over, when no end-of-turn model decides."""
    semantic_end_of_turn: bool = True
    """After ``end_of_turn_check_ms`` of silence an end-of-turn model decides from the audio
    whether the user has finished (server-side VAD only); off: every turn waits the fixed
    ``end_of_turn_silence_ms``."""
    end_of_turn_model: str = "smart-turn-v3.2"
    """A name from ``voxgate models`` or a path to a smart-turn v3 ONNX file."""
    end_of_turn_check_ms: int = Field(192, ge=32)
    """Silence after which the end-of-turn model is asked."""
    end_of_turn_threshold: float = Field(0.9, gt=0, lt=1)
    """The model's probability of "finished" from which the turn ends at once."""
    end_of_turn_fallback_ms: int = Field(500, ge=100)
    """When the model says "not finished": the silence that ends the turn anyway (never less
    than ``end_of_turn_silence_ms``)."""
    end_of_turn_min_speech_ms: int = Field(800, ge=0)
    """Utterances with less voiced speech than this are not given to the model (it calls most
    short fragments finished) and end after ``end_of_turn_silence_ms``."""
    speculative_start_ms: int | None = Field(64, ge=32)
    """Silence after which transcription and the reply start while still waiting for the end of the
    turn; discarded if the user goes on. ``None`` waits for the end of the turn."""
    min_speech_ms: int = Field(96, ge=32)
    """Speech shorter than this (a click, a cough) does not start a turn."""
    pre_roll_ms: int = Field(300, ge=0)
    """Audio kept from before the VAD fired, so the first syllable is not cut."""
    max_utterance_ms: int = Field(30_000, ge=1_000)
    """A monologue longer than this is cut into turns."""
    barge_in: bool = True
    barge_in_min_speech_ms: int = Field(200, ge=32)
    partial_transcripts: bool = False
    """Transcribe while the user is still talking (costs CPU the final transcript may wait for)."""
    partial_interval_ms: int = Field(1000, ge=200)
    max_history_turns: int = Field(20, ge=0)
    first_clause_min_words: int = Field(4, ge=1)
    """The first piece of a reply goes to TTS at a comma once it has this many words."""
    first_piece_max_words: int | None = Field(10, ge=3)
    """A first sentence longer than this goes to TTS in two parts (``None``: never cut)."""
    empty_reply_text: str = "Sorry, I don't have an answer to that."
    goodbye_text: str = "Goodbye!"
    """Said when the LLM ends the session without a word of its own."""


class CharacterSettings(BaseModel):
    name: str = "Vox"
    system_prompt: str = (
        "You are Vox, a friendly voice assistant. Your words are spoken aloud, so answer in one "
        "or two short, plain sentences, without lists, markdown or emojis."
    )
    first_message: str | None = None
    """Spoken as the greeting when the session starts."""
    greeting_prompt: str | None = None
    """Without ``first_message``: an instruction for the LLM to write the greeting."""
    voice: str | None = None
    """The TTS voice in the engine's own terms (see ``TextToSpeech.synthesize``); None: the
    ``[tts]`` voice."""
    wake_word: str | None = None
    """The wake word sessions with this character listen for in ``wake_word`` mode (an
    installed one: ``hey_jarvis``); None: ``[wake_word].wake_word``."""


class ListeningSettings(BaseModel):
    """``[listening]``: how sessions listen (voxgate.core.listening)."""

    mode: ListeningMode = ListeningMode.PUSH_TO_TALK
    """For relay sessions that do not choose: ``push_to_talk`` hears everything the device
    sends; ``wake_word`` nothing (no transcript, no row, no usage) until the wake word."""
    elato_mode: ListeningMode = ListeningMode.PUSH_TO_TALK
    """The same for ElatoAI devices (their firmware streams while a session is open)."""
    xiaozhi_mode: ListeningMode = ListeningMode.PUSH_TO_TALK
    """The same for xiaozhi-esp32 boards: ``wake_word`` for boards without a wake word of their
    own, streaming in auto or realtime mode (a board's own ``listen detect`` opens it too)."""
    device_wake_words: dict[str, str] = Field(default_factory=dict)
    """Per device (by name, as ``voxgate devices list`` shows it): the wake word it listens for,
    over its character's (``character.wake_word``) and ``[wake_word].wake_word``; a relay
    client's own ``listening.wake_word`` wins over all."""
    follow_up: FollowUp = FollowUp.CONVERSATION
    """After the wake word: one ``turn``, or a ``conversation`` until silence."""
    conversation_silence_s: float = Field(8.0, gt=0)
    """A conversation waits for the wake word again after this long without speech or reply."""
    pre_roll_ms: int = Field(300, ge=0, le=2000)
    """Audio from just before the word fired that the conversation hears too."""


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    """How devices reach this server (printed at start, used in docs); default from host:port."""
    elato_paths: list[str] = Field(default_factory=lambda: ["/ws/esp32", "/"])
    """WebSocket routes for ElatoAI firmware (its default config connects to ``/``)."""
    jwt_secret: SecretStr | None = None
    """HS256 key for ElatoAI device tokens; without it Elato devices cannot connect."""
    auto_register_devices: bool = False
    """Issue Elato tokens to unknown MAC addresses too (development only)."""
    elato_pairing_window_s: float = Field(600.0, gt=0)
    """An ElatoAI device added (or paired again) may fetch its token for this long, and only
    until it first connects with it."""
    elato_token_ttl_s: float | None = Field(None, gt=0)
    """ElatoAI tokens expire after this long (None: never; the unmodified firmware cannot fetch
    a new one, so leave it unset for it). Clients renew by sending their token to the endpoint."""
    token_requests_per_minute: int = Field(10, ge=1)
    """``/api/generate_auth_token`` requests per client address."""
    admin_token: SecretStr | None = None
    """For the web pages and the admin API; generated into the data directory when not given."""
    shared_token: SecretStr | None = None
    """A token every device may use (the voice-assistant-proxy firmware ships one); off by default."""
    lock_prompts: bool = False
    """Refuse every relay ``session.start`` that replaces a character's system prompt."""
    locked_characters: list[str] = Field(default_factory=lambda: ["toy"])
    """Characters whose system prompt a relay client may not replace (the children's ``toy``)."""
    max_sessions_per_device: int = Field(8, ge=1)
    """Sessions one device (on the shared token: one client address) may hold open at once."""
    relay_idle_timeout_s: float = Field(120.0, gt=0)
    """A relay session whose client sends nothing for this long is closed (4408)."""
    metrics_token: SecretStr | None = None
    """When set, ``/metrics`` wants ``Authorization: Bearer`` this token (or the admin token);
    ``/healthz`` shows error texts only to those tokens either way."""
    max_connections: int = Field(1000, ge=1)
    """Open HTTP and WebSocket connections at most; more are closed at once (each holds a file
    descriptor: keep this well under ``ulimit -n``, see docs/security.md)."""
    header_timeout_s: float = Field(10.0, gt=0)
    """A connection that has not sent a request's headers within this long is closed (slowloris,
    silent sockets)."""
    keep_alive_timeout_s: int = Field(5, ge=1)
    """An idle keep-alive HTTP connection is closed after this long."""
    max_message_bytes: int = Field(1 << 20, ge=1024)
    """Largest WebSocket message or HTTP body accepted; larger ones close the session (1009)."""
    connections_per_minute: int = Field(30, ge=1)
    turns_per_minute: int = Field(20, ge=1)
    prebuffer_ms: int = Field(400, ge=0)
    """Reply audio is sent this far ahead of real time, no further: barge-in takes effect fast."""
    send_timeout_s: float = Field(10.0, gt=0)
    """A client that reads nothing for this long is disconnected (its memory is not held)."""
    shutdown_grace_s: float = Field(10.0, ge=0)
    """On shutdown, replies in flight get this long to finish."""
    proxy_silence_timeout_s: float = Field(20.0, gt=0)
    """voice-assistant-proxy ``/ws``: close after this long without speech, as the original did."""
    revocation_check_s: float = Field(5.0, gt=0)
    """Devices with a live session are checked this often for a revocation made behind the
    server's back (``voxgate devices revoke``): their sessions end. (The admin API's revoke ends
    them at once, on every replica.)"""
    replica_id: str | None = None
    """This replica's name among several (presence, logs); default: host name and process id."""
    elato_end_of_turn_silence_ms: int = Field(1000, ge=100)
    """ElatoAI servers wait ~1 s of silence; the device has no barge-in and no VAD of its own.
    With the end-of-turn model this is the floor of its fallback: the model may still end a turn
    sooner."""


class WyomingSettings(BaseModel):
    """Home Assistant's Wyoming protocol on TCP ports of its own (docs/protocols/wyoming.md).

    Wyoming has no authentication: every connection is the device ``device`` (made on first
    use), billed and rate-limited as that device. So it listens on loopback by default, and takes
    only clients in ``allowed_networks``: open it to a LAN with both ``host`` and the network."""

    enabled: bool = False
    """Also ``voxgate serve --wyoming``."""
    host: str = "127.0.0.1"
    port: int = Field(10300, ge=0, le=65535)
    """Speech to text and text to speech (and wake words) on one port: Home Assistant makes an
    STT and a TTS entity from the one service. 10300 is Wyoming's STT convention."""
    tts_port: int | None = Field(None, ge=0, le=65535)
    """Also text to speech alone here (10200 by convention), for set-ups that keep them apart."""
    allowed_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    """Client addresses taken (CIDR); others get an ``error`` event and are disconnected."""
    device: str = Field("home-assistant", min_length=1, max_length=100)
    """The device every Wyoming client is, for usage, limits and the admin page."""
    requests_per_minute: int = Field(60, ge=1)
    """Transcriptions and syntheses per minute (a house's announcements come in bursts)."""
    max_connections: int = Field(16, ge=1)
    """Connections open at once; more get an ``error`` event and are closed."""
    idle_timeout_s: float = Field(60.0, gt=0)
    """A connection that sends nothing for this long (with nothing in progress) is closed."""
    max_audio_s: float = Field(120.0, gt=0)
    """Audio in one transcription at most."""
    max_text_chars: int = Field(10_000, ge=1)
    """Text in one synthesis at most."""
    max_payload_bytes: int = Field(1 << 20, ge=1024)
    """One event's binary payload at most (its header is refused before anything is read)."""
    languages: list[str] = Field(default_factory=lambda: ["en"])
    """What ``info`` says the STT models and TTS voices speak (the embedded ones: English)."""

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            ipaddress.ip_network(network, strict=False)  # a ValueError names the bad one
        return networks


class DatabaseSettings(BaseModel):
    url: str | None = None
    """``postgresql://user:password@host/db`` or ``sqlite:///path``; default: ``voxgate.db`` in
    the data directory (SQLite). Also ``$VOXGATE_DATABASE_URL``."""
    auto_migrate: bool = True
    """Bring the schema up to date at start (off: ``voxgate db upgrade`` does it, and the server
    refuses an old schema)."""
    connect_timeout_s: float = Field(10.0, gt=0)
    durable_wait_s: float = Field(1.0, ge=0)
    """``turn.done`` (and its equivalents) wait this long at most for the turn to be written;
    the reply's audio never waits."""
    write_queue_size: int = Field(100_000, ge=100)
    """Records held while the database is away; beyond that they are dropped (and counted)."""
    error_repeat_window_s: float = Field(600.0, ge=0)
    """The same error from the same device within this long of its last time adds to that row's
    count instead of a row of its own."""
    errors_retention_days: float | None = Field(30.0, gt=0)
    """Errors are deleted this long after they last happened (None: kept for ever)."""
    conversations_retention_days: float | None = Field(None, gt=0)
    """Conversations (and their messages) are deleted this long after they ended (None: kept)."""
    usage_retention_days: float | None = Field(None, gt=0)
    """Usage records (the cost reports) are deleted this long after (None: kept)."""
    prune_interval_s: float = Field(3600.0, gt=0)
    """The server deletes what is past its retention at start and then this often."""
    pool_size: int = Field(10, ge=1)
    """PostgreSQL: connections each process keeps open (SQLite: unused)."""
    max_overflow: int = Field(10, ge=0)
    """PostgreSQL: connections opened beyond ``pool_size`` at busy times, closed after. A
    replica may hold ``pool_size + max_overflow``: keep the sum over all replicas (and the
    CLI) under the server's ``max_connections``."""


class RedisSettings(BaseModel):
    """Shared state for several replicas (rate limits, session caps, presence, revocations, the
    proxy's chunked sessions). Without ``url`` one process keeps all of it in memory."""

    url: str | None = None
    """``redis://host:6379/0`` (``rediss://`` for TLS); also ``$VOXGATE_REDIS__URL``."""
    key_prefix: str = "voxgate"
    """Every key and channel starts with this (several deployments on one Redis)."""
    heartbeat_s: float = Field(2.0, gt=0)
    """How often a replica renews what it holds (presence, session claims)."""
    presence_ttl_s: float = Field(10.0, gt=0)
    """What a replica holds expires this long after its last heartbeat: a replica that died
    (kill -9) stops counting as holding its devices' sessions after this long."""
    chunk_session_ttl_s: float = Field(300.0, gt=0)
    """The proxy's chunked HTTP sessions expire this long after their last chunk."""
    timeout_s: float = Field(2.0, gt=0)
    """A Redis command that takes longer fails; admission then goes on without the shared count
    (logged), rather than refusing every device while Redis is away."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOXGATE_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    """Where prepared models (``models/``) and other state live."""
    model_cache: Path | None = None
    """Where prepared models live instead of ``data_dir/models`` (``VOXGATE_MODEL_CACHE``): a
    container image keeps them in a layer of its own while ``data_dir`` is a volume."""
    log_level: str = "INFO"
    # Each engine section is its provider's own settings class (voxgate/providers/*.py), chosen
    # by ``provider``; leaving it out picks the embedded default engine.
    vad: VADSection = Field(default_factory=lambda: engine_settings("vad"))
    stt: STTSection = Field(default_factory=lambda: engine_settings("stt"))
    llm: LLMSection = Field(default_factory=lambda: engine_settings("llm"))
    tts: TTSSection = Field(default_factory=lambda: engine_settings("tts"))
    wake_word: WakeWordSection = Field(default_factory=lambda: engine_settings("wake"))
    """The engine sessions in ``wake_word`` listening mode listen with (see ``[listening]``)."""
    turn: TurnSettings = Field(default_factory=TurnSettings)
    listening: ListeningSettings = Field(default_factory=ListeningSettings)
    character: CharacterSettings = Field(default_factory=CharacterSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    wyoming: WyomingSettings = Field(default_factory=WyomingSettings)
    realtime: RealtimeSection | None = None
    """Speech-to-speech instead of the cascade: every session of every protocol talks to one
    upstream Realtime connection of its own (``VOXGATE_REALTIME__API_KEY``...)."""
    database_url: str | None = None
    """Shorthand for ``database.url`` (``VOXGATE_DATABASE_URL``); wins over it when set."""
    prices: dict[str, Price] = Field(default_factory=default_prices)
    """Keyed ``"provider/model"`` (TTS: ``"provider/model"`` or ``"provider/voice"``); merged over
    the defaults, so a config lists only what it changes."""

    @model_validator(mode="after")
    def _database_url_shorthand(self) -> Settings:
        if self.database_url is not None:  # the environment's shorthand beats the file
            self.database = self.database.model_copy(update={"url": self.database_url})
        return self

    @field_validator("prices", mode="after")
    @classmethod
    def _over_default_prices(cls, prices: dict[str, Price]) -> dict[str, Price]:
        return {**default_prices(), **prices}

    @property
    def models_dir(self) -> Path:
        return self.model_cache or self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file comes from model_config, set by load_settings on a subclass.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the configuration once: ``config_file`` (TOML) if given, else ``$VOXGATE_CONFIG``.

    A setting that is wrong is a :class:`ConfigError` naming each key (``stt.compute_type``) and
    what to change."""
    if config_file is None and os.environ.get("VOXGATE_CONFIG"):
        config_file = Path(os.environ["VOXGATE_CONFIG"])
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    try:
        if config_file is None:
            return Settings(**overrides)

        class FileSettings(Settings):
            model_config = SettingsConfigDict(toml_file=config_file)

        return FileSettings(**overrides)
    except ValidationError as exc:
        source = f"config file {config_file}" if config_file else "configuration"
        raise ConfigError(f"{source}: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """Each problem as ``section.key: what is wrong``, one a line."""
    return "\n".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors()
    )
