"""Prometheus metrics, one registry per app (so tests can run several apps in one process)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from voxgate.core.events import ErrorEvent, TurnDone

_LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Gauge(
            "voxgate_sessions_open", "Sessions open now", ["protocol"], registry=self.registry
        )
        self.sessions_total = Counter(
            "voxgate_sessions", "Sessions opened", ["protocol"], registry=self.registry
        )
        self.turns = Counter(
            "voxgate_turns", "Turns completed", ["protocol"], registry=self.registry
        )
        self.stage_seconds = Histogram(
            "voxgate_stage_seconds",
            "Per-stage latency of completed turns",
            ["stage"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.errors = Counter(
            "voxgate_errors", "Errors by code", ["protocol", "code"], registry=self.registry
        )
        self.wake_words = Counter(
            "voxgate_wake_words",
            "Wake words heard by hands-free sessions",
            ["protocol", "wake_word"],
            registry=self.registry,
        )
        self.frame_seconds = Histogram(
            "voxgate_frame_handle_seconds",
            "Time to take in one uplink audio frame (decode, resample, VAD)",
            ["protocol"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
            registry=self.registry,
        )
        self.loop_lateness_seconds = Histogram(
            "voxgate_event_loop_lateness_seconds",
            "How late a 50 ms timer fires on the event loop every session shares",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.wyoming_seconds = Histogram(
            "voxgate_wyoming_request_seconds",
            "Wyoming requests at the server: transcribe (audio-stop to transcript), "
            "synthesize_first_audio (request to first audio)",
            ["kind"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "voxgate_bytes_in", "Bytes received from devices", ["protocol"], registry=self.registry
        )
        self.bytes_out = Counter(
            "voxgate_bytes_out", "Bytes sent to devices", ["protocol"], registry=self.registry
        )
        self.cost_usd = Counter(
            "voxgate_cost_usd", "Cost of completed turns (price table)", registry=self.registry
        )
        self.db_pending = Gauge(
            "voxgate_db_writes_pending", "Records waiting to be written", registry=self.registry
        )
        self.db_healthy = Gauge(
            "voxgate_db_healthy", "1 while the database takes writes", registry=self.registry
        )
        self.db_dropped = Gauge(
            "voxgate_db_records_dropped", "Records dropped (queue full)", registry=self.registry
        )

    def observe_turn(self, protocol: str, done: TurnDone) -> None:
        self.turns.labels(protocol).inc()
        self.cost_usd.inc(done.cost_usd)
        for stage, value in (
            ("end_of_turn_wait", done.timings.end_of_turn_wait_ms),
            ("stt", done.timings.stt_ms),
            ("llm_first_token", done.timings.llm_first_token_ms),
            ("tts_first_audio", done.timings.tts_first_audio_ms),
            ("speech_end_to_first_audio", done.timings.speech_end_to_first_audio_ms),
        ):
            if value is not None:
                self.stage_seconds.labels(stage).observe(value / 1000.0)

    def observe_error(self, protocol: str, error: ErrorEvent) -> None:
        self.errors.labels(protocol, error.code).inc()

    def observe_writer(self, *, pending: int, healthy: bool, dropped: int) -> None:
        self.db_pending.set(pending)
        self.db_healthy.set(1 if healthy else 0)
        self.db_dropped.set(dropped)

    async def watch_event_loop(self, interval_s: float = 0.05) -> None:
        """Until cancelled: how late a timer fires is how long every socket waited for the loop
        (a blocking call, or more work than one core does)."""
        while True:
            due = time.perf_counter() + interval_s
            await asyncio.sleep(interval_s)
            self.loop_lateness_seconds.observe(max(0.0, time.perf_counter() - due))

    def render(self) -> bytes:
        return generate_latest(self.registry)
