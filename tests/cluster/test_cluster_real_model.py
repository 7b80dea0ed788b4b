"""A spoken question through HAProxy to one of two replicas on the real embedded models (the
same Redis and PostgreSQL as in production: the models are each replica's own)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cluster_devices import Admin
from bench.cluster_harness import cluster
from bench.conversations import RATE_HZ, Utterance
from bench.device_clients import RelayDevice, TurnRecord
from bench.voicing import end_of_voice
from tests.postgres_server import PostgresServer, fresh_database
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import read_wav, resample
from voxgate.core.config import Settings
from voxgate.evaluation import normalize_words

pytestmark = [pytest.mark.cluster, pytest.mark.models]


async def test_a_spoken_question_through_the_balancer_is_answered(
    postgres_server: PostgresServer, redis_url: str, real_settings: Settings
) -> None:
    samples, rate = read_wav(SAMPLE_QUESTION)
    speech = np.asarray(resample(samples, rate, RATE_HZ), dtype=np.int16)
    end = end_of_voice(speech, RATE_HZ)
    assert end is not None
    question = Utterance("What is the capital of France?", speech, end)
    async with (
        fresh_database(postgres_server) as database_url,
        cluster(
            database_url,
            redis_url,
            {},
            replicas=2,
            models_dir=real_settings.models_dir,
            ready_timeout_s=600,
        ) as made,
    ):
        api = Admin(made.balancer, made.admin_token)
        try:
            _, token = await api.add_device("speaker")
        finally:
            await api.close()
        device = RelayDevice(made.balancer, token)
        await device.open()
        try:
            record = await device.turn(TurnRecord(1, question.text), question)
        finally:
            await device.close()
    assert not record.errors, record.errors
    assert {"capital", "france"} <= set(normalize_words(record.heard or "")), record.heard
    assert record.reply_text and record.reply_audio_s > 0.5
